"""A long widget storm against `watch` and the window: memory start/peak/end and how far behind.

The testbed daemon (no kernel) runs in its own process with a room of `--cells` cells and
`--comms` comms (the room of bench_ui_storm.py) and, for `--minutes`, feeds `--rate` comm
updates a second into it as the kernel's IOPub would (mostly one slider dragged, every fourth
update another comm). Two inspectors attach to the room over the Unix socket:

* `runtimed-inspector watch` in its own process, as a user runs it (its output thrown away);
* the desktop window in this process (offscreen Qt), as `gui` makes it.

Every `--sample-s` seconds the bench reads each inspector's resident set (VmRSS, VmHWM) and
CPU time from /proc, and how stale the window's tree is: the time since the first update it
does not yet show was planned, split (the daemon stamps, in a shared file, when it wrote each
update and when it generated the first sync message to each peer carrying it) into the daemon
writing it late, the daemon's write to that sync message, and the inspector after it. Printed:
a row per sample and at the end start/peak/end RSS against the configured limits (event log,
key history and the recorder's ring: 64 MiB each by default) plus what the document's own
history adds, and the inspector's longest staleness after the daemon's sync message against
the session core's publishing interval (50 ms) plus the window's 80 ms refresh coalescing and
one refresh.

    QT_QPA_PLATFORM=offscreen python bench/bench_long_storm.py [--minutes 30] [--rate 60]
                                                             [--cells 1000] [--comms 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_ui_storm as storm  # noqa: E402

from inspector.ui.app import make_app, run_qt  # noqa: E402
from inspector.ui.main_window import InspectorWindow  # noqa: E402
from inspector.ui.recent import RecentConnections  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
LIMITS_MIB = {"event log": 64, "key history": 64, "recorder ring": 64}
# what may separate the daemon's sync message from the tree: the session core's publishing
# interval (core_process), the window's refresh coalescing (controller.min_interval), and one
# refresh's own cost
BEHIND_ALLOWED_S = 0.050 + 0.080 + 0.100


def proc_mem(pid: int | str) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    got = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                got[k] = int(v.split()[0]) / 1024
    return got.get("VmRSS", 0.0), got.get("VmHWM", 0.0)


def proc_cpu(pid: int | str) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


class GcPauses:
    """The window process's collector pauses, per generation, since the last `take()`."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses[info["generation"]].append((time.perf_counter() - self._t0) * 1000)

    def take(self) -> dict[int, list[float]]:
        out, self.pauses = self.pauses, {0: [], 1: [], 2: []}
        return out


class Arrivals:
    """When the window's process first held each value of the target slider in its session's
    snapshot (assembled from the session core's messages, before the tree refresh shows it)."""

    def __init__(self, session: Any, target: str) -> None:
        self.session, self.target = session, target
        self.index: list[int] = []  # plan indexes, increasing
        self.t: list[float] = []
        self._at = 0
        self.unsub = session.add_listener(self._changed)

    def _changed(self, _paths: set[str]) -> None:
        snap = self.session.snapshot()
        comms = snap.comms if snap is not None else ()
        if self._at >= len(comms) or comms[self._at].comm_id != self.target:
            self._at = next((i for i, c in enumerate(comms) if c.comm_id == self.target), len(comms))
            if self._at == len(comms):
                return
        state = comms[self._at].state
        v = state.get("value") if isinstance(state, dict) else None
        if isinstance(v, int) and (not self.index or v - 1000 > self.index[-1]):
            self.index.append(v - 1000)
            self.t.append(time.perf_counter())

    def held_since(self, i: int) -> float:
        """When plan update `i` (or a later one) was first held; 0 when not yet."""
        import bisect
        k = bisect.bisect_left(self.index, i)
        return self.t[k] if k < len(self.t) else 0.0


