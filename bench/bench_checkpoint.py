"""What a recorder checkpoint costs on the event loop as the document's history grows.

A daemon-side document with 200 comms takes small updates (one comm state per change, as in a
widget storm); each is synced to a `DocReplica` as the session does. Every `--every` changes a
checkpoint takes the replica's saved form, measured two ways in the same run:

  full:  `Document.save()` of the whole document (what a checkpoint did before `SavedForm`);
  form:  `DocReplica.saved()` (the last full save with the changes since appended; full saves
         again only when the appended bytes outweigh it, forked into a child on Linux).

Each form is loaded back and its heads compared with the replica's (a wrong form fails the
run). Printed per checkpoint: changes so far, full-save ms, form ms, form size against the full
save's, and at the end the worst of each, their ratio and how many full saves were inline and
how many forked.

    python bench/bench_checkpoint.py [--changes 40000] [--every 1800]
"""

from __future__ import annotations

import argparse
import json
import time

from automerge import core as am
from bench_history import Ours, grow, pump  # the same room and sync loop as the per-update bench

S = am.ScalarType


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=40_000)
    ap.add_argument("--every", type=int, default=1_800, help="changes between checkpoints (30 s at 60/s)")
    ap.add_argument("--comms", type=int, default=200)
    args = ap.parse_args()
    src, objs = grow(0, "spread", args.comms)
    peer, s_src = Ours(3), am.SyncState()
    pump(src, s_src, peer)
    rep = peer.rep
    print(f"checkpoint every {args.every} changes, {args.comms} comms; ms on the caller's thread")
    print(f"{'changes':>8} {'full ms':>8} {'form ms':>8} {'full KB':>8} {'form KB':>8}")
    worst_full = worst_form = 0.0
    for i in range(1, args.changes + 1):
        with src.transaction() as tx:
            tx.put(objs[i % args.comms], "state", S.Str, json.dumps({"value": i}))
        pump(src, s_src, peer)
        if i % args.every:
            continue
        t0 = time.perf_counter()
        full = rep.doc.save()
        t1 = time.perf_counter()
        form = rep.saved()
        t2 = time.perf_counter()
        if am.Document.load(form).get_heads() != rep.doc.get_heads():
            raise SystemExit(f"at {i} changes the saved form does not load back to the replica's heads")
        f_ms, s_ms = (t1 - t0) * 1e3, (t2 - t1) * 1e3
        worst_full, worst_form = max(worst_full, f_ms), max(worst_form, s_ms)
        print(f"{i:>8} {f_ms:>8.1f} {s_ms:>8.1f} {len(full) / 1024:>8.0f} {len(form) / 1024:>8.0f}", flush=True)
    sf = rep.saved_form
    print(f"worst: full save {worst_full:.1f} ms, saved form {worst_form:.1f} ms "
          f"({worst_form / worst_full:.2f}x); full saves inline {sf.full_saves}, forked {sf.forked_saves}")


if __name__ == "__main__":
    main()
