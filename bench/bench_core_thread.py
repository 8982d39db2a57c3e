"""How long the GUI thread stalls while automerge work runs: inline, in a thread, in a process.

Issue 17 asks whether the session core can run on a `threading.Thread` next to the window, or
whether automerge's binding holds the GIL through its calls, so that only a child process keeps
the window responsive. This benchmark answers with one run.

Inputs, generated once per size (default 10,000 cells / 2,000 comms, and 1,000 / 200): a
notebook document as the testbed daemon writes it (5-line code sources, ~1 KB comm states), and
what a peer would receive from it, recorded from a plain automerge peer:

  join:  the sync messages a joining peer gets (source doc, fresh `am.SyncState()`, pumped
         until both sides are done, as bench_history.py's `pump`);
  load:  the saved document (`Document.load`);
  storm: 60 small updates per second for `--seconds` (mostly one slider dragged, every fourth
         update another comm, every tenth a source edit), one or more messages each.

Each input is applied by one of two consumers:

  bare:  plain automerge (Message.decode + receive_sync_message + generate_sync_message, or
         Document.load), the result being the heads;
  real:  the project's reading path: DocReplica.receive + NotebookReader.refresh +
         ordered_cells/ordered_comms, the result being an `inspector.snapshot.Snapshot` of the
         document (cells, comms, metadata, heads; no feed, kernel or verdicts);

in one of these modes, while the main thread runs a 1 ms ticker (sleep 1 ms, record the gap
between wake-ups; a GUI event loop's timer, in effect):

  inline:   the ticker's own callbacks do the work (today's design: asyncio on the Qt loop);
  thread:   a `threading.Thread` does it and hands the result object over a queue;
  process:  a spawned child process (started and fed its inputs before the clock starts, as a
            child that owns the daemon socket would be) does it and sends back the result
            msgspec-msgpack-encoded; a reader thread takes the bytes off the pipe, the ticker
            decodes them into a `Snapshot` (the decode is main-thread time and shows in the gaps);
  delta:    (real path) the child ships a whole snapshot in pieces of `--chunk` cells or comms
            (a header, the chunks, an end marker), and a storm's updates as the changed cells
            and comms only (the window holds the join's snapshot before the storm starts); the
            ticker decodes one message per callback and patches its snapshot (decode + patch
            timed). The candidate design: whatever the document's size, no callback is large.

Printed per size / input / consumer / mode: `latency` (join/load: start -> result usable on the
main thread; storm: the worst update, due time -> result usable), the ticker's max and p99 gap
(nearest rank) and their ratio against the inline run of the same row group (measured in the
same run), how many gaps exceeded 16 ms and 50 ms (one spike from the machine's other load
shows as a 1, a stall of the design as many or as one huge gap), the largest message shipped,
the main thread's decode (+ patch) time per message (median, max), and for the bare consumer
the longest single binding call seen by the worker. A gap of ~1.1 ms is an idle ticker; in
thread mode a max gap close to the longest binding call means the call kept the GIL. The
process modes' latency includes the child's work; spawning the child and its imports do not
count (it is started, and a storm's join applied, before the clock).

    python bench/bench_core_thread.py [--sizes 10000:2000,1000:200] [--seconds 3] [--rate 60]
                                      [--modes inline,thread,process,delta] [--works join,load,storm]
                                      [--paths bare,real] [--chunk 1000]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import pickle
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from automerge import core as am

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from inspector.document import ALL, DocReplica, NotebookReader  # noqa: E402
from inspector.snapshot import CellView, CommView, DaemonView, FeedView, KernelView, Snapshot  # noqa: E402
from inspector.testbed.notebook_doc import NotebookDoc, bulk_positions  # noqa: E402

TICK_S = 0.001
IDLE_TAIL_S = 0.05  # the ticker runs on this long after the last result


# -- inputs ---------------------------------------------------------------------------------------


@dataclass
class Inputs:
    cells: int
    comms: int
    saved: bytes
    join: list[bytes]  # daemon -> peer messages of a join
    storm: list[list[bytes]]  # daemon -> peer messages of each update


def comm_state(k: int, value: int) -> str:
    return json.dumps({"_model_module": "@jupyter-widgets/controls", "_model_name": "IntSliderModel",
                       "value": value, "description": f"slider {k}", "layout": f"IPY_MODEL_{k:032x}",
                       "padding": "x" * 850})


def make_doc(n_cells: int, n_comms: int, seed: int = 7) -> NotebookDoc:
    """The testbed daemon's notebook: `n_cells` 5-line code cells, `n_comms` ~1 KB comm states."""
    rnd = random.Random(seed)
    doc = NotebookDoc.new("bench-notebook")
    doc.set_metadata_snapshot({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                               "language_info": {"name": "python"}, "runt": {"schema_version": "1"}})
    positions = bulk_positions(n_cells)
    for start in range(0, n_cells, 50):  # as a notebook opened from disk: a few large changes
        with doc.doc.transaction() as tx:
            for i in range(start, min(start + 50, n_cells)):
                src = "\n".join(f"value_{i}_{j} = compute({rnd.randint(0, 10**6)}, step={j})" for j in range(5))
                doc.add_cell(f"cell-{i:05d}", "code", src, positions[i], tx=tx)
    for k in range(n_comms):
        doc.put_comm(f"{k:032x}", "jupyter.widget", "@jupyter-widgets/controls", "IntSliderModel",
                     comm_state(k, k), k)
    return doc


