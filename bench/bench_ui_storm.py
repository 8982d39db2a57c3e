"""Update storm against the desktop window: 60 updates/s on a 1,000-cell / 200-comm notebook.

The default run measures the real thing end to end:

* the testbed daemon (no kernel) runs in its own process, as a daemon does (`--daemon-thread`:
  on its own event loop in a thread of this process, where its automerge calls hold this
  process's GIL and show up as the window's stalls), and serves a room of
  1,000 cells (~5-line sources) and 200 comms (IntSliders with ~1 KB states sharing a layout
  and a style model), opened through the room's IOPub path so the daemon's CommState, the
  document's `comms/` map and the feed all hold them;
* the desktop window (offscreen Qt, asyncio on the Qt loop via qasync) attaches to the room over
  the Unix socket with the same session the app makes (divergence engine on);
* on the testbed's loop, `--rate` comm updates per second are fed into the room exactly as the
  kernel's IOPub `comm_msg` would arrive: the room merges them into its CommState, writes the
  state into the document (peers woken for sync) and broadcasts the `comm` message. Mostly one
  slider is dragged; every fourth update moves another comm.

Measured on the GUI loop:

* the longest event-loop stall: lateness of a 5 ms repeating QTimer over the storm (max, p99);
* the time from the last update being written into the room until the tree's row shows it.

Targets: stall < 50 ms, final value visible < 200 ms after the last update. Exit status 1
when a target is missed. `--synthetic` drives the window with generated snapshots instead
(no daemon, no session): the UI's own cost alone.

    python bench/bench_ui_storm.py [--seconds 5] [--rate 60] [--cells 1000] [--comms 200] [--runs 1]
                                   [--daemon-thread]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from PySide6.QtCore import QElapsedTimer, Qt, QTimer  # noqa: E402

from inspector import events as ev  # noqa: E402
from inspector.testbed import TestbedThread  # noqa: E402
from inspector.testbed.notebook_doc import NotebookDoc, bulk_positions  # noqa: E402
from inspector.ui import sample_snapshots as ss  # noqa: E402
from inspector.ui.app import make_app, run_qt  # noqa: E402
from inspector.ui.main_window import InspectorWindow  # noqa: E402
from inspector.ui.recent import RecentConnections  # noqa: E402

TARGET_STALL_MS = 50.0
TARGET_STALL_1K_MS = 16.0  # the target at 1,000 cells and fewer
TARGET_VISIBLE_MS = 200.0
PROBE_MS = 5


# -- the room ---------------------------------------------------------------------------------------


def make_cells_doc(n_cells: int, seed: int = 7) -> bytes:
    """A saved notebook document with `n_cells` code cells of five lines each (no comms yet)."""
    rnd = random.Random(seed)
    doc = NotebookDoc.new("storm-notebook")
    doc.set_metadata_snapshot({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                               "language_info": {"name": "python"}, "runt": {"schema_version": "1"}})
    positions = bulk_positions(n_cells)
    # As a notebook opened from disk: a few large changes (one append per cell re-reads every
    # position before it, which made a 10k-cell room take minutes to build).
    for start in range(0, n_cells, 50):
        with doc.doc.transaction() as tx:
            for i in range(start, min(start + 50, n_cells)):
                src = "\n".join(f"value_{i}_{j} = compute({rnd.randint(0, 10**6)}, step={j})" for j in range(5))
                doc.add_cell(f"cell-{i:05d}", "code", src, positions[i], tx=tx)
    return doc.save()


LAYOUT_STATE = {
    "_model_module": "@jupyter-widgets/base", "_model_module_version": "2.0.0", "_model_name": "LayoutModel",
    "_view_count": None, "_view_module": "@jupyter-widgets/base", "_view_module_version": "2.0.0",
    "_view_name": "LayoutView", "align_content": None, "align_items": None, "align_self": None, "border_bottom": None,
    "border_left": None, "border_right": None, "border_top": None, "bottom": None, "display": None, "flex": None,
    "flex_flow": None, "grid_area": None, "grid_auto_columns": None, "grid_auto_flow": None, "grid_auto_rows": None,
    "grid_column": None, "grid_gap": None, "grid_row": None, "grid_template_areas": None,
    "grid_template_columns": None, "grid_template_rows": None, "height": None, "justify_content": None,
    "justify_items": None, "left": None, "margin": None, "max_height": None, "max_width": None, "min_height": None,
    "min_width": None, "object_fit": None, "object_position": None, "order": None, "overflow": None,
    "padding": None, "right": None, "top": None, "visibility": None, "width": "480px",
}
STYLE_STATE = {
    "_model_module": "@jupyter-widgets/controls", "_model_module_version": "2.0.0",
    "_model_name": "SliderStyleModel", "_view_count": None, "_view_module": "@jupyter-widgets/base",
    "_view_module_version": "2.0.0", "_view_name": "StyleView", "description_width": "initial",
    "handle_color": None,
}


def slider_state(k: int, layout: str, style: str) -> dict[str, Any]:
    """An ipywidgets 8 IntSlider model state, about 1 KB as JSON."""
    return {
        "_dom_classes": [], "_model_module": "@jupyter-widgets/controls", "_model_module_version": "2.0.0",
        "_model_name": "IntSliderModel", "_view_count": None, "_view_module": "@jupyter-widgets/controls",
        "_view_module_version": "2.0.0", "_view_name": "IntSliderView", "behavior": "drag-tap",
        "continuous_update": True, "description": f"slider {k}", "description_allow_html": False,
        "disabled": False, "layout": f"IPY_MODEL_{layout}", "max": 100_000, "min": 0,
        "orientation": "horizontal", "readout": True, "readout_format": "d", "step": 1,
        "style": f"IPY_MODEL_{style}", "tabbable": None,
        "tooltip": f"parameter {k} of the simulation; drag to explore its effect on the model output " * 3,
        "value": k,
    }


def comm_id(k: int) -> str:
    return f"{k:08x}-5107-4c0d-9a1e-{k:012x}"


def room_comms(n_comms: int) -> list[tuple[str, dict[str, Any]]]:
    """`n_comms` comms: one shared layout, one shared slider style, and IntSliders (~1 KB each)
    referencing both, so no reference dangles and a settled room shows no divergence."""
    layout, style = comm_id(0), comm_id(1)
    comms = [(layout, dict(LAYOUT_STATE)), (style, dict(STYLE_STATE))]
    comms += [(comm_id(k), slider_state(k, layout, style)) for k in range(2, n_comms)]
    return comms


async def open_comms(bed: TestbedThread, nid: str, n_comms: int) -> list[str]:
    """On the testbed loop: open the comms as the kernel's IOPub comm_open messages would.
    Returns the sliders' comm ids."""
    assert bed.testbed is not None
    room = bed.testbed.room(nid)
    for cid, state in room_comms(n_comms):
        await room._on_iopub({"msg_type": "comm_open", "content": {
            "comm_id": cid, "target_name": "jupyter.widget",
            "data": {"state": state, "buffer_paths": []}, "metadata": {"version": "2.1.0"}}})
    return [cid for cid, state in room_comms(n_comms) if state["_model_name"] == "IntSliderModel"]


