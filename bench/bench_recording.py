"""Flight-recorder benchmark, every figure next to a baseline measured in the same run.

A slider storm: the testbed's notebook document (4 cells, one IntSlider comm) changed 60 times
a second, each update producing the frames a v2 session sees: the daemon's sync message, the
inspector's sync reply and the `comm` broadcast. All traffic is real Automerge, in-process (no
socket: the socket costs the same with or without the recorder).

  (a) recording cost per frame (Recorder -> file + ring, fsync at most once a second) against
      the bare per-frame handling cost (decode, apply to the replica, reply; the broadcast parsed);
  (b) the storm's size per hour, extrapolated from a measured minute, for this format and for the
      candidates it was chosen over (JSON Lines + base64 bodies, sqlite in WAL mode), with their
      per-record write cost;
  (c) a synthetic 30-minute recording of the storm: time to open it (index and check every
      record) against reading its bytes, and seek latency to random points (nearest checkpoint +
      replay to the point) against replaying from the start;
  (e) the overhead counted in instructions (valgrind's cachegrind, when installed): the same
      storm through the core with and without the recording option, and the setup alone, each
      in its own process. Counts repeat to ~0.1 % where times on a shared machine vary by 10 %
      from run to run; they leave out the kernel's side of each `write`, given next to them.

    python bench/bench_recording.py [--minutes 30] [--seeks 200] [--no-instructions]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from inspector import __version__
from inspector.document import DocReplica, NotebookReader
from inspector.protocol import messages as m
from inspector.recording import (
    Frame,
    Meta,
    Recorder,
    RecordingReader,
    RecordingRing,
    RecordingWriter,
    Replicas,
    Seeker,
)
from inspector.recording.records import encode_record

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from slider_storm import RATE, LongStorm, core_run, gen_minute  # noqa: E402


def bare_handling(frames: list[tuple[str, bytes]]) -> float:
    """Seconds per frame of what the v2 session does with the storm's frames, without a
    recorder: a sync message is applied to the replica (which makes the reply), the incremental
    reader re-reads what it touched and the ordered views are built; a broadcast is decoded.
    (The divergence engine and the event log come on top in a real session: this is a floor.)"""
    rep = DocReplica("notebook", 0, depth=3)  # as the v2 profile reads it
    reader = NotebookReader()
    t0 = time.perf_counter()
    for direction, payload in frames:
        if payload[0] == 0:
            if direction == "in":
                _, dirty = rep.receive(payload[1:])
                reader.refresh(rep.doc, dirty)
                reader.ordered_cells()
                reader.ordered_comms()
            # an "out" frame is the reply `receive` already made
        else:
            m.decode_broadcast(payload[1:])
    return (time.perf_counter() - t0) / len(frames)


def recording_cost(frames: list[tuple[str, bytes]], path: str) -> tuple[float, int, float, float]:
    """Seconds per frame spent in the recorder (file with fsync at most once a second, ring,
    checkpoints by the defaults); the file's size; of the seconds per frame, those spent saving
    the documents for checkpoints and in fsync (one a second of the run's own clock, and one
    after each checkpoint)."""
    replicas = Replicas()
    parts = {"checkpoint": 0.0, "sync": 0.0}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a)
            finally:
                parts[name] += time.perf_counter() - t0
        return wrapper

    rec = Recorder(Meta(__version__, time.time(), 0.0), ring=RecordingRing(),
                   checkpoint=timed("checkpoint", replicas.checkpoint))
    writer = rec.start_file(path, fsync_interval=1.0)
    writer.sync = timed("sync", writer.sync)  # type: ignore[method-assign]
    spent = 0.0
    for i, (direction, payload) in enumerate(frames):
        t = i / (3 * RATE)
        t0 = time.perf_counter()
        f = rec.frame(1, direction, "typed", payload, mono=t, wall=1.7e9 + t)
        spent += time.perf_counter() - t0
        replicas.apply(f)  # stands for the core's replicas, which it keeps anyway: not counted
    t0 = time.perf_counter()
    rec.close()
    spent += time.perf_counter() - t0
    n = len(frames)
    return spent / n, os.path.getsize(path), parts["checkpoint"] / n, parts["sync"] / n


def candidates(frames: list[tuple[str, bytes]], d: str) -> dict[str, tuple[float, int]]:
    """Write cost per record and size of the same frames in the formats that were considered."""
    out: dict[str, tuple[float, int]] = {}
    recs = [Frame(1, dr, "typed", i / 180, 1.7e9 + i / 180, p, len(p)) for i, (dr, p) in enumerate(frames)]
    p = os.path.join(d, "c.rtirec")
    t0 = time.perf_counter()
    with RecordingWriter(p, Meta(__version__, 1.7e9, 0.0), fsync_interval=1.0) as w:
        for r in recs:
            w.append(r)
    out["this format (frames only)"] = ((time.perf_counter() - t0) / len(recs), os.path.getsize(p))
    p = os.path.join(d, "c.jsonl")
    t0 = time.perf_counter()
    with open(p, "w") as fh:
        for r in recs:
            fh.write(json.dumps({"k": "frame", "conn": r.conn, "dir": r.direction, "kind": r.kind, "mono": r.mono,
                                 "wall": r.wall, "b64": base64.b64encode(r.payload).decode()}) + "\n")
            fh.flush()
    out["JSON Lines + base64"] = ((time.perf_counter() - t0) / len(recs), os.path.getsize(p))
    p = os.path.join(d, "c.sqlite")
    db = sqlite3.connect(p)
    db.execute("pragma journal_mode=wal")
    db.execute("pragma synchronous=normal")
    db.execute("create table r (seq integer primary key, kind int, mono real, body blob)")
    t0 = time.perf_counter()
    for i, r in enumerate(recs):
        db.execute("insert into r values (?, 2, ?, ?)", (i, r.mono, encode_record(r)))
        db.commit()  # a record is durable against a kill once committed
    out["sqlite WAL (commit per record)"] = ((time.perf_counter() - t0) / len(recs),
                                              os.path.getsize(p) + os.path.getsize(p + "-wal"))
    db.close()
    return out


def synthetic(minutes: int, path: str) -> tuple[int, float]:
    """A `minutes`-long storm recorded as the recorder would (checkpoints by its defaults)."""
    storm = LongStorm()
    replicas = Replicas()
    rec = Recorder(Meta(__version__, time.time(), 0.0), checkpoint=replicas.checkpoint)
    rec.start_file(path, fsync_interval=None)
    t0 = time.perf_counter()
    n = 0
    for direction, payload in storm.initial:
        replicas.apply(rec.frame(1, direction, "typed", payload, mono=0.0, wall=1.7e9))
        n += 1
    for u in range(minutes * 60 * RATE):
        t = u / RATE
        for direction, payload in storm.update():
            replicas.apply(rec.frame(1, direction, "typed", payload, mono=t, wall=1.7e9 + t))
            n += 1
    rec.close()
    return n, time.perf_counter() - t0


def seek_to(reader: RecordingReader, index: int) -> Replicas:
    cp, rest = reader.seek(index)
    reps = Replicas()
    if cp is not None:
        for name, ds in cp.docs.items():
            reps.conn(cp.conn).load(name, ds.saved)
    for _, rec in rest:
        if isinstance(rec, Frame):
            reps.apply(rec)
    return reps


def recording_share(frames: list[tuple[str, bytes]], path: str) -> tuple[float, float]:
    """(seconds per daemon frame in the core, of which in the recording's hooks), one run with
    every hook the core calls timed: the overhead measured inside one run, which the shared
    machine's noise cannot tilt the way it tilts two runs compared."""
    from inspector.recording.session_recording import SessionRecording

    spent = [0.0]
    names = ("open", "bootstrap", "frame_in", "frame_out", "tick", "kernel_comm", "kernel_event", "kernel_state",
             "manifest", "close", "_on_event")
    saved = {n: getattr(SessionRecording, n) for n in names}

    def timed(fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[0] += time.perf_counter() - t0
        return wrapper

    for n, fn in saved.items():
        setattr(SessionRecording, n, timed(fn))
    try:
        n_in = sum(1 for d, _ in frames if d == "in")
        per = core_run(frames, path)
    finally:
        for n, fn in saved.items():
            setattr(SessionRecording, n, fn)
    return per, spent[0] / n_in


def replay_figures(path: str, seeks: int) -> None:
    """The replay driver on a core-made recording: replaying it whole (what `check FILE` and the
    window's first view cost) and `--at` random events (each one a replay from the start)."""
    from inspector.replay_driver import At, Replay

    t0 = time.perf_counter()
    rp = Replay(path)
    core = rp.run()
    whole = time.perf_counter() - t0
    last = core.log._seq
    print(f"(d) replay through the session core: {len(rp)} records ({last} events) in {whole * 1000:.0f} ms")
    rnd = random.Random(5)
    lat = []
    for seq in [rnd.randrange(1, last) for _ in range(seeks)]:
        t0 = time.perf_counter()
        Replay(path).run(At(seq=seq))
        lat.append(time.perf_counter() - t0)
    print(f"    --at a random event (replayed from the start, twice for the event's record): "
          f"p50 {pct(lat, 0.5) * 1000:.0f} ms, p95 {pct(lat, 0.95) * 1000:.0f} ms over {len(lat)} points")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


INSTRUCTION_STORM_S = 10.0  # seconds of storm run under valgrind (~25 s of valgrind each)


def child(mode: str, seconds: float) -> None:
    """What one counted process does: build the storm, warm up; then (`base`/`rec`) run it
    through the core."""
    frames = gen_minute(seconds)
    with tempfile.TemporaryDirectory(prefix="rti-bench-ir-") as d:
        # every mode warms up both ways first: imports and first uses are nobody's cost
        warm = gen_minute(1.0)
        core_run(warm, None)
        core_run(warm, os.path.join(d, "warm.rtirec"))
        if mode != "setup":
            core_run(frames, os.path.join(d, "r.rtirec") if mode == "rec" else None)


def instructions(mode: str) -> int:
    out = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                          sys.executable, __file__, "--child", mode], capture_output=True, text=True, check=True)
    found = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind: {out.stderr[-500:]}")
    return int(found.group(1).replace(",", ""))