def pump(src: am.Document, s_src: am.SyncState, peer: am.Document, s_peer: am.SyncState) -> list[bytes]:
    """Sync `peer` with `src` until both are done; return what `src` sent, in order."""
    sent: list[bytes] = []
    for _ in range(10_000):
        msg = src.generate_sync_message(s_src)
        if msg is None:
            return sent
        body = msg.encode()
        sent.append(body)
        peer.receive_sync_message(s_peer, am.Message.decode(body))
        reply = peer.generate_sync_message(s_peer)
        if reply is None:
            return sent
        src.receive_sync_message(s_src, am.Message.decode(reply.encode()))
    raise RuntimeError("sync did not converge")


def make_inputs(n_cells: int, n_comms: int, seconds: float, rate: float) -> Inputs:
    src = make_doc(n_cells, n_comms)
    saved = src.save()
    rec, s_src, s_rec = am.Document(), am.SyncState(), am.SyncState()
    join = pump(src.doc, s_src, rec, s_rec)
    rnd = random.Random(3)
    comm_ids = list(src.comms())
    cell_ids = [f"cell-{i:05d}" for i in range(n_cells)]
    storm: list[list[bytes]] = []
    for i in range(int(seconds * rate)):
        if i % 10 == 9:
            text = src.doc.get(src._cell_obj(rnd.choice(cell_ids)), "source")[1]
            with src.doc.transaction() as tx:
                tx.insert(text, 0, am.ScalarType.Str, "#")
        else:
            k = 0 if i % 4 else rnd.randrange(len(comm_ids))
            src.update_comm_state(comm_ids[k], comm_state(k, i))
        storm.append(pump(src.doc, s_src, rec, s_rec))
    return Inputs(n_cells, n_comms, saved, join, storm)


# -- consumers: the work being placed ---------------------------------------------------------------


class Heads(msgspec.Struct, frozen=True):
    heads: tuple[str, ...]


class Delta(msgspec.Struct, frozen=True):
    """What changed since the last shipped snapshot (entries replaced in place, by key)."""

    heads: tuple[str, ...]
    cells: tuple[CellView, ...]
    comms: tuple[CommView, ...]