class Stamps:
    """When each planned update was really written by the daemon, and when the daemon generated
    the first sync message to each peer that carries it: a file of float64 perf_counter times
    (0: not yet) shared by the daemon process and the bench, so staleness can be told apart into
    the daemon's own lag and the inspector's. Peers are slots keyed by the connecting process's
    pid (SO_PEERCRED on the daemon's side of the socket)."""

    SLOTS = 4

    def __init__(self, path: str, n: int, create: bool = False) -> None:
        import mmap
        size = 8 * (self.SLOTS + n * (1 + self.SLOTS))
        if create:
            with open(path, "wb") as f:
                f.truncate(size)
        self.path = path
        self._f = open(path, "r+b")
        self._mm = mmap.mmap(self._f.fileno(), size)
        self.n = n
        self.pids = memoryview(self._mm)[: 8 * self.SLOTS].cast("q")
        self._t = memoryview(self._mm)[8 * self.SLOTS:].cast("d")
        self.written_count = 0  # the daemon's side only
        self._covered = [0] * self.SLOTS

    def written(self, i: int) -> float:
        return self._t[i]

    def sent(self, slot: int, i: int) -> float:
        return self._t[self.n * (1 + slot) + i]

    def slot_of(self, pid: int) -> int | None:
        return next((k for k in range(self.SLOTS) if self.pids[k] == pid), None)

    # -- the daemon's side --------------------------------------------------------------------

    def mark_written(self, i: int, t: float) -> None:
        self._t[i] = t
        self.written_count = i + 1

    def mark_sent(self, pid: int, t: float) -> None:
        slot = self.slot_of(pid)
        if slot is None:
            slot = next((k for k in range(self.SLOTS) if self.pids[k] == 0), None)
            if slot is None:
                return
            self.pids[slot] = pid
            self._covered[slot] = self.written_count  # what was written before it joined came in its join
        base = self.n * (1 + slot)
        for j in range(self._covered[slot], self.written_count):
            self._t[base + j] = t
        self._covered[slot] = self.written_count


