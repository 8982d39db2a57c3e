"""Lifecycle benchmarks on a real runtimed 2.9.0 (run them through .ci/real_daemon.sh, or with
`RUNTIMED_REAL_SOCKET` pointing at a daemon started by tools/real-runtimed/start.sh):

    .ci/real_daemon.sh python bench/bench_lifecycle.py survival [--minutes 10]
    .ci/real_daemon.sh python bench/bench_lifecycle.py join [--cells 1000] [--sliders 300] [--runs 10]

1. survival: attach to a quiet room with one IntSlider and leave it alone for `--minutes`
   (runtimed drops a peer that sends no Request/Presence/PutBlob frame for 300 s). Counts the
   disconnects and reconnects, the keep-alive frames sent; at the end the kernel sets the slider
   and the time until the inspector's snapshot shows the new value is measured. Targets: 0
   disconnects, the change shown within 1 s.
2. join: a file-backed room of `--cells` cells whose one code cell makes `--sliders` IntSliders
   (3 comms each: 900 by default). `--runs` fresh attaches, each waiting for the complete room
   (`wait_settled`); complete means every comm with its state and the kernel's status. The
   time to complete is set against the time the daemon's own `sync_status` said ready
   (interactive/ready) on the same connection, as a ratio. Targets: 10 of 10 complete, ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "real_daemon"))

from conftest import RoomDriver  # noqa: E402

from inspector import events as ev  # noqa: E402
from inspector.session import LIVE, PeerSession, SessionConfig  # noqa: E402


def _socket() -> str:
    sock = os.environ.get("RUNTIMED_REAL_SOCKET") or os.environ.get("RUNTIMED_SOCKET_PATH")
    if not sock:
        sys.exit("set RUNTIMED_REAL_SOCKET (run through .ci/real_daemon.sh)")
    return sock


def _slider_value(snap) -> int | None:
    for c in snap.comms:
        if c.state.get("_model_name") == "IntSliderModel":
            return c.state.get("value")
    return None


async def survival(minutes: float) -> dict:
    sock = _socket()
    drv = RoomDriver(sock)
    try:
        nb = drv.call(op="create")["notebook_id"]
        res = drv.call(op="run", source="import ipywidgets as w\ns = w.IntSlider(value=1)\ndisplay(s)")
        assert res["success"], res
        s = PeerSession(SessionConfig(sock, nb))
        task = asyncio.create_task(s.run_forever())
        try:
            await s.wait_settled(0.3, 60)
            assert _slider_value(s.snapshot()) == 1
            t0 = time.monotonic()
            await asyncio.sleep(minutes * 60)  # a quiet room: nothing to wait on but time
            states = [e.data.get("state") for e in s.log.events() if e.kind == ev.CONNECTION]
            quiet_s = time.monotonic() - t0
            connections, still_live = s.connections, s.state == LIVE
            t_set = time.monotonic()
            changed = asyncio.create_task(s.wait_for(lambda snap: _slider_value(snap) == 7, 30))
            await drv.acall(op="run", source="s.value = 7")
            await changed
            shown_s = time.monotonic() - t_set
        finally:
            await s.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return {"bench": "survival", "quiet_s": round(quiet_s, 1), "connections": connections,
                "disconnects": states.count("disconnected") + states.count("error"),
                "live_at_end": still_live, "keepalives_sent": s.keepalives_sent,
                "keepalive_interval_s": s.config.keepalive_s,
                "change_shown_within_s": round(shown_s, 3),
                "note": "includes the kernel executing `s.value = 7` through the daemon"}
    finally:
        drv.close()


def _notebook(path: Path, cells: int, sliders: int) -> None:
    nb_cells = [{"cell_type": "markdown", "id": f"md{i}", "metadata": {}, "source": f"cell {i}"}
                for i in range(cells - 1)]
    nb_cells.append({"cell_type": "code", "id": "widgets", "metadata": {}, "execution_count": None,
                     "outputs": [], "source": f"import ipywidgets as w\nss = [w.IntSlider(value=i) "
                                              f"for i in range({sliders})]\nlen(ss)"})
    path.write_text(json.dumps({"cells": nb_cells, "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}, "nbformat": 4,
        "nbformat_minor": 5}))


async def join(cells: int, sliders: int, runs: int) -> dict:
    sock = _socket()
    drv = RoomDriver(sock)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "big.ipynb"
            _notebook(path, cells, sliders)
            nb = drv.call(op="open", path=str(path))["notebook_id"]
            res = drv.call(op="run", cell_id="widgets", timeout=300)
            assert res["success"], res
            want = 3 * sliders
            results = []
            for _ in range(runs):
                s = PeerSession(SessionConfig(sock, nb))
                t0 = time.monotonic()
                async with s.running():
                    ok, err = True, ""
                    try:
                        await s.wait_settled(0.0, 30)
                    except Exception as exc:  # a run that is not complete is counted, not fatal
                        ok, err = False, str(exc)
                    t_done = time.monotonic()
                    snap = s.snapshot()
                    ready = next((e.t for e in s.log.events() if e.kind == ev.CONTROL
                                  and e.data.get("message", {}).get("runtime_state") == "ready"), None)
                live = next((e.t for e in s.log.events() if e.kind == ev.CONNECTION
                             and e.data.get("state") == LIVE), None)
                last_doc = max((e.t for e in s.log.events() if e.kind == ev.DOC_CHANGED and live is not None
                                and e.t <= live), default=None)
                complete = (ok and len(snap.comms) >= want and all(c.state for c in snap.comms)
                            and snap.kernel.status is not None and len(snap.cells) == cells)
                results.append({"complete": complete, "comms": len(snap.comms), "kernel": snap.kernel.status,
                                "complete_s": round(t_done - t0, 3),
                                "daemon_ready_s": round(ready - t0, 3) if ready else None,
                                "live_s": round(live - t0, 3) if live else None,
                                "last_doc_change_s": round(last_doc - t0, 3) if last_doc else None, "error": err})
            ratios = [r["complete_s"] / r["daemon_ready_s"] for r in results if r["daemon_ready_s"]]
            return {"bench": "join", "cells": cells, "comms_expected": want, "runs": runs,
                    "complete_runs": sum(r["complete"] for r in results),
                    "ratio_max": round(max(ratios), 3) if ratios else None,
                    "ratio_median": round(sorted(ratios)[len(ratios) // 2], 3) if ratios else None,
                    "per_run": results}
    finally:
        drv.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="which", required=True)
    sv = sub.add_parser("survival")
    sv.add_argument("--minutes", type=float, default=10.0)
    jn = sub.add_parser("join")
    jn.add_argument("--cells", type=int, default=1000)
    jn.add_argument("--sliders", type=int, default=300)
    jn.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    out = asyncio.run(survival(a.minutes) if a.which == "survival" else join(a.cells, a.sliders, a.runs))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