class Bare:
    """Plain automerge; the result is the heads. Keeps the longest single binding call."""

    def __init__(self) -> None:
        self.doc, self.state = am.Document(), am.SyncState()
        self.longest = 0.0

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args)
        self.longest = max(self.longest, time.perf_counter() - t0)
        return out

    def apply(self, msgs: list[bytes]) -> None:
        for body in msgs:
            msg = self._call(am.Message.decode, body)
            self._call(self.doc.receive_sync_message, self.state, msg)
            self._call(self.doc.generate_sync_message, self.state)

    def load(self, saved: bytes) -> None:
        self.doc = self._call(am.Document.load, saved)

    def result(self) -> Heads:
        return Heads(tuple(h.hex() for h in self._call(self.doc.get_heads)))

    def delta(self) -> Heads:
        return self.result()


class Real:
    """The project's reading path; the result is a Snapshot of the document."""

    def __init__(self) -> None:
        self.rep, self.reader = DocReplica("notebook", 0, depth=3), NotebookReader()
        self.changed: set[str] = set()
        self.longest = 0.0  # not tracked: the binding calls are inside the project's code

    def apply(self, msgs: list[bytes]) -> None:
        for body in msgs:
            _, dirty = self.rep.receive(body)
            self.changed |= self.reader.refresh(self.rep.doc, dirty)

    def load(self, saved: bytes) -> None:
        self.rep.doc = am.Document.load(saved)
        self.changed |= self.reader.refresh(self.rep.doc, {ALL})

    def result(self) -> Snapshot:
        self.changed.clear()
        r = self.reader
        return Snapshot(daemon=DaemonView(socket="bench"), notebook_id=r.notebook_id or "",
                        schema_version=r.schema_version, heads=self.rep.heads, cells=r.ordered_cells(),
                        metadata=r.metadata, comms=r.ordered_comms(), feed=FeedView(False, ()),
                        kernel=KernelView(), taken_at=time.time())

    def delta(self) -> Delta:
        cells, comms = [], []
        for path in self.changed:
            top, _, key = path.partition("/")
            if top == "cells" and key in self.reader.cells:
                cells.append(self.reader.cells[key])
            elif top == "comms" and key in self.reader.comms:
                comms.append(self.reader.comms[key])
        self.changed.clear()
        return Delta(self.rep.heads, tuple(cells), tuple(comms))


def consumer(path: str) -> Bare | Real:
    return Bare() if path == "bare" else Real()


def prepare(c: Bare | Real, inputs: Inputs, work: str) -> None:
    """What happened before the clock starts: a storm arrives after the join."""
    if work == "storm":
        c.apply(inputs.join)
        c.result()
    c.longest = 0.0


def due_times(inputs: Inputs, rate: float, t0: float) -> list[float]:
    return [t0 + i / rate for i in range(len(inputs.storm))]


# -- the main thread's ticker -----------------------------------------------------------------------


@dataclass
class Run:
    gaps: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    shipped: list[int] = field(default_factory=list)
    decode: list[float] = field(default_factory=list)
    longest_call: float = 0.0


def tick(poll: Callable[[float], bool], run: Run) -> None:
    """Sleep 1 ms, note the gap since the last wake-up, call `poll` (which may work inline);
    until `poll` says it is done, then IDLE_TAIL_S more."""
    last = time.perf_counter()
    end: float | None = None
    while end is None or last < end:
        time.sleep(TICK_S)
        now = time.perf_counter()
        run.gaps.append(now - last)
        last = now
        if end is None and poll(now):
            end = time.perf_counter() + IDLE_TAIL_S


def run_inline(inputs: Inputs, work: str, path: str, rate: float) -> Run:
    c, run = consumer(path), Run()
    prepare(c, inputs, work)
    t0 = time.perf_counter()
    due = due_times(inputs, rate, t0) if work == "storm" else [t0]
    state = {"i": 0}

    def poll(now: float) -> bool:
        while state["i"] < len(due) and due[state["i"]] <= now:
            i = state["i"]
            step(c, inputs, work, i)
            c.result()
            run.latencies.append(time.perf_counter() - due[i])
            state["i"] += 1
        return state["i"] == len(due)

    tick(poll, run)
    run.longest_call = c.longest
    return run