def stamp_peer_sends(stamps: Stamps) -> None:
    """In the daemon process: note each sync message a peer is sent (the time it was generated)."""
    import socket as _socket
    import struct as _struct

    from inspector.testbed.room import Peer
    orig = Peer.first_sync_frame

    def first_sync_frame(self: Peer) -> bytes | None:
        frame = orig(self)
        if frame is not None:
            pid = getattr(self, "_stamp_pid", None)
            if pid is None:
                sock = self.writer.get_extra_info("socket")
                cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _struct.calcsize("3i"))
                pid = self._stamp_pid = _struct.unpack("3i", cred)[0]
            stamps.mark_sent(pid, time.perf_counter())
        return frame

    Peer.first_sync_frame = first_sync_frame  # type: ignore[method-assign]


async def drive_storm(bed: TestbedThread, nid: str, plan: list[tuple[str, int]], rate: float,
                      stamps: Stamps | None = None) -> float:
    """On the testbed loop: each planned update at its time, through the room's IOPub handler
    (CommState merge, document write + peer sync wakeup, `comm` broadcast). Returns the
    perf_counter time right after the last one was written."""
    assert bed.testbed is not None
    room = bed.testbed.room(nid)
    start = time.perf_counter()
    for i, (cid, value) in enumerate(plan):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await room._on_iopub({"msg_type": "comm_msg", "content": {
            "comm_id": cid, "data": {"method": "update", "state": {"value": value}, "buffer_paths": []}}})
        if stamps is not None:
            stamps.mark_written(i, time.perf_counter())
    return time.perf_counter()