def staleness(shown: str | None, plan_start: float, rate: float, target_at: list[int],
              stamps: storm.Stamps, slot: int | None, arrivals: Arrivals) -> tuple[float, ...]:
    """How stale the tree's value of the target slider is, in seconds, split where the time
    went: (total, daemon behind its schedule, daemon writing to sending, inspector, of which
    the session core up to the window's process holding it, and the window's refresh). All are
    about the first update of the target the tree does not show yet, among those the daemon
    has written (zeros when it shows the newest written one). The total runs from that update's
    planned time; "daemon behind" is how late the daemon wrote it; "sending" from its write to
    the first sync message to the window's session core that carries it (or to now when none
    has yet); "inspector" from that message to now."""
    import bisect
    now = time.perf_counter()
    shown_i = int(shown) - 1000 if shown is not None and shown.lstrip("-").isdigit() else -1
    k = bisect.bisect_right(target_at, shown_i)
    if k >= len(target_at):
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    i = target_at[k]
    written = stamps.written(i)
    if not written:
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    planned = plan_start + i / rate
    sent = stamps.sent(slot, i) if slot is not None else 0.0
    if not sent:
        return now - planned, max(0.0, written - planned), now - written, 0.0, 0.0, 0.0
    held = arrivals.held_since(i)
    core_part, window_part = (held - sent, now - held) if held else (now - sent, 0.0)
    return now - planned, max(0.0, written - planned), sent - written, now - sent, core_part, window_part


