"""Per-update cost against the length of the document's history, next to bare automerge.

One daemon-side document grows to 1k, 10k and 100k changes; then small updates arrive (one
comm state changed per sync message, as in a widget storm). Each update's message bytes are fed,
in the same run, to

  bare:  a plain automerge peer (Message.decode + receive_sync_message + generate_sync_message);
  ours:  DocReplica.receive (the same automerge work plus parsing, change checks, dirty paths)
         followed by NotebookReader.refresh of what the update touched.

Two shapes of history: `storm` (every change overwrites the same comm's state: what a slider
being dragged for an hour leaves) and `spread` (changes round-robin over 500 comms). Printed:
median milliseconds per update for bare, ours and ours' parts, ours - bare (what the inspector
adds) and ours/bare. Ten warm-up updates (the first one indexes the document) are not counted.

    python bench/bench_history.py [--sizes 1000,10000,100000] [--updates 200] [--depth 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from automerge import core as am

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from scripted_daemon import build_doc  # noqa: E402

from inspector.document import ALL, DocReplica, NotebookReader  # noqa: E402

S = am.ScalarType


def grow(n_changes: int, shape: str, n_comms: int) -> tuple[am.Document, list[bytes]]:
    comms = {f"w{k}": {"model_name": "IntSliderModel", "state": {"value": 0}, "seq": k} for k in range(n_comms)}
    doc = build_doc([{"id": "c1", "position": "80", "source": "x = 1"}], schema=3, comms=comms)
    cmap = doc.get(am.ROOT, "comms")[1]
    objs = [doc.get(cmap, f"w{k}")[1] for k in range(n_comms)]
    for i in range(n_changes):
        obj = objs[0] if shape == "storm" else objs[i % n_comms]
        with doc.transaction() as tx:
            tx.put(obj, "state", S.Str, json.dumps({"value": i}))
    return doc, objs


class Bare:
    def __init__(self) -> None:
        self.doc, self.state = am.Document(), am.SyncState()

    def receive(self, body: bytes) -> bytes | None:
        self.doc.receive_sync_message(self.state, am.Message.decode(body))
        out = self.doc.generate_sync_message(self.state)
        return out.encode() if out is not None else None


class Ours:
    def __init__(self, depth: int) -> None:
        self.rep, self.reader = DocReplica("notebook", 0, depth), NotebookReader()
        self.t_receive = self.t_read = 0.0

    def receive(self, body: bytes) -> bytes | None:
        t0 = time.perf_counter()
        reply, dirty = self.rep.receive(body)
        t1 = time.perf_counter()
        self.reader.refresh(self.rep.doc, dirty)
        self.reader.ordered_comms()
        self.t_receive += t1 - t0
        self.t_read += time.perf_counter() - t1
        return reply


def pump(src: am.Document, s_src: am.SyncState, peer: Bare | Ours, timed: list[float] | None = None) -> None:
    """Sync `peer` with `src` until both are done; the first message's handling is timed."""
    for _ in range(10_000):
        msg = src.generate_sync_message(s_src)
        if msg is None:
            return
        body = msg.encode()
        t0 = time.perf_counter()
        reply = peer.receive(body)
        if timed is not None:
            timed.append(time.perf_counter() - t0)
            timed = None
        if reply is None:
            return
        src.receive_sync_message(s_src, am.Message.decode(reply))
    raise RuntimeError("sync did not converge")


def run(n_changes: int, shape: str, updates: int, depth: int, n_comms: int) -> dict[str, float]:
    src, objs = grow(n_changes, shape, n_comms)
    bare, ours = Bare(), Ours(depth)
    s_bare, s_ours = am.SyncState(), am.SyncState()
    pump(src, s_bare, bare)
    pump(src, s_ours, ours)
    ours.reader.refresh(ours.rep.doc, {ALL})
    ours.t_receive = ours.t_read = 0.0
    t_bare: list[float] = []
    t_ours: list[float] = []
    warmup = 10
    for i in range(updates + warmup):
        if i == warmup:
            t_bare.clear()
            t_ours.clear()
            ours.t_receive = ours.t_read = 0.0
        obj = objs[0] if shape == "storm" else objs[(n_changes + i) % n_comms]
        with src.transaction() as tx:
            tx.put(obj, "state", S.Str, json.dumps({"value": -i}))
        # alternate who goes first, so neither side is favoured by caches
        for side in ((bare, s_bare, t_bare), (ours, s_ours, t_ours))[:: 1 if i % 2 else -1]:
            pump(src, side[1], side[0], side[2])
    return {"bare": statistics.median(t_bare) * 1e3, "ours": statistics.median(t_ours) * 1e3,
            "ours_receive": ours.t_receive / updates * 1e3, "ours_read": ours.t_read / updates * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--updates", type=int, default=200)
    ap.add_argument("--depth", type=int, default=3, help="dirty-path depth of the replica (both profiles use 3)")
    ap.add_argument("--comms", type=int, default=500, help="comms the spread history is spread over")
    ap.add_argument("--shapes", default="storm,spread")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"per-update cost, ms (median of {args.updates} updates; receive/read: means); depth {args.depth}")
    print(f"{'shape':<7} {'history':>8} {'bare':>8} {'ours':>8} {'receive':>8} {'read':>8} {'added':>8} {'ours/bare':>9}")
    for shape in args.shapes.split(","):
        rows = []
        for n in sizes:
            r = run(n, shape, args.updates, args.depth, args.comms)
            rows.append(r)
            print(f"{shape:<7} {n:>8} {r['bare']:>8.3f} {r['ours']:>8.3f} {r['ours_receive']:>8.3f} "
                  f"{r['ours_read']:>8.3f} {r['ours'] - r['bare']:>8.3f} {r['ours'] / r['bare']:>9.2f}", flush=True)
        ratios = [r["ours"] / r["bare"] for r in rows]
        growth_ours = rows[-1]["ours"] / rows[0]["ours"]
        growth_bare = rows[-1]["bare"] / rows[0]["bare"]
        added = [r["ours"] - r["bare"] for r in rows]
        print(f"{shape:<7} ours/bare from {min(ratios):.2f} to {max(ratios):.2f}; added from {min(added):.3f} to "
              f"{max(added):.3f} ms; {sizes[0]}->{sizes[-1]} changes: ours x{growth_ours:.2f}, bare x{growth_bare:.2f}")


if __name__ == "__main__":
    main()