class DaemonProcess:
    """The testbed in a process of its own (`--serve`): it builds the room, then runs a storm
    plan when asked and answers with the time its last update was written (perf_counter: the
    monotonic clock on Linux, the same in both processes)."""

    def __init__(self, sock: str, cells: int, comms: int, run: int) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", sock, "--cells", str(cells),
                                      "--comms", str(comms), "--serve-run", str(run)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    async def reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.readline)
        if not line:
            raise RuntimeError(f"the daemon process ended (exit {self.proc.wait()})")
        return json.loads(line)

    async def storm(self, plan: list[tuple[str, int]], rate: float, stamps: str | None = None) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": "storm", "plan": plan, "rate": rate, "stamps": stamps}) + "\n")
        self.proc.stdin.flush()
        return float((await self.reply())["t_last"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def serve(sock: str, cells: int, comms: int, run: int) -> int:
    """`--serve`: the daemon side of the storm, in this process (see DaemonProcess)."""
    bed = TestbedThread(sock, auto_launch=False, write_daemon_json=False, keep_alive=60.0).start()
    try:
        assert bed.testbed is not None and bed.loop is not None
        t0 = time.perf_counter()
        nid = bed.call(bed.testbed.load_saved_doc, make_cells_doc(cells), f"storm-room-{run}")
        ids = bed.call(open_comms, bed, nid, comms)
        print(json.dumps({"nid": nid, "ids": ids, "room_s": time.perf_counter() - t0}), flush=True)
        for line in sys.stdin:
            req = json.loads(line)
            plan = [(cid, int(v)) for cid, v in req["plan"]]
            stamps = None
            if req.get("stamps"):
                stamps = Stamps(req["stamps"], len(plan))
                bed.call(stamp_peer_sends, stamps)
            fut = asyncio.run_coroutine_threadsafe(drive_storm(bed, nid, plan, float(req["rate"]), stamps), bed.loop)
            print(json.dumps({"t_last": fut.result()}), flush=True)
    finally:
        bed.stop()
    return 0


# -- measuring on the GUI loop -----------------------------------------------------------------------


class StallProbe:
    """A 5 ms repeating timer on the GUI loop; records how late each tick fires, and how much
    CPU the GUI thread itself used in that interval (a stall with little CPU is the thread
    waiting: for the GIL, or for a core another process holds)."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self.cpu: list[float] = []
        self.clock = QElapsedTimer()
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(PROBE_MS)
        self.timer.timeout.connect(self._tick)
        self._last = 0
        self._last_cpu = 0.0
        self.sampler: StackSampler | None = None
        if os.environ.get("STORM_TRACE"):
            self.sampler = StackSampler()
            self.sampler.start()

    def start(self) -> None:
        self.lateness.clear()
        self.cpu.clear()
        self.clock.start()
        self._last = self.clock.nsecsElapsed()
        self._last_cpu = time.thread_time()
        self.timer.start()

    def stop(self) -> tuple[list[float], list[float]]:
        self.timer.stop()
        return list(self.lateness), list(self.cpu)

    def _tick(self) -> None:
        now, cpu = self.clock.nsecsElapsed(), time.thread_time()
        late = max(0.0, (now - self._last) / 1e6 - PROBE_MS)
        used = (cpu - self._last_cpu) * 1000
        self.lateness.append(late)
        self.cpu.append(used)
        if late > 20 and os.environ.get("STORM_TRACE"):
            print(f"    stall {late:.0f} ms at {now / 1e9:.3f} s, GUI thread CPU {used:.0f} ms", file=sys.stderr)
            if self.sampler is not None:
                self.sampler.report(late / 1000 + PROBE_MS / 1000)
        self._last, self._last_cpu = now, cpu


class StackSampler(threading.Thread):
    """STORM_TRACE=1: what the GUI thread was doing in a stall. Samples its stack every
    millisecond (the switch interval is lowered so the sampler gets the GIL mid-callback) and,
    on a stall, prints the project frames seen most often in it."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.main = threading.main_thread().ident
        self.samples: collections.deque[tuple[float, tuple[str, ...]]] = collections.deque(maxlen=5000)
        self.running = True
        sys.setswitchinterval(0.001)

    def run(self) -> None:
        while self.running:
            frame = sys._current_frames().get(self.main)
            names: list[str] = []
            while frame is not None and len(names) < 40:
                code = frame.f_code
                if "/inspector/" in code.co_filename:
                    names.append(f"{os.path.basename(code.co_filename)}:{code.co_name}")
                frame = frame.f_back
            self.samples.append((time.perf_counter(), tuple(names)))
            time.sleep(0.001)

    def report(self, span_s: float) -> None:
        since = time.perf_counter() - span_s
        got = [names for t, names in list(self.samples) if t >= since and names]
        counts = collections.Counter(" < ".join(n[:4]) for n in got)
        for stack, n in counts.most_common(4):
            print(f"      {n:3d} samples: {stack}", file=sys.stderr)


class ValueWatch:
    """Notes the first moment the tree row at `path` shows `text`, checked on every model change
    (dataChanged, inserted rows, reset) rather than by polling, so the time is exact."""

    def __init__(self, window: InspectorWindow, path: str, text: str) -> None:
        self.window, self.path, self.text = window, path, text
        self.seen_at: float | None = None
        m = window.model
        self._conns = [(sig, sig.connect(self.check)) for sig in (m.dataChanged, m.rowsInserted, m.modelReset)]

    def shown(self) -> bool:
        idx = self.window.model.index_for_path(self.path)
        node = self.window.model.node(idx)
        return node is not None and node.path == self.path and idx.siblingAtColumn(1).data() == self.text

    def check(self, *_: Any) -> None:
        if self.seen_at is None and self.shown():
            self.seen_at = time.perf_counter()

    def close(self) -> None:
        for sig, conn in self._conns:
            sig.disconnect(conn)


async def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


def focus_comm(window: InspectorWindow, cid: str) -> None:
    """As a user watching the slider: its comm expanded, its value row selected."""
    window.tree.expand(window.proxy.mapFromSource(window.model.index_for_path(f"comms/{cid}")))
    window.tree.expand(window.proxy.mapFromSource(window.model.index_for_path(f"comms/{cid}/state")))
    window.select_path(f"comms/{cid}/state/value")


def storm_plan(n: int, comms: list[str], target: int = 0) -> list[tuple[str, int]]:
    """Mostly the slider being dragged (increasing values), every fourth update another comm;
    the last update is always the slider's."""
    plan = []
    for i in range(n):
        if i % 4 or i == n - 1 or len(comms) == 1:
            plan.append((comms[target], 1000 + i))
        else:
            plan.append((comms[1 + (i // 4) % (len(comms) - 1)], i))
    return plan


def figures(probe: tuple[list[float], list[float]], visible_s: float | None) -> dict[str, Any]:
    lateness, cpu = probe
    worst = max(range(len(lateness)), key=lateness.__getitem__) if lateness else -1
    return {
        "max_stall_ms": lateness[worst] if lateness else 0.0,
        "worst_stall_cpu_ms": cpu[worst] if lateness else 0.0,
        "max_busy_ms": max(cpu, default=0.0),
        "p99_stall_ms": statistics.quantiles(lateness, n=100)[98] if len(lateness) > 100 else 0.0,
        "median_stall_ms": statistics.median(lateness) if lateness else 0.0,
        "ticks": len(lateness),
        "final_value_visible_ms": visible_s * 1000 if visible_s is not None else float("inf"),
    }


# -- the real storm ----------------------------------------------------------------------------------


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(ln.split()[1]) / 1024 for ln in f if ln.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def child_pid(window: InspectorWindow) -> int | None:
    proc = getattr(window.controller.session, "_proc", None)
    return proc.pid if proc is not None else None


async def real_storm(window: InspectorWindow, args: argparse.Namespace, run: int, mode: str = "process") -> dict[str, Any]:
    d = tempfile.mkdtemp(prefix="rti-storm-", dir="/tmp")
    sock = os.path.join(d, "rt.sock")
    bed: TestbedThread | None = None
    daemon: DaemonProcess | None = None
    try:
        if args.daemon_thread:
            bed = TestbedThread(sock, auto_launch=False, write_daemon_json=False, keep_alive=60.0).start()
            assert bed.testbed is not None and bed.loop is not None
            t0 = time.perf_counter()
            saved = make_cells_doc(args.cells)
            nid = bed.call(bed.testbed.load_saved_doc, saved, f"storm-room-{run}")
            ids = bed.call(open_comms, bed, nid, args.comms)
            room_s = time.perf_counter() - t0
        else:
            daemon = DaemonProcess(sock, args.cells, args.comms, run)
            ready = await daemon.reply()
            nid, ids, room_s = ready["nid"], ready["ids"], ready["room_s"]

        window.session_options.core_in_window = mode == "window"
        join_probe = StallProbe()
        join_probe.start()
        t0 = time.perf_counter()
        window.attach(sock, nid)
        target = ids[0]
        # the tree's own snapshot: the window fills a big room's tree in slices after it has it
        await wait_for(lambda: window.state == "live" and (ms := window.model.snapshot) is not None
                       and ms.notebook_id == nid and len(ms.cells) == args.cells and len(ms.comms) == args.comms
                       and window.model.node_at(f"comms/{target}") is not None,
                       120, "the whole room in the tree")
        attach_s = time.perf_counter() - t0
        join = figures(join_probe.stop(), None)
        rss_joined = rss_mib(os.getpid()), rss_mib(child_pid(window))
        focus_comm(window, target)
        if os.environ.get("STORM_SELECTION"):
            def moved(cur: Any, _prev: Any) -> None:
                n = window.model.node(window.proxy.mapToSource(cur)) if cur.isValid() else None
                ms = window.model.snapshot
                print(f"    selection -> {n.path if n else None} (tree {len(ms.cells)} cells / {len(ms.comms)} comms,"
                      f" filling {window._fill_timer.isActive()})", file=sys.stderr)
            window.tree.selectionModel().currentChanged.connect(moved)
        window.tree.expandToDepth(0)
        await asyncio.sleep(0.5)  # let the join's own traffic settle before measuring

        plan = storm_plan(int(args.seconds * args.rate), ids)
        final = str(plan[-1][1])
        watch = ValueWatch(window, f"comms/{target}/state/value", final)
        probe = StallProbe()
        refreshes0 = window.controller.refreshes
        prof = None
        if args.profile:
            import cProfile
            prof = cProfile.Profile()
            prof.enable()
        probe.start()
        if bed is not None:
            assert bed.loop is not None
            t_last = await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(drive_storm(bed, nid, plan, args.rate), bed.loop))
        else:
            assert daemon is not None
            t_last = await daemon.storm(plan, args.rate)
        await wait_for(lambda: watch.seen_at is not None or watch.shown(), 10, "the final value in the tree")
        watch.check()
        stalls = probe.stop()
        if prof is not None:
            prof.disable()
            prof.dump_stats(args.profile)
        watch.close()
        result = figures(stalls, (watch.seen_at or time.perf_counter()) - t_last)
        session = window.controller.session
        div = session.snapshot().divergence if session is not None else []
        cur = window.tree.currentIndex()
        result.update({
            "mode": mode, "join_max_stall_ms": join["max_stall_ms"], "join_p99_stall_ms": join["p99_stall_ms"],
            "rss_joined": rss_joined, "rss_end": (rss_mib(os.getpid()), rss_mib(child_pid(window))),
            "updates": len(plan), "room_build_s": room_s, "attach_s": attach_s,
            "refreshes": window.controller.refreshes - refreshes0,
            "selection_kept": bool(cur.isValid() and cur.data() == "value"),
            "selected": (lambda n: n.path if n is not None else None)(window.model.node(window.proxy.mapToSource(cur))) if cur.isValid() else None,
            "timeline_rows": window.timeline.model.rowCount(),
            "diverged": sum(1 for x in div if x.status == "diverged"),
        })
        await window.controller.stop()
        return result
    finally:
        if bed is not None:
            bed.stop()
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(d, ignore_errors=True)


# -- the synthetic storm (UI cost alone) -------------------------------------------------------------


class StormSource:
    """Stands in for PeerSession's interface (snapshot, listeners, log, state) with synthetic data."""

    def __init__(self, cells: int, comms: int) -> None:
        self.log = ev.EventLog()
        self.state = "live"
        self.retry_at = None
        self.error = None
        self.resolver = None
        self._listeners: list[Callable[[set[str]], None]] = []
        self._snap = ss.make_snapshot(n_cells=cells, n_comms=comms)

    def add_listener(self, fn: Callable[[set[str]], None]) -> Callable[[], None]:
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn)

    def snapshot(self) -> Any:
        return self._snap

    def update(self, cid: str, value: int) -> None:
        k = next(i for i, c in enumerate(self._snap.comms) if c.comm_id == cid)
        self._snap = ss.set_comm_value(self._snap, k, value)
        body = json.dumps({"event": "comm", "msg_type": "comm_msg", "content": {
            "comm_id": cid, "data": {"method": "update", "state": {"value": value}}}}).encode()
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


async def synthetic_storm(window: InspectorWindow, args: argparse.Namespace, run: int) -> dict[str, Any]:
    src = StormSource(args.cells, args.comms)
    window.stack.setCurrentWidget(window.main_split)
    window.timeline.attach(src.log)
    window.controller.start(src)
    await asyncio.sleep(0.5)
    ids = [c.comm_id for c in src._snap.comms]
    target = ids[0]
    focus_comm(window, target)
    window.tree.expandToDepth(0)
    plan = storm_plan(int(args.seconds * args.rate), ids)
    watch = ValueWatch(window, f"comms/{target}/state/value", str(plan[-1][1]))
    probe = StallProbe()
    refreshes0 = window.controller.refreshes
    probe.start()
    start = time.perf_counter()
    for i, (cid, value) in enumerate(plan):
        delay = start + i / args.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        src.update(cid, value)
    t_last = time.perf_counter()
    await wait_for(lambda: watch.seen_at is not None or watch.shown(), 10, "the final value in the tree")
    watch.check()
    stalls = probe.stop()
    watch.close()
    result = figures(stalls, (watch.seen_at or time.perf_counter()) - t_last)
    cur = window.tree.currentIndex()
    result.update({"updates": len(plan), "refreshes": window.controller.refreshes - refreshes0,
                   "selection_kept": bool(cur.isValid() and cur.data() == "value"),
            "selected": (lambda n: n.path if n is not None else None)(window.model.node(window.proxy.mapToSource(cur))) if cur.isValid() else None,
                   "timeline_rows": window.timeline.model.rowCount()})
    await window.controller.stop()
    return result


# -- main ----------------------------------------------------------------------------------------------


def _mib(pair: tuple[float | None, float | None]) -> str:
    win, child = pair
    return f"window {win:.0f} MiB" + (f" + session core {child:.0f} MiB" if child is not None else " (core inside)")


def report(r: dict[str, Any], args: argparse.Namespace, run: int) -> bool:
    target = TARGET_STALL_1K_MS if args.cells <= 1000 else TARGET_STALL_MS
    ok_stall = r["max_stall_ms"] < target
    ok_visible = r["final_value_visible_ms"] < TARGET_VISIBLE_MS
    mode = "synthetic snapshots" if args.synthetic else (
        "testbed room over the socket, daemon in a thread of this process" if args.daemon_thread
        else "testbed room over the socket, daemon in its own process")
    core = {"process": "session core in a child process", "window": "session core on the window's loop (baseline)"}
    print(f"run {run} [{core.get(r.get('mode', ''), 'synthetic')}]: {r['updates']} updates at {args.rate:.0f}/s for {args.seconds:g} s on {args.cells} cells / "
          f"{args.comms} comms ({mode})")
    if not args.synthetic:
        print(f"  room built in {r['room_build_s']:.1f} s, window attached (whole tree) in {r['attach_s']:.2f} s")
        ok_join = r["join_max_stall_ms"] < target
        ok_stall = ok_stall and ok_join
        print(f"  event-loop stall during the join: max {r['join_max_stall_ms']:.1f} ms, p99 {r['join_p99_stall_ms']:.1f} ms "
              f"(target max < {target:.0f} ms: {'OK' if ok_join else 'MISSED'})")
        print(f"  memory after the join: {_mib(r['rss_joined'])}; after the storm: {_mib(r['rss_end'])}")
    print(f"  tree refreshes (coalesced): {r['refreshes']}   timeline rows: {r['timeline_rows']}")
    print(f"  event-loop stall ({r['ticks']} ticks of a {PROBE_MS} ms timer): max {r['max_stall_ms']:.1f} ms, "
          f"p99 {r['p99_stall_ms']:.1f} ms, median {r['median_stall_ms']:.2f} ms   "
          f"(target max < {target:.0f} ms: {'OK' if r['max_stall_ms'] < target else 'MISSED'})")
    print(f"    GUI thread CPU in the longest stall: {r['worst_stall_cpu_ms']:.1f} ms; longest busy interval "
          f"(CPU between two ticks): {r['max_busy_ms']:.1f} ms")
    print(f"  final value visible {r['final_value_visible_ms']:.1f} ms after the last update was written "
          f"(target < {TARGET_VISIBLE_MS:.0f} ms: {'OK' if ok_visible else 'MISSED'})")
    print(f"  selection kept through the storm: {r['selection_kept']} ({r.get('selected')})"
          + (f"   diverged comms after the storm: {r['diverged']}" if "diverged" in r else ""))
    return ok_stall and ok_visible and r["selection_kept"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=60.0)
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--comms", type=int, default=200)
    ap.add_argument("--runs", type=int, default=1, help="repeat the storm (a fresh room and attach each time)")
    ap.add_argument("--profile", metavar="FILE", help="cProfile the GUI thread over the storm into FILE")
    ap.add_argument("--synthetic", action="store_true", help="generated snapshots instead of a testbed room")
    ap.add_argument("--daemon-thread", action="store_true",
                    help="the testbed in a thread of this process (its GIL holds count as the window's stalls)")
    ap.add_argument("--core", choices=("process", "window", "both"), default="both",
                    help="where the window's session core runs: a child process (the app's default), the "
                         "window's loop (--core-in-window, the baseline), or both in turn in this run")
    ap.add_argument("--serve", metavar="SOCK", help=argparse.SUPPRESS)  # the daemon process's side
    ap.add_argument("--serve-run", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.comms < 4:
        ap.error("--comms must be at least 4")
    if args.serve:
        return serve(args.serve, args.cells, args.comms, args.serve_run)
    make_app()
    home = tempfile.mkdtemp(prefix="rti-storm-home-")
    window = InspectorWindow(recent=RecentConnections(os.path.join(home, "recent.json")))
    # the gui command's defaults (settle windows of the divergence engine); no kernel in this room
    window.session_options = argparse.Namespace(allow_kernel_launch=True, quiet_ms=250, clear_ms=2000)
    window.resize(1360, 860)
    window.show()
    storm = synthetic_storm if args.synthetic else real_storm
    results: list[tuple[int, dict[str, Any]]] = []

    async def go() -> None:
        try:
            modes = ("process", "window") if args.core == "both" else (args.core,)
            for run in range(1, args.runs + 1):
                for i, mode in enumerate(modes):
                    if args.synthetic:
                        results.append((run, await storm(window, args, run)))
                        break
                    results.append((run, await storm(window, args, run * 10 + i, mode)))
        finally:
            await window.shutdown()

    run_qt(go())
    shutil.rmtree(home, ignore_errors=True)
    oks = [report(r, args, run) for run, r in results]
    ok = all(oks)
    by_mode = {m: [r for _, r in results if r.get("mode") == m] for m in ("process", "window")}
    if by_mode["process"] and by_mode["window"]:
        for name, key in (("join", "join_max_stall_ms"), ("storm", "max_stall_ms")):
            p = min(r[key] for r in by_mode["process"])
            w = min(r[key] for r in by_mode["window"])
            print(f"longest {name} stall, best run: child process {p:.1f} ms vs core on the window's loop "
                  f"{w:.1f} ms ({w / max(p, 0.1):.1f}x shorter)")
        # the baseline is measured, not judged: only the app's own mode must meet the targets
        ok = all(report_ok for report_ok, (_, r) in zip(oks, results, strict=True) if r.get("mode") != "window")
    if len(results) > 1:
        stalls = [r["max_stall_ms"] for _, r in results]
        vis = [r["final_value_visible_ms"] for _, r in results]
        print(f"over {len(results)} runs: max stall {min(stalls):.1f}-{max(stalls):.1f} ms, "
              f"final value visible {min(vis):.1f}-{max(vis):.1f} ms")
    print("PASS" if ok else "FAIL: a target was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