def step(c: Any, inputs: Inputs, work: str, i: int) -> None:
    """The work item `i` of `work` (the join, the load, or update `i` of the storm) applied to `c`."""
    if work == "join":
        c.apply(inputs.join)
    elif work == "load":
        c.load(inputs.saved)
    else:
        c.apply(inputs.storm[i])


def run_thread(inputs: Inputs, work: str, path: str, rate: float) -> Run:
    c, run = consumer(path), Run()
    prepare(c, inputs, work)
    results: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
    t0 = time.perf_counter()
    due = due_times(inputs, rate, t0) if work == "storm" else [t0]

    def worker() -> None:
        for i, at in enumerate(due):
            pause = at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            step(c, inputs, work, i)
            results.put((i, c.result()))

    th = threading.Thread(target=worker, daemon=True)
    got = {"n": 0, "started": False}

    def poll(now: float) -> bool:
        if not got["started"]:
            got["started"] = True
            th.start()
        while True:
            try:
                i, _snap = results.get_nowait()
            except queue.Empty:
                break
            run.latencies.append(time.perf_counter() - due[i])
            got["n"] += 1
        return got["n"] == len(due)

    tick(poll, run)
    th.join()
    run.longest_call = c.longest
    return run


def child_main(conn: Any, inputs_file: str, work: str, path: str, rate: float, ship: str, chunk: int) -> None:
    """The child: set up, say ready, wait for go, do the work, ship each result encoded.

    Every message is one kind byte and a msgpack body: F (i, whole result), H (i, snapshot
    without cells and comms), C (i, cells), M (i, comms), Z (i,) for the end of a chunked
    snapshot, D (i, delta), B (the base snapshot of a delta storm, before the clock), E (stats)."""
    with open(inputs_file, "rb") as f:
        inputs: Inputs = pickle.load(f)
    c = consumer(path)
    prepare(c, inputs, work)
    enc = msgspec.msgpack.Encoder()
    encode_s = 0.0

    def send(kind: bytes, body: Any) -> None:
        nonlocal encode_s
        te = time.perf_counter()
        payload = kind + enc.encode(body)
        encode_s = max(encode_s, time.perf_counter() - te)
        conn.send_bytes(payload)

    if ship == "delta" and work == "storm" and isinstance(c, Real):
        send(b"B", c.result())  # what the window already shows when the storm begins
    conn.send_bytes(b"ready")
    t0 = float(conn.recv_bytes().decode())  # the parent's clock: perf_counter is system-wide on Linux
    due = due_times(inputs, rate, t0) if work == "storm" else [t0]
    for i, at in enumerate(due):
        pause = at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        step(c, inputs, work, i)
        if ship == "full" or not isinstance(c, Real):
            send(b"F", (i, c.result()))
        elif work == "storm":
            send(b"D", (i, c.delta()))
        else:  # a whole snapshot, in pieces the window takes one per callback
            snap = c.result()
            send(b"H", (i, msgspec.structs.replace(snap, cells=(), comms=())))
            for k in range(0, len(snap.cells), chunk):
                send(b"C", (i, snap.cells[k:k + chunk]))
            for k in range(0, len(snap.comms), chunk):
                send(b"M", (i, snap.comms[k:k + chunk]))
            send(b"Z", (i,))
    conn.send_bytes(b"E" + json.dumps({"longest": c.longest, "encode": encode_s}).encode())