async def long_storm(window: InspectorWindow, args: argparse.Namespace) -> dict[str, Any]:
    d = tempfile.mkdtemp(prefix="rti-long-", dir="/tmp")
    sock = os.path.join(d, "rt.sock")
    daemon = storm.DaemonProcess(sock, args.cells, args.comms, 1)
    watch: subprocess.Popen[bytes] | None = None
    try:
        ready = await daemon.reply()
        nid, ids = ready["nid"], ready["ids"]
        target = ids[0]
        if args.prehistory:
            # a room that has been dragged for hours before anyone attaches: the same updates
            # as fast as the daemon writes them (values below the storm's, so never "shown")
            t0 = time.perf_counter()
            await daemon.storm([(cid, -(i + 1)) for i, (cid, _) in enumerate(storm.storm_plan(args.prehistory, ids))],
                               1e9)
            print(f"prehistory: {args.prehistory} updates written in {time.perf_counter() - t0:.1f} s", flush=True)
        watch = subprocess.Popen([sys.executable, "-m", "inspector", "watch", "--socket", sock, "--notebook", nid],
                                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "watch.err"), "wb"))
        window.attach(sock, nid)
        await storm.wait_for(lambda: window.state == "live" and window.snapshot is not None
                             and len(window.snapshot.cells) == args.cells and len(window.snapshot.comms) == args.comms
                             and window.model.node(window.model.index_for_path(f"comms/{target}")) is not None,
                             120, "the whole room in the tree")
        storm.focus_comm(window, target)
        window.tree.expandToDepth(0)
        await asyncio.sleep(1.0)
        n = int(args.minutes * 60 * args.rate)
        plan = storm.storm_plan(n, ids)
        target_at = [i for i, (cid, _) in enumerate(plan) if cid == target]
        path = f"comms/{target}/state/value"

        def shown() -> str | None:
            idx = window.model.index_for_path(path)
            node = window.model.node(idx)
            return idx.siblingAtColumn(1).data() if node is not None and node.path == path else None

        rows: list[dict[str, Any]] = []
        arrivals = Arrivals(window.controller.session, target)
        stamps = storm.Stamps(os.path.join(d, "stamps"), n, create=True)
        probe = storm.StallProbe()
        me = os.getpid()
        core = storm.child_pid(window)  # the window's session core, in its own process (None: inside)
        cpu0 = {"window": proc_cpu(me), "watch": proc_cpu(watch.pid), "core": proc_cpu(core) if core else 0.0,
                "daemon": proc_cpu(daemon.proc.pid)}
        gcp = GcPauses()
        plan_start = time.perf_counter()
        storm_task = asyncio.ensure_future(daemon.storm(plan, args.rate, stamps.path))
        probe.start()
        stale: list[tuple[float, ...]] = []
        slot: int | None = None
        next_sample = plan_start
        t_prev = plan_start
        while not storm_task.done():
            await asyncio.sleep(0.25)
            if slot is None:
                slot = stamps.slot_of(core or me)
            stale.append(staleness(shown(), plan_start, args.rate, target_at, stamps, slot, arrivals))
            now = time.perf_counter()
            if now >= next_sample:
                if watch.poll() is not None:
                    raise RuntimeError(f"watch ended (exit {watch.returncode}) after {now - plan_start:.0f} s")
                lat, _cpu = probe.stop()
                probe.start()
                w_rss, w_hwm = proc_mem(me)
                x_rss, x_hwm = proc_mem(watch.pid)
                c_rss, c_hwm = proc_mem(core) if core else (0.0, 0.0)
                d_rss, _ = proc_mem(daemon.proc.pid)
                pauses = gcp.take()
                s = window.controller.session
                log_mib = s.log.bytes_held / 2**20 if s is not None else 0.0
                hist = s.history.history if s is not None and s.history is not None else None
                rows.append({
                    "t": now - plan_start, "window_rss": w_rss, "window_hwm": w_hwm, "watch_rss": x_rss,
                    "watch_hwm": x_hwm, "window_cpu": proc_cpu(me) - cpu0["window"],
                    "watch_cpu": proc_cpu(watch.pid) - cpu0["watch"],
                    "stale_max": max((x[0] for x in stale), default=0.0),
                    "daemon_late_max": max((x[1] for x in stale), default=0.0),
                    "daemon_send_max": max((x[2] for x in stale), default=0.0),
                    "inspector_max": max((x[3] for x in stale), default=0.0),
                    "core_part_max": max((x[4] for x in stale), default=0.0),
                    "window_part_max": max((x[5] for x in stale), default=0.0),
                    "inspector_p50": statistics.median(x[3] for x in stale) if stale else 0.0,
                    "inspector_p95": statistics.quantiles([x[3] for x in stale], n=20)[18] if len(stale) > 20 else 0.0,
                    "stall_max": max(lat, default=0.0), "log_mib": log_mib,
                    "history_mib": (hist.bytes / 2**20) if hist is not None else 0.0,
                    "interval": now - t_prev, "daemon_rss": d_rss,
                    "daemon_cpu": proc_cpu(daemon.proc.pid) - cpu0["daemon"],
                    "core_rss": c_rss, "core_hwm": c_hwm, "core_cpu": (proc_cpu(core) - cpu0["core"]) if core else 0.0,
                    "gc2_max": max(pauses[2], default=0.0), "gc2_n": len(pauses[2]),
                    "gc01_max": max(pauses[0] + pauses[1], default=0.0),
                })
                r = rows[-1]
                print(f"  {r['t'] / 60:5.1f} min  window {r['window_rss']:6.0f} MiB (peak {r['window_hwm']:.0f})"
                      + (f" + core {r['core_rss']:6.0f} MiB" if core else "")
                      + f"  watch {r['watch_rss']:6.0f} MiB (peak {r['watch_hwm']:.0f})"
                      f"  log {r['log_mib']:5.1f} MiB  history {r['history_mib']:5.1f} MiB"
                      f"  CPU window {r['window_cpu'] / max(r['t'], 1e-9) * 100:3.0f} %"
                      f" watch {r['watch_cpu'] / max(r['t'], 1e-9) * 100:3.0f} %"
                      f"  stale max {r['stale_max'] * 1000:6.0f} ms (daemon late {r['daemon_late_max'] * 1000:.0f},"
                      f" sending {r['daemon_send_max'] * 1000:.0f}, inspector {r['inspector_max'] * 1000:.0f};"
                      f" inspector p50 {r['inspector_p50'] * 1000:.0f} p95 {r['inspector_p95'] * 1000:.0f};"
                      f" core part {r['core_part_max'] * 1000:.0f}, window part {r['window_part_max'] * 1000:.0f})"
                      f"  stall max {r['stall_max']:5.0f} ms"
                      f"  full GCs {r['gc2_n']} (max {r['gc2_max']:.0f} ms; young max {r['gc01_max']:.0f})"
                      f"  daemon {r['daemon_rss']:5.0f} MiB", flush=True)
                stale = []
                t_prev = now
                next_sample = now + args.sample_s
        t_last = await storm_task
        await storm.wait_for(lambda: shown() == str(plan[-1][1]), 30, "the final value in the tree")
        final_visible = time.perf_counter() - t_last
        await window.controller.stop()
        watch_err = open(os.path.join(d, "watch.err"), "rb").read().decode(errors="replace")
        return {"rows": rows, "final_visible_s": final_visible, "updates": n, "watch_err": watch_err[-2000:]}
    finally:
        if watch is not None and watch.poll() is None:
            watch.terminate()
            watch.wait(10)
        daemon.stop()
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=60.0)
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--comms", type=int, default=200)
    ap.add_argument("--sample-s", type=float, default=60.0)
    ap.add_argument("--prehistory", type=int, default=0, metavar="N",
                    help="the daemon writes N updates before the inspectors attach (a room with a long history)")
    args = ap.parse_args()
    make_app()
    home = tempfile.mkdtemp(prefix="rti-long-home-")
    window = InspectorWindow(recent=RecentConnections(os.path.join(home, "recent.json")))
    window.session_options = argparse.Namespace(allow_kernel_launch=True, quiet_ms=250, clear_ms=2000)
    window.resize(1360, 860)
    window.show()
    out: dict[str, Any] = {}

    async def go() -> None:
        try:
            out.update(await long_storm(window, args))
        finally:
            await window.shutdown()

    print(f"{args.minutes:g} min storm at {args.rate:g} updates/s on {args.cells} cells / {args.comms} comms "
          f"(daemon in its own process; watch and the window attached)", flush=True)
    run_qt(go())
    shutil.rmtree(home, ignore_errors=True)
    rows = out["rows"]
    limit = sum(LIMITS_MIB.values())
    first, last = rows[0], rows[-1]
    d_start, d_end = first["daemon_rss"], last["daemon_rss"]
    print(f"daemon (the same document, and its CommState): RSS start {d_start:.0f} MiB, end {d_end:.0f} MiB; "
          f"grew {d_end - d_start:.0f} MiB: what the document's own history holds in a process")
    ok = True
    for who in ("window", "core", "watch") if first["core_rss"] else ("window", "watch"):
        start, peak, end = first[f"{who}_rss"], max(r[f"{who}_hwm"] for r in rows), last[f"{who}_rss"]
        # growth over the last third, when the log and the ring are full: the document's own
        # history (and whatever else grows) at that rate
        tail = [r for r in rows if r["t"] >= last["t"] * 2 / 3]
        slope = ((tail[-1][f"{who}_rss"] - tail[0][f"{who}_rss"]) / max((tail[-1]["t"] - tail[0]["t"]) / 60, 1e-9)
                 if len(tail) > 1 else 0.0)
        # the configured bounds, plus the document's own history as the daemon's process holds it
        bounded = end - start <= limit + max(0.0, d_end - d_start)
        ok &= bounded
        print(f"{who}: RSS start {start:.0f} MiB, peak {peak:.0f} MiB, end {end:.0f} MiB; grew {end - start:.0f} MiB "
              f"against limits of {limit} MiB ({', '.join(f'{k} {v}' for k, v in LIMITS_MIB.items())}) "
              f"+ the daemon's {d_end - d_start:.0f} MiB; "
              f"last third {slope:+.1f} MiB/min; CPU {last[f'{who}_cpu'] / last['t'] * 100:.0f} % of a core "
              f"({'bounded' if bounded else 'NOT BOUNDED'})")
    print(f"CPU of the daemon {last['daemon_cpu'] / last['t'] * 100:.0f} % of a core; all four processes "
          f"{sum(last[f'{w}_cpu'] for w in ('window', 'core', 'watch', 'daemon')) / last['t'] * 100:.0f} % "
          f"of the machine's {os.cpu_count()} cores x 100 %")
    stale_all = [r["stale_max"] for r in rows]
    insp_all = [r["inspector_max"] for r in rows]
    behind = max(insp_all)
    ok &= behind <= BEHIND_ALLOWED_S
    print(f"the window's tree behind the newest update, from its planned time: worst {max(stale_all) * 1000:.0f} ms, "
          f"median of the per-sample worst {statistics.median(stale_all) * 1000:.0f} ms; of which the daemon writing it "
          f"late: worst {max(r['daemon_late_max'] for r in rows) * 1000:.0f} ms, the daemon's write to its sync message: "
          f"worst {max(r['daemon_send_max'] for r in rows) * 1000:.0f} ms")
    print(f"the inspector behind the daemon's sync message: worst {behind * 1000:.0f} ms, median of the per-sample "
          f"worst {statistics.median(insp_all) * 1000:.0f} ms (allowed {BEHIND_ALLOWED_S * 1000:.0f} ms: the core's "
          f"publishing 50 + refresh coalescing 80 + one refresh 100); final value visible "
          f"{out['final_visible_s'] * 1000:.0f} ms after the last of {out['updates']} updates")
    print(f"longest event-loop stall in any sample: {max(r['stall_max'] for r in rows):.0f} ms")
    if out["watch_err"].strip():
        print("watch stderr (tail):\n" + out["watch_err"])
    print("PASS" if ok else "FAIL: a target was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
