"""Update storm against the desktop window: 60 updates/s on a 1,000-cell / 200-comm notebook.

Drives the real window (offscreen Qt, asyncio on the Qt loop via qasync) through the same
controller path a live session uses: every update changes one slider's value in a new
snapshot, is logged as a frame and a broadcast in the EventLog, and notifies the
controller, which coalesces refreshes. Measures

* the longest event-loop stall: lateness of a 5 ms repeating timer, over the storm;
* the time from the last update until the tree shows its value.

Targets: stall < 50 ms, final value visible < 200 ms after the last update. Exit status 1
when a target is missed.

    python bench/bench_ui_storm.py [--seconds 5] [--rate 60] [--cells 1000] [--comms 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import qasync  # noqa: E402
from PySide6.QtCore import QElapsedTimer, QTimer  # noqa: E402

from inspector import events as ev  # noqa: E402
from inspector.ui import sample_snapshots as ss  # noqa: E402
from inspector.ui.app import make_app  # noqa: E402
from inspector.ui.main_window import InspectorWindow  # noqa: E402
from inspector.ui.recent import RecentConnections  # noqa: E402


class StormSource:
    """Stands in for PeerSession's interface (snapshot, listeners, log, state) with synthetic data."""

    def __init__(self, cells: int, comms: int) -> None:
        self.log = ev.EventLog()
        self.state = "live"
        self.retry_at = None
        self.error = None
        self.resolver = None
        self._listeners: list = []
        self._snap = ss.make_snapshot(n_cells=cells, n_comms=comms)
        self.snapshots_taken = 0

    def add_listener(self, fn):  # noqa: ANN001, ANN201
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn)

    def snapshot(self):  # noqa: ANN201
        self.snapshots_taken += 1
        return self._snap

    def update(self, comm: int, value: int) -> None:
        self._snap = ss.set_comm_value(self._snap, comm, value)
        cid = self._snap.comms[comm].comm_id
        body = b'{"event":"comm","msg_type":"comm_msg","content":{"comm_id":"%s","data":{"method":"update",' \
               b'"state":{"value":%d}}}}' % (cid.encode(), value)
        rec = self.log.frame("in", 0x03, "broadcast", len(body) + 1, body)
        self.log.emit(ev.FRAME, f"in broadcast {len(body) + 1} B", {"direction": "in", "frame_type": 3,
                                                                      "size": len(body) + 1, "frame_seq": rec.seq})
        self.log.emit(ev.BROADCAST, f"comm comm_msg update {cid} value={value}", {"event": "comm"},
                      target=f"comms/{cid}")
        for fn in list(self._listeners):
            fn({f"comms/{cid}"})

    async def run_forever(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        pass


async def storm(window: InspectorWindow, args: argparse.Namespace) -> dict:
    src = StormSource(args.cells, args.comms)
    window.stack.setCurrentWidget(window.main_split)
    window.timeline.attach(src.log)
    window.controller.start(src)
    await asyncio.sleep(0.5)
    target = 0  # the IntSlider comm
    cid = src._snap.comms[target].comm_id
    window.tree.expand(window.proxy.mapFromSource(window.model.index_for_path(f"comms/{cid}")))
    window.select_path(f"comms/{cid}/state/value")
    # also keep some cells expanded and the view scrolled, as a user would
    window.tree.expandToDepth(0)

    lateness: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]
    period_ms = 5

    def tick() -> None:
        now = clock.nsecsElapsed()
        lateness.append(max(0.0, (now - last[0]) / 1e6 - period_ms))
        last[0] = now

    probe = QTimer()
    probe.setInterval(period_ms)
    probe.timeout.connect(tick)
    probe.start()

    n = int(args.seconds * args.rate)
    start = time.perf_counter()
    value = 0
    for i in range(n):
        due = start + i / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        value = 1000 + i
        # mostly the slider being dragged, now and then another comm
        src.update(target if i % 4 else (i // 4) % args.comms, value if i % 4 else i)
    value = 1000 + n - 1
    if (n - 1) % 4 == 0:
        src.update(target, value)
    t_last = time.perf_counter()
    path = f"comms/{cid}/state/value"

    def shown() -> bool:
        idx = window.model.index_for_path(path)
        return idx.siblingAtColumn(1).data() == str(value)

    while not shown():
        await asyncio.sleep(0.001)
        if time.perf_counter() - t_last > 5:
            break
    visible_ms = (time.perf_counter() - t_last) * 1000
    storm_lateness = list(lateness)
    await asyncio.sleep(0.3)
    probe.stop()
    cur = window.tree.currentIndex()
    return {
        "updates": n, "seconds": args.seconds, "rate": args.rate, "cells": args.cells, "comms": args.comms,
        "refreshes": window.controller.refreshes, "snapshots_taken": src.snapshots_taken,
        "max_stall_ms": max(storm_lateness) if storm_lateness else 0.0,
        "p99_stall_ms": (statistics.quantiles(storm_lateness, n=100)[98] if len(storm_lateness) > 100 else 0.0),
        "median_stall_ms": statistics.median(storm_lateness) if storm_lateness else 0.0,
        "final_value_visible_ms": visible_ms,
        "selection_kept": bool(cur.isValid() and cur.data() == "value"),
        "timeline_rows": window.timeline.model.rowCount(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=60.0)
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--comms", type=int, default=200)
    args = ap.parse_args()
    app = make_app()
    import tempfile

    window = InspectorWindow(recent=RecentConnections(os.path.join(tempfile.mkdtemp(), "recent.json")))
    window.resize(1360, 860)
    window.show()
    result: dict = {}

    async def go() -> None:
        result.update(await storm(window, args))
        await window.shutdown()

    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        loop.run_until_complete(go())
    ok_stall = result["max_stall_ms"] < 50
    ok_visible = result["final_value_visible_ms"] < 200
    print(f"storm: {result['updates']} updates at {result['rate']:.0f}/s on {result['cells']} cells / "
          f"{result['comms']} comms")
    print(f"  tree refreshes (coalesced): {result['refreshes']}   timeline rows: {result['timeline_rows']}")
    print(f"  event-loop stall: max {result['max_stall_ms']:.1f} ms, p99 {result['p99_stall_ms']:.1f} ms, "
          f"median {result['median_stall_ms']:.2f} ms   (target < 50 ms: {'OK' if ok_stall else 'MISSED'})")
    print(f"  final value visible {result['final_value_visible_ms']:.1f} ms after the last update "
          f"(target < 200 ms: {'OK' if ok_visible else 'MISSED'})")
    print(f"  selection kept through the storm: {result['selection_kept']}")
    return 0 if ok_stall and ok_visible and result["selection_kept"] else 1


if __name__ == "__main__":
    sys.exit(main())