class Receiver:
    """The window's side of the pipe: decode one message, keep the latest Snapshot."""

    def __init__(self, path: str) -> None:
        full: Any = Heads if path == "bare" else Snapshot
        self.dec = {b"F": msgspec.msgpack.Decoder(tuple[int, full]), b"B": msgspec.msgpack.Decoder(Snapshot),
                    b"H": msgspec.msgpack.Decoder(tuple[int, Snapshot]),
                    b"C": msgspec.msgpack.Decoder(tuple[int, tuple[CellView, ...]]),
                    b"M": msgspec.msgpack.Decoder(tuple[int, tuple[CommView, ...]]),
                    b"Z": msgspec.msgpack.Decoder(tuple[int]), b"D": msgspec.msgpack.Decoder(tuple[int, Delta])}
        self.snap: Any = None
        self.cells: list[CellView] = []
        self.comms: list[CommView] = []
        self.idx: tuple[dict[str, int], dict[str, int]] = ({}, {})

    def _index(self, snap: Any) -> None:
        if isinstance(snap, Snapshot):
            self.idx = ({cv.key: k for k, cv in enumerate(snap.cells)},
                        {mv.comm_id: k for k, mv in enumerate(snap.comms)})

    def take(self, data: bytes) -> int | None:
        """Decode one message; the index of the result it completes, or None (a chunk)."""
        kind, body = data[:1], memoryview(data)[1:]
        got = self.dec[kind].decode(body)
        if kind == b"B":
            self.snap = got
            self._index(got)
            return None
        i = got[0]
        if kind == b"F":
            self.snap = got[1]
            self._index(self.snap)
            return i
        if kind == b"H":
            self.snap, self.cells, self.comms = got[1], [], []
            return None
        if kind == b"C":
            self.cells.extend(got[1])
            return None
        if kind == b"M":
            self.comms.extend(got[1])
            return None
        if kind == b"Z":
            self.snap = msgspec.structs.replace(self.snap, cells=tuple(self.cells), comms=tuple(self.comms))
            self._index(self.snap)
            return i
        d: Delta = got[1]  # D: entries replaced in place
        cells, comms = list(self.snap.cells), list(self.snap.comms)
        for cv in d.cells:
            cells[self.idx[0][cv.key]] = cv
        for mv in d.comms:
            comms[self.idx[1][mv.comm_id]] = mv
        self.snap = msgspec.structs.replace(self.snap, heads=d.heads, cells=tuple(cells), comms=tuple(comms))
        return i


def run_process(inputs_file: str, inputs: Inputs, work: str, path: str, rate: float, ship: str,
                chunk: int) -> Run:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=child_main, args=(child, inputs_file, work, path, rate, ship, chunk), daemon=True)
    proc.start()
    rx = Receiver(path)
    while (first := parent.recv_bytes()) != b"ready":
        rx.take(first)
    run = Run()
    inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def reader() -> None:  # bytes off the pipe; the ticker decodes them
        while True:
            data = parent.recv_bytes()
            inbox.put(data)
            if data.startswith(b"E"):
                return

    rt = threading.Thread(target=reader, daemon=True)
    rt.start()
    t0 = time.perf_counter()
    due = due_times(inputs, rate, t0) if work == "storm" else [t0]
    state = {"n": 0, "end": False}
    parent.send_bytes(repr(t0).encode())

    def poll(now: float) -> bool:
        # one message per callback, as a window's socket notifier would take them
        try:
            data = inbox.get_nowait()
        except queue.Empty:
            return False
        if data.startswith(b"E"):
            run.longest_call = json.loads(data[1:])["longest"]
            state["end"] = True
        else:
            td = time.perf_counter()
            i = rx.take(data)
            t1 = time.perf_counter()
            run.decode.append(t1 - td)
            run.shipped.append(len(data))
            if i is not None:
                run.latencies.append(t1 - due[i])
                state["n"] += 1
        return state["n"] == len(due) and bool(state["end"])

    tick(poll, run)
    proc.join(10)
    rt.join(1)
    return run


# -- the table --------------------------------------------------------------------------------------


def p99(xs: list[float]) -> float:
    """Nearest-rank 99th percentile (never above the max, however few the samples)."""
    s = sorted(xs)
    return s[max(0, math.ceil(0.99 * len(s)) - 1)] if s else 0.0


