"""Opening and seeking a 30-minute recording in the window (`open FILE`), offscreen, with the
baselines measured in the same run.

The recording is a session as the session core records it (v2 profile, divergence engine,
recording option), 30 minutes long: 8 sliders, one dragged at a time at 60 updates/s for 10 s
of every minute (18,000 updates, 54,000 frames), the rest of the minute quiet.

  open:  time from `RecordingWindow(path)` to a shown, painted window that answers input
         (the pass through the core goes on in slices after that), and to the whole pass;
         baseline: `Replay(path).run()` (the replay from the start that each position cost before);
  seek:  `show_seq` of random events (restore the nearest copy of the core, replay to the event,
         the tree and the divergence pane set) p50/p95/max; baseline: a replay from the start
         to the same events (a few of them: each costs up to the whole replay);
  stall: the longest turn of the event loop while the pass runs in slices;
  memory: the process's resident set after the pass and its peak, against before the window.

    QT_QPA_PLATFORM=offscreen python bench/bench_time_travel.py [--minutes 30] [--seeks 200]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from bench_recording import pct  # noqa: E402
from slider_storm import RATE, LongStorm, core_run  # noqa: E402

SLIDERS = 8
BURST_S = 10


def session_frames(minutes: int) -> tuple[list[tuple[str, bytes]], list[float]]:
    storm = LongStorm(comms=SLIDERS)
    frames = list(storm.initial)
    times = [0.0] * len(frames)
    for minute in range(minutes):
        for u in range(BURST_S * RATE):
            t = minute * 60.0 + 1.0 + u / RATE
            for f in storm.update(minute % SLIDERS):
                frames.append(f)
                times.append(t)
    return frames, times


def rss(field: str) -> int:
    """This process's resident memory (VmRSS) or its peak (VmHWM), in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    return -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--seeks", type=int, default=200)
    args = ap.parse_args()

    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    from inspector.replay_driver import Replay
    from inspector.ui.recording_window import RecordingWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="rti-bench-tt-") as d:
        path = os.path.join(d, "session.rtirec")
        t0 = time.perf_counter()
        frames, times = session_frames(args.minutes)
        per = core_run(frames, path, times)
        print(f"recording: {args.minutes} min, {SLIDERS} sliders, {len(frames)} frames, "
              f"{os.path.getsize(path) / 1e6:.1f} MB; recorded live at {per * 1e3:.2f} ms per daemon frame "
              f"(made in {time.perf_counter() - t0:.0f} s)")

        t0 = time.perf_counter()
        base = Replay(path)
        base.run()
        whole = time.perf_counter() - t0
        print(f"baseline: replay from the start, whole recording: {whole:.2f} s ({len(base)} records)")

        before_mb = rss("VmRSS")
        t0 = time.perf_counter()
        w = RecordingWindow(path)
        w.show()
        app.processEvents()
        w.grab()  # painted
        opened = time.perf_counter() - t0
        print(f"open: interactive window in {opened:.2f} s (target < 3 s) = {opened / whole:.3f}x the "
              f"whole replay; {100 * w.tt.progress:.0f} % replayed by then")

        # the pass in slices: the longest turn of the event loop while it runs
        gaps: list[float] = []
        clock = QElapsedTimer()
        clock.start()
        last = [clock.nsecsElapsed()]

        def beat() -> None:
            now = clock.nsecsElapsed()
            gaps.append((now - last[0]) / 1e9)
            last[0] = now

        ticker = QTimer()
        ticker.setInterval(1)
        ticker.timeout.connect(beat)
        ticker.start()
        t0 = time.perf_counter()
        while not w.is_loaded:
            app.processEvents()
        loaded = time.perf_counter() - t0 + opened
        ticker.stop()
        tt = w.tt
        print(f"pass: whole recording in the window after {loaded:.1f} s ({loaded / whole:.2f}x the bare replay; "
              f"copying {tt.copy_seconds:.1f} s for {tt.copies} restore points); longest event-loop turn "
              f"while it ran {max(gaps) * 1000:.0f} ms, p99 {pct(gaps, 0.99) * 1000:.0f} ms; "
              f"memory {rss('VmRSS')} MB now, {rss('VmHWM')} MB at the peak (before the window: {before_mb} MB)")

        rnd = random.Random(11)
        seqs = [rnd.choice(w.events).seq for _ in range(args.seeks)]
        lat = []
        for seq in seqs:
            t0 = time.perf_counter()
            w.show_seq(seq)
            lat.append(time.perf_counter() - t0)
        print(f"seek: show_seq of {len(lat)} random events p50 {pct(lat, 0.5) * 1000:.0f} ms, "
              f"p95 {pct(lat, 0.95) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms (target p95 < 200 ms)")
        fwd = []
        start = w.events[len(w.events) // 3].seq
        w.show_seq(start)
        for k in range(1, 101):
            t0 = time.perf_counter()
            w.show_seq(start + 20 * k)
            fwd.append(time.perf_counter() - t0)
        print(f"      scrubbing forward 20 events a step: p95 {pct(fwd, 0.95) * 1000:.1f} ms")
        ref = []
        for seq in sorted(seqs)[:: max(1, len(seqs) // 3)][:3]:
            t0 = time.perf_counter()
            Replay(path).run_to(tt.index_of_seq(seq))
            ref.append((seq, time.perf_counter() - t0))
        for seq, s in ref:
            print(f"      baseline, replay from the start to event {seq}: {s * 1000:.0f} ms")
        med = sorted(lat)[len(lat) // 2]
        print(f"      ratio: seek p50 / mean baseline = {med / (sum(s for _, s in ref) / len(ref)):.3f}")
        w.close()


if __name__ == "__main__":
    main()
