"""Verdict benchmark on the real runtimed 2.9.0: a widget zoo, then real divergences.

    RTD_PREFIX=… tools/real-runtimed/start.sh build/rtd && . build/rtd/daemon.env
    python bench/bench_verdicts.py --socket "$RUNTIMED_SOCKET_PATH" [--big 300,1000] [--divergences 20]
    tools/real-runtimed/stop.sh build/rtd

One read-only session with `--kernel-connection auto` watches a fresh room while the kernel runs
the zoo: more than 30 widget kinds from ipywidgets and an anywidget, nested boxes, links,
`interact`, Output capture, closes, and N widgets made in one cell for each N of `--big`. Every
finding that would fail `check` is a false finding (the zoo is ordinary code). Then `send_comm`
moves the kernel on K sliders while the CommsDoc keeps the old value (a real divergence each);
for each, the time from the views settling (the last of the echo and kernel views moving) to
the divergence being reported. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "real_daemon")]

from conftest import RoomDriver  # noqa: E402 - the real-daemon tests' room driver

from inspector import check  # noqa: E402
from inspector import events as ev  # noqa: E402
from inspector.divergence import DivergenceOptions  # noqa: E402
from inspector.session import PeerSession, SessionConfig  # noqa: E402

KINDS = ("IntSlider FloatSlider FloatLogSlider IntRangeSlider FloatRangeSlider IntProgress FloatProgress "
         "BoundedIntText BoundedFloatText IntText FloatText ToggleButton Checkbox Valid Dropdown RadioButtons "
         "Select SelectMultiple SelectionSlider SelectionRangeSlider ToggleButtons Text Textarea Combobox "
         "Password Label HTML HTMLMath Image Button ColorPicker DatePicker TimePicker TagsInput Play").split()

ZOO = [
    "import ipywidgets as w\nimport anywidget, traitlets\n"
    "opts = dict(Dropdown=dict(options=['a','b']), RadioButtons=dict(options=['a','b']), Select=dict(options=['a','b']),"
    " SelectMultiple=dict(options=['a','b']), SelectionSlider=dict(options=['a','b']),"
    " SelectionRangeSlider=dict(options=['a','b','c'], index=(0, 1)), ToggleButtons=dict(options=['a','b']),"
    " Image=dict(value=b'\\x89PNG\\r\\n'))\n"
    f"zoo = [getattr(w, k)(**opts.get(k, {{}})) for k in {list(KINDS)!r} if hasattr(w, k)]\n"
    "display(w.VBox(zoo))\nlen(zoo)",
    # an anywidget
    "class Counter(anywidget.AnyWidget):\n    _esm = 'export default { render({ model, el }) { el.textContent = model.get(\"n\"); } }'\n"
    "    n = traitlets.Int(0).tag(sync=True)\nc = Counter(n=2)\ndisplay(c)\nc.n = 5",
    # nested boxes, filled after display
    "outer = w.VBox()\ndisplay(outer)\n"
    "outer.children = [w.HBox([w.Accordion([w.Tab([w.IntSlider()])]), w.GridBox([w.Text(), w.Checkbox()])])]",
    # links
    "a, b = w.IntSlider(), w.IntText()\nl1 = w.jslink((a, 'value'), (b, 'value'))\nl2 = w.link((a, 'max'), (b, 'value'))\n"
    "display(a, b)\na.value = 7",
    # interact
    "from ipywidgets import interact\ninteract(lambda x=1, y='s', z=True: (x, y, z), x=(0, 9))",
    # Output capture and clear
    "o = w.Output()\ndisplay(o)\nwith o:\n    print('x')\n    display(w.Button(description='in'))\no.clear_output()\n"
    "with o:\n    print('y')",
    # closes: a closed child still listed, a closed standalone widget
    "s = w.IntSlider()\nbx = w.HBox([s, w.Label('l')])\ndisplay(bx)\ns.close()\nt = w.Text()\ndisplay(t)\nt.close()",
]


def _big(n: int) -> str:
    return f"big{n} = [w.IntSlider(value=i % 100) for i in range({n})]\ndisplay(w.VBox(big{n}[:5]))"


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", required=True)
    ap.add_argument("--big", default="300,1000", help="sizes of the N-widgets-in-one-cell runs")
    ap.add_argument("--divergences", type=int, default=20)
    ap.add_argument("--settle-s", type=float, default=25.0, help="quiet wait after each zoo cell")
    args = ap.parse_args()

    drv = RoomDriver(args.socket)
    out: dict[str, Any] = {"daemon": "runtimed 2.9.0", "widget_kinds": len(KINDS) + 1}
    try:
        nb = drv.call(op="create")["notebook_id"]
        assert drv.call(op="run", source="import ipywidgets\n1")["success"]
        s = PeerSession(SessionConfig(args.socket, nb, keep_frame_bodies=False,
                                      divergence=DivergenceOptions(kernel_connection="auto")))
        reported: dict[tuple[str, str], Any] = {}
        became: dict[tuple[str, str], float] = {}

        def on_event(e: ev.Event) -> None:
            if e.kind != ev.DIVERGENCE:
                return
            for raw in e.data.get("divergences", ()):
                if raw.get("status") != "pending":
                    key = (raw["comm_id"], raw["kind"])
                    reported[key] = check._div(raw)
                    became.setdefault(key, e.t)

        s.log.subscribe(on_event)
        async with s.running():
            await s.wait_settled(0.3, 30)
            t_end = time.monotonic() + 15
            while time.monotonic() < t_end and not (s.divergence.tap is not None and s.divergence.tap.state == "live"):
                await asyncio.sleep(0.05)
            out["kernel_tap"] = s.divergence.tap.state if s.divergence.tap is not None else None

            async def quiet(seconds: float, limit: float) -> None:
                end = time.monotonic() + limit
                while time.monotonic() < end:
                    last = max(s.last_frame_in or 0.0, s.last_broadcast or 0.0)
                    if last and time.monotonic() - last >= seconds:
                        return
                    await asyncio.sleep(0.1)

            cells = [*ZOO, *(_big(int(n)) for n in args.big.split(",") if n)]
            timings = []
            for code in cells:
                t0 = time.monotonic()
                res = await drv.acall(op="run", source=code, timeout=600)
                assert res["success"], res
                await quiet(3.0, args.settle_s if "big" not in code else 600)
                timings.append(round(time.monotonic() - t0, 1))
            # let every pending finding settle
            end = time.monotonic() + 25
            while time.monotonic() < end and any(d.status == "pending" for d in s.divergence.divergences()):
                await asyncio.sleep(0.2)
            out["zoo_cells_s"] = timings
            out["comms"] = len(s.snapshot().comms)
            false = [d for d in reported.values() if check._fails(d, strict=False)]
            out["false_findings"] = len(false)
            out["false_examples"] = [check.summary_line(d) for d in false[:5]]
            # still there after the views settled: the daemon's views really disagree (not a
            # transient the engine reported too early)
            now = {(d.comm_id, d.kind) for d in s.divergence.divergences(include_pending=False)}
            out["false_still_present_at_end"] = [check.summary_line(d) for d in false if (d.comm_id, d.kind) in now]
            out["warnings"] = sorted({d.kind for d in reported.values() if not check._fails(d, strict=False)})

            # real divergences: the kernel moves, the CommsDoc keeps the old value
            views = s.divergence.views
            sliders = [c.comm_id for c in s.snapshot().comms if c.model_name == "IntSliderModel"
                       and isinstance(c.state, dict) and c.state.get("value") not in (None, 42)][: args.divergences]
            lat: list[float] = []
            for cid in sliders:
                key = (cid, "state_mismatch")
                await drv.acall(op="send_comm", comm_id=cid, state={"value": 42})
                end = time.monotonic() + 10
                while time.monotonic() < end and key not in became:
                    await asyncio.sleep(0.01)
                if key not in became:
                    continue
                moved = [src.comms[cid].key_times.get("value", 0.0) for src in (views.echo, views.kernel)
                         if cid in src.comms and "value" in (src.comms[cid].known or ())]
                if moved:
                    lat.append(became[key] - max(moved))
            out["divergences_injected"] = len(sliders)
            out["divergences_reported"] = len(lat)
            if lat:
                lat.sort()
                out["report_after_settle_ms"] = {
                    "p50": round(statistics.median(lat) * 1000, 1),
                    "p95": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))] * 1000, 1),
                    "max": round(lat[-1] * 1000, 1)}
    finally:
        drv.close()
    print(json.dumps(out, indent=1))
    return 0 if out.get("false_findings") == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