HEADER = (f"{'size':<11} {'work':<5} {'path':<4} {'mode':<7} {'latency':>8} {'max gap':>8} {'p99 gap':>8} "
          f"{'xmax':>6} {'xp99':>6} {'>16':>4} {'>50':>4} {'ship KB':>8} {'dec p50':>7} {'dec max':>7} {'call ms':>8}")


def row(size: str, work: str, path: str, mode: str, r: Run, base: Run | None) -> str:
    mx, p = max(r.gaps) * 1e3, p99(r.gaps) * 1e3
    bmx, bp = (max(base.gaps) * 1e3, p99(base.gaps) * 1e3) if base else (mx, p)
    ship = f"{max(r.shipped) / 1024:8.1f}" if r.shipped else f"{'-':>8}"
    dec = (f"{statistics.median(r.decode) * 1e3:7.2f} {max(r.decode) * 1e3:7.2f}" if r.decode
           else f"{'-':>7} {'-':>7}")
    call = f"{r.longest_call * 1e3:8.1f}" if path == "bare" else f"{'-':>8}"
    return (f"{size:<11} {work:<5} {path:<4} {mode:<7} {max(r.latencies) * 1e3:8.1f} {mx:8.1f} {p:8.2f} "
            f"{mx / bmx:6.3f} {p / bp:6.3f} {sum(g > 0.016 for g in r.gaps):4d} {sum(g > 0.05 for g in r.gaps):4d} "
            f"{ship} {dec} {call}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000:2000,1000:200", help="cells:comms, comma-separated")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of the storm")
    ap.add_argument("--rate", type=float, default=60.0, help="storm updates per second")
    ap.add_argument("--modes", default="inline,thread,process,delta")
    ap.add_argument("--chunk", type=int, default=1000, help="cells or comms per message of a delta-mode snapshot")
    ap.add_argument("--works", default="join,load,storm")
    ap.add_argument("--paths", default="bare,real")
    args = ap.parse_args()
    modes, works, paths = args.modes.split(","), args.works.split(","), args.paths.split(",")
    print(f"gaps of a {TICK_S * 1e3:.0f} ms ticker on the main thread, ms; x = ratio to inline in the same run; "
          f"storm {args.rate:.0f}/s for {args.seconds:g} s; sys.getswitchinterval() = "
          f"{sys.getswitchinterval() * 1e3:.0f} ms; automerge binding: GIL held unless `thread` shows otherwise")
    tmp = tempfile.mkdtemp(prefix="rti-gil-", dir="/tmp")
    for spec in args.sizes.split(","):
        n_cells, n_comms = (int(x) for x in spec.split(":"))
        size = f"{n_cells}/{n_comms}"
        t0 = time.perf_counter()
        inputs = make_inputs(n_cells, n_comms, args.seconds, args.rate)
        inputs_file = os.path.join(tmp, f"inputs-{n_cells}.pickle")
        with open(inputs_file, "wb") as f:
            pickle.dump(inputs, f)
        print(f"\n{size} cells/comms: saved {len(inputs.saved) / 1024:.0f} KiB, join "
              f"{len(inputs.join)} messages / {sum(map(len, inputs.join)) / 1024:.0f} KiB, storm "
              f"{len(inputs.storm)} updates; generated in {time.perf_counter() - t0:.1f} s")
        print(HEADER, flush=True)
        for work in works:
            for path in paths:
                base: Run | None = None
                for mode in modes:
                    if mode == "delta" and path != "real":
                        continue
                    if mode == "inline":
                        r = run_inline(inputs, work, path, args.rate)
                    elif mode == "thread":
                        r = run_thread(inputs, work, path, args.rate)
                    else:
                        r = run_process(inputs_file, inputs, work, path, args.rate,
                                        "delta" if mode == "delta" else "full", args.chunk)
                    if mode == "inline":
                        base = r
                    print(row(size, work, path, mode, r, base), flush=True)
        os.unlink(inputs_file)
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