def instruction_figures() -> None:
    if shutil.which("valgrind") is None:
        print("(e) instructions: valgrind is not installed here; skipped")
        return
    setup, base, rec = (instructions(mode) for mode in ("setup", "base", "rec"))
    frames = gen_minute(INSTRUCTION_STORM_S)
    n_in = sum(1 for d, _ in frames if d == "in")
    core, extra = base - setup, rec - base
    print(f"(e) instructions (cachegrind, {INSTRUCTION_STORM_S:g} s of storm, {n_in} daemon frames): the core "
          f"{core / n_in / 1e3:.0f} k per daemon frame; the recording option adds {extra / n_in / 1e3:.1f} k "
          f"= {100 * extra / core:.1f} % (target <= 10 %); user space only, the kernel's side of the "
          f"{len(frames)} writes is in the recorder's figure above")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--seeks", type=int, default=200)
    ap.add_argument("--no-instructions", action="store_true", help="skip the counts under valgrind")
    ap.add_argument("--child", choices=("setup", "base", "rec"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, INSTRUCTION_STORM_S)
        return
    with tempfile.TemporaryDirectory(prefix="rti-bench-rec-") as d:
        frames = gen_minute()
        print(f"storm: {RATE} updates/s, {len(frames)} frames in a measured minute")
        bare = statistics.median(bare_handling(frames) for _ in range(3))
        runs = [recording_cost(frames, os.path.join(d, f"minute{i}.rtirec")) for i in range(3)]
        cost, size, cps, syncs = sorted(runs)[1]  # the median run
        print(f"(a) the floor of frame handling (replica, reader, views; broadcast decode; no engine, no event "
              f"log): {bare * 1e6:.1f} us/frame; recorder alone: {cost * 1e6:.1f} us/frame "
              f"= {100 * cost / bare:.1f} % of that floor, of which saving checkpoints {cps * 1e6:.1f} us "
              f"and fsync {syncs * 1e6:.1f} us")
        print("    (the minute is replayed in a fraction of a second, so a checkpoint's and an fsync's cost "
              "fall on fewer frames than live; the overhead a session pays is measured below, in the core)")
        print(f"(b) this format: {size / 1e6:.2f} MB per measured minute -> {size * 60 / 1e9:.2f} GB per hour "
              f"(extrapolated x60)")
        print("    (that includes the checkpoints: the document's saved bytes every 30 s or 5000 records)")
        cands = candidates(frames, d)
        own = cands["this format (frames only)"][1]
        for name, (c, s) in cands.items():
            print(f"    {name}: {c * 1e6:.1f} us/record, {s / 1e6:.2f} MB per minute "
                  f"-> {s * 60 / 1e9:.2f} GB per hour ({s / own:.2f}x)")
        core_run(frames, None)  # warm-up: first-use imports and compiled patterns are nobody's cost
        core_path = os.path.join(d, "core.rtirec")
        cores, recorded = [], []
        for i in range(7):  # interleaved pairs, so a load spike on the shared machine hits both sides alike
            cores.append(core_run(frames, None))
            recorded.append(core_run(frames, core_path if i == 0 else os.path.join(d, f"core{i}.rtirec")))
        base_c, rec_c = statistics.median(cores), statistics.median(recorded)
        pairs = statistics.median((r - c) / c for c, r in zip(cores, recorded, strict=True))
        print(f"    in the session core (v2 profile, engine, event log): {base_c * 1e6:.0f} us per daemon frame "
              f"without the recording option, {rec_c * 1e6:.0f} us with it (ring + file) "
              f"= {100 * (rec_c - base_c) / base_c:.1f} % overhead by the medians of 7 interleaved runs, "
              f"{100 * pairs:.1f} % by the median of the 7 pairs (target <= 10 %); best runs "
              f"{min(cores) * 1e6:.0f} / {min(recorded) * 1e6:.0f} us = "
              f"{100 * (min(recorded) - min(cores)) / min(cores):.1f} %; "
              f"{os.path.getsize(core_path) / 1e6:.2f} MB for the minute")
        shares = [recording_share(frames, os.path.join(d, f"share{i}.rtirec")) for i in range(3)]
        per, hooks = statistics.median(p for p, _ in shares), statistics.median(h for _, h in shares)
        print(f"    measured inside one run (every recording hook timed; median of 3 runs): {hooks * 1e6:.1f} us of "
              f"{per * 1e6:.0f} us per daemon frame in the recording = {100 * hooks / (per - hooks):.1f} % overhead "
              f"(target <= 10 %)")
        if not args.no_instructions:
            instruction_figures()
        replay_figures(core_path, min(args.seeks, 20))
        path = os.path.join(d, "long.rtirec")
        n, gen = synthetic(args.minutes, path)
        print(f"(c) synthetic {args.minutes}-minute storm: {n} frames, {os.path.getsize(path) / 1e6:.1f} MB "
              f"(generated in {gen:.0f} s)")
        t0 = time.perf_counter()
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
        read = time.perf_counter() - t0
        t0 = time.perf_counter()
        reader = RecordingReader(path)
        opened = time.perf_counter() - t0
        print(f"    open (index + CRC of {len(reader)} records, {len(reader.checkpoints)} checkpoints): "
              f"{opened * 1000:.0f} ms; reading the bytes alone: {read * 1000:.0f} ms ({opened / read:.1f}x)")
        rnd = random.Random(3)
        targets = [rnd.randrange(1, len(reader)) for _ in range(args.seeks)]
        lat = []
        for i in targets:
            t0 = time.perf_counter()
            seek_to(reader, i)
            lat.append(time.perf_counter() - t0)
        print(f"    seek, cold (load the nearest checkpoint + replay): p50 {pct(lat, 0.5) * 1000:.0f} ms, "
              f"p95 {pct(lat, 0.95) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms over {len(lat)} points "
              f"(target p95 < 200 ms)")
        seeker = Seeker(reader, cache=len(reader.checkpoints) + 1)
        for cp in reader.checkpoints:  # what a window can do in the background after it opened
            seeker.seek(cp)
        warm = []
        for i in [rnd.randrange(1, len(reader)) for _ in range(args.seeks)]:
            t0 = time.perf_counter()
            seeker.seek(i)
            warm.append(time.perf_counter() - t0)
        print(f"    seek, warm (checkpoints loaded once, forked per seek): p50 {pct(warm, 0.5) * 1000:.0f} ms, "
              f"p95 {pct(warm, 0.95) * 1000:.0f} ms, max {max(warm) * 1000:.0f} ms")
        start = rnd.randrange(1, len(reader) - 5000)
        seeker.seek(start)
        steps = []
        for k in range(1, 101):  # scrubbing forward, 30 records a step
            t0 = time.perf_counter()
            seeker.seek(start + 30 * k)
            steps.append(time.perf_counter() - t0)
        print(f"    scrubbing forward 30 records a step: p95 {pct(steps, 0.95) * 1000:.1f} ms")
        # the baseline: replay from the start to a few of the same points (it grows with the point)
        base = []
        for i in sorted(targets)[:: max(1, len(targets) // 3)][:3]:
            t0 = time.perf_counter()
            reps = Replicas()
            for _, rec in reader.records(1, i + 1):
                if isinstance(rec, Frame):
                    reps.apply(rec)
            base.append((i, time.perf_counter() - t0))
        for i, s in base:
            print(f"    baseline, replay from the start to record {i}: {s * 1000:.0f} ms")
        reader.close()


if __name__ == "__main__":
    main()
