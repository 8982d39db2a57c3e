"""Core engine benchmark: connect-to-snapshot, per-update cost, peak memory.

One generated document: 1,000 cells of ~5-line source and 200 comms with ~1 KB states, served
by the testbed daemon (no kernel) on a real Unix socket. Printed, in one run:

  (a) connect -> complete snapshot (every cell and comm in the tree), next to the bare floor:
      a plain automerge peer syncing the same document in-process (load + sync, nothing else);
  (b) per-update cost (apply + refresh + snapshot) while 100 small changes per second arrive,
      next to bare `receive_sync_message` and next to a naive full re-read per update;
  (c) peak memory (RSS) of the inspector process.

    python bench/bench_core.py [--cells 1000] [--comms 200] [--updates 300] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time

from automerge import core as am

from inspector.document import DocReplica, NotebookReader, to_json
from inspector.session import PeerSession, SessionConfig
from inspector.testbed import Testbed
from inspector.testbed.notebook_doc import NotebookDoc


def make_doc(n_cells: int, n_comms: int, seed: int = 7) -> NotebookDoc:
    rnd = random.Random(seed)
    doc = NotebookDoc.new("bench-notebook")
    doc.set_metadata_snapshot({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                               "language_info": {"name": "python"}, "runt": {"schema_version": "1"}})
    for i in range(n_cells):
        src = "\n".join(f"value_{i}_{j} = compute({rnd.randint(0, 10**6)}, step={j})" for j in range(5))
        doc.append_cell("code", src)
    for k in range(n_comms):
        state = {"_model_module": "@jupyter-widgets/controls", "_model_name": "IntSliderModel",
                 "value": k, "description": f"slider {k}", "layout": f"IPY_MODEL_{k:032x}",
                 "padding": "x" * 850}
        doc.put_comm(f"{k:032x}", "jupyter.widget", "@jupyter-widgets/controls", "IntSliderModel",
                     json.dumps(state), k)
    return doc


def bare_sync(src: am.Document) -> float:
    """The floor: an empty automerge peer syncing `src` in-process until both sides are done."""
    t0 = time.perf_counter()
    peer = am.Document()
    s_src, s_peer = am.SyncState(), am.SyncState()
    for _ in range(100):
        m1 = src.generate_sync_message(s_src)
        if m1 is not None:
            peer.receive_sync_message(s_peer, am.Message.decode(m1.encode()))
        m2 = peer.generate_sync_message(s_peer)
        if m2 is not None:
            src.receive_sync_message(s_src, am.Message.decode(m2.encode()))
        if m1 is None and m2 is None:
            break
    return time.perf_counter() - t0


async def connect_once(sock: str, room: str, n_cells: int, n_comms: int) -> float:
    t0 = time.perf_counter()
    s = PeerSession(SessionConfig(sock, room, resolve_blobs=False, keep_frame_bodies=False))
    async with s.running():
        await s.wait_for(lambda sn: len(sn.cells) == n_cells and len(sn.comms) == n_comms, 60)
        return time.perf_counter() - t0


def record_updates(src: NotebookDoc, n: int) -> tuple[list[bytes], bytes]:
    """Sync messages the daemon would send for `n` small changes (comm state / source edits).

    Returns the messages after the initial sync, and the initial full-sync message stream
    collapsed into the saved document (the measured replicas start from it).
    """
    rnd = random.Random(3)
    rec = am.Document()
    s_src, s_rec = am.SyncState(), am.SyncState()

    def pump(collect: list[bytes] | None) -> None:
        for _ in range(50):
            m1 = src.doc.generate_sync_message(s_src)
            if m1 is not None:
                b = m1.encode()
                if collect is not None:
                    collect.append(b)
                rec.receive_sync_message(s_rec, am.Message.decode(b))
            m2 = rec.generate_sync_message(s_rec)
            if m2 is not None:
                src.doc.receive_sync_message(s_src, am.Message.decode(m2.encode()))
            if m1 is None and m2 is None:
                return

    pump(None)
    base = rec.save()
    msgs: list[bytes] = []
    comm_ids = list(src.comms())
    cell_ids = src.cell_ids()
    for i in range(n):
        if i % 2 == 0:
            cid = rnd.choice(comm_ids)
            src.update_comm_state(cid, json.dumps({"_model_name": "IntSliderModel", "value": i, "padding": "x" * 850}))
        else:
            cell = src._cell_obj(rnd.choice(cell_ids))
            text = src.doc.get(cell, "source")[1]
            with src.doc.transaction() as tx:
                tx.insert(text, 0, am.ScalarType.Str, "#")
        pump(msgs)
    return msgs, base


def replay(base: bytes, msgs: list[bytes], mode: str) -> list[float]:
    """Per-message cost of one consumer, fed the same message stream (100 msgs/s pacing is
    irrelevant to CPU cost, so messages are applied back to back and timed one by one)."""
    doc = am.Document.load(base)
    times: list[float] = []
    if mode == "bare":
        state = am.SyncState()
        for b in msgs:
            t0 = time.perf_counter()
            doc.receive_sync_message(state, am.Message.decode(b))
            times.append(time.perf_counter() - t0)
        return times
    if mode == "naive":
        state = am.SyncState()
        for b in msgs:
            t0 = time.perf_counter()
            doc.receive_sync_message(state, am.Message.decode(b))
            tree = to_json(doc)
            cells = sorted(tree["cells"].values(), key=lambda c: (c["position"], c["id"]))
            comms = {k: json.loads(v["state"]) for k, v in tree["comms"].items()}
            assert cells and comms
            times.append(time.perf_counter() - t0)
        return times
    # the inspector: replica + incremental reader + a snapshot-ready ordered view per update
    rep = DocReplica("notebook", 0, depth=3)  # as the v2 profile reads it
    rep.doc = doc
    rep.paths.rebuild(doc)
    reader = NotebookReader()
    reader.refresh(rep.doc, {("*",)})
    for b in msgs:
        t0 = time.perf_counter()
        _, dirty = rep.receive(b)
        reader.refresh(rep.doc, dirty)
        cells, comms = reader.ordered_cells(), reader.ordered_comms()
        assert cells and comms
        times.append(time.perf_counter() - t0)
    return times


def fmt_ms(x: float) -> str:
    return f"{x * 1000:8.2f} ms"


async def main_async(args: argparse.Namespace) -> None:
    print(f"document: {args.cells} cells x 5-line source, {args.comms} comms with ~1 KB states")
    t0 = time.perf_counter()
    ndoc = make_doc(args.cells, args.comms)
    saved = ndoc.save()
    print(f"generated in {time.perf_counter() - t0:.1f} s, saved size {len(saved) / 1024:.0f} KiB\n")

    floors = []
    for _ in range(args.runs):
        floors.append(bare_sync(am.Document.load(saved)))
    floor = min(floors)

    d = tempfile.mkdtemp(prefix="rti-bench-", dir="/tmp")
    sock = os.path.join(d, "rt.sock")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with Testbed(sock, auto_launch=False, write_daemon_json=False) as tb:
        room = tb.load_saved_doc(saved, "bench-room")
        connects = [await connect_once(sock, room, args.cells, args.comms) for _ in range(args.runs)]
        # the inspector alone, as users run it: a `snapshot` process, measured by its own peak RSS
        # (its own peak, VmHWM, reported at exit: ru_maxrss would carry this process's pages over the fork)
        wrapper = ("import sys\nfrom inspector.cli import main\ncode = main(sys.argv[1:])\n"
                   "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0].split()[1]\n"
                   "print(hwm, file=sys.stderr)\nsys.exit(code)")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", wrapper, "snapshot", "--socket", sock, "--notebook", room,
            "--settle-ms", "200", "--no-blobs", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        cli_ok = proc.returncode == 0 and len(json.loads(out)["cells"]) == args.cells
        cli_rss = int(err.decode().strip().splitlines()[-1]) if cli_ok else 0
    best = min(connects)
    print(f"(a) connect -> complete snapshot (best of {args.runs})")
    print(f"    bare automerge load+sync floor : {fmt_ms(floor)}")
    print(f"    inspector (socket, probe, join): {fmt_ms(best)}   ratio {best / floor:.2f}x  (target <= 1.2x, issue 17)")
    print(f"    all runs: {', '.join(f'{c * 1000:.0f}' for c in connects)} ms\n")

    msgs, base = record_updates(make_doc(args.cells, args.comms), args.updates)
    bare = replay(base, msgs, "bare")
    mine = replay(base, msgs, "inspector")
    naive = replay(base, msgs, "naive")
    mb, mm, mn = statistics.median(bare), statistics.median(mine), statistics.median(naive)
    print(f"(b) per update, {len(msgs)} sync messages for {args.updates} small changes (median / p95)")
    print(f"    bare receive_sync_message      : {fmt_ms(mb)} / {fmt_ms(sorted(bare)[int(len(bare) * .95)])}")
    print(f"    inspector apply+refresh+views  : {fmt_ms(mm)} / {fmt_ms(sorted(mine)[int(len(mine) * .95)])}"
          f"   ratio {mm / mb:.2f}x vs bare (target <= 2x)")
    print(f"    naive full re-read per update  : {fmt_ms(mn)} / {fmt_ms(sorted(naive)[int(len(naive) * .95)])}"
          f"   inspector is {mn / mm:.1f}x faster")
    budget = 1 / 100
    print(f"    at 100 updates/s the inspector uses {mm / budget * 100:.1f}% of one core\n")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("(c) peak memory")
    print(f"    `runtimed-inspector snapshot` process on this room: {cli_rss / 1024:.0f} MiB max RSS"
          f"{'' if cli_ok else '  (the snapshot FAILED: ' + err.decode()[-200:] + ')'}")
    print(f"    this bench process (testbed, generator and three peers): {rss / 1024:.0f} MiB "
          f"(before the testbed: {rss_before / 1024:.0f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--comms", type=int, default=200)
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
