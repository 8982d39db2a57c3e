"""The incremental reader never lies: after every sync, what it shows equals a full re-read of
the same replica, whatever the daemon changed (fields, entries, whole maps, big changes)."""

from __future__ import annotations

import json
import random

import msgspec
import pytest
from automerge import core as am
from scripted_daemon import build_doc, put_cell, put_comm

from inspector.change_ops import ChangeFormatError, decode_change, encode_uleb
from inspector.document import ALL, DocReplica, NotebookReader

S = am.ScalarType


def sync(src: am.Document, s_src: am.SyncState, rep: DocReplica, reader: NotebookReader) -> set[str]:
    changed: set[str] = set()
    for _ in range(50):
        m = src.generate_sync_message(s_src)
        if m is not None:
            reply, dirty = rep.receive(m.encode())
            changed |= reader.refresh(rep.doc, dirty)
        else:
            reply = rep.generate()
        if reply is not None:
            src.receive_sync_message(s_src, am.Message.decode(reply))
        if m is None and reply is None:
            return changed
    raise AssertionError("sync did not converge")


def full_read(doc: am.Document) -> NotebookReader:
    r = NotebookReader()
    r.refresh(doc, {ALL})
    return r


def views(r: NotebookReader) -> tuple[list, list, object]:
    def plain(v: object) -> object:
        d = msgspec.to_builtins(v)
        d.pop("obj_id", None)  # the reader reports it; equal by construction
        return d

    return [plain(c) for c in r.ordered_cells()], [plain(c) for c in r.ordered_comms()], r.metadata


@pytest.mark.parametrize("depth", [2, 3])
def test_incremental_reads_equal_a_full_read_after_random_changes(depth: int) -> None:
    rnd = random.Random(depth)
    cells = [{"id": f"c{i}", "position": f"{0x80 + i:02X}80", "source": f"x = {i}\n" * 3} for i in range(30)]
    comms = {f"w{k}": {"model_name": "IntSliderModel", "model_module": "@jupyter-widgets/controls",
                       "state": {"_model_name": "IntSliderModel", "value": k}, "seq": k} for k in range(10)}
    src = build_doc(cells, schema=3, comms=comms)
    rep, reader, s_src = DocReplica("notebook", 0, depth), NotebookReader(), am.SyncState()
    sync(src, s_src, rep, reader)
    assert views(reader) == views(full_read(rep.doc))
    cells_obj = src.get(am.ROOT, "cells")[1]
    comms_obj = src.get(am.ROOT, "comms")[1]
    for step in range(120):
        kind = rnd.choice(["source", "state", "bad_state", "exec", "position", "new_cell", "del_cell",
                           "new_comm", "del_comm", "metadata", "outputs", "cell_md", "burst", "replace_cell",
                           "reopen_comm"])
        live_cells = src.keys(cells_obj)
        live_comms = src.keys(comms_obj)
        with src.transaction() as tx:
            if kind == "source" and live_cells:
                text = src.get(src.get(cells_obj, rnd.choice(live_cells))[1], "source")[1]
                tx.insert(text, rnd.randint(0, src.length(text)), S.Str, rnd.choice("abc\n"))
            elif kind in ("state", "bad_state") and live_comms:
                entry = src.get(comms_obj, rnd.choice(live_comms))[1]
                tx.put(entry, "state", S.Str, json.dumps({"value": step}) if kind == "state" else "{broken")
            elif kind == "exec" and live_cells:
                tx.put(src.get(cells_obj, rnd.choice(live_cells))[1], "execution_count", S.Str,
                       rnd.choice([str(step), "null", "nope"]))
            elif kind == "position" and live_cells:
                tx.put(src.get(cells_obj, rnd.choice(live_cells))[1], "position", S.Str, f"{rnd.randint(1, 250):02X}80")
            elif kind == "new_cell":
                put_cell(tx, cells_obj, {"id": f"n{step}", "position": "FF80", "source": "new"})
            elif kind == "del_cell" and live_cells:
                tx.delete(cells_obj, rnd.choice(live_cells))
            elif kind == "new_comm":
                put_comm(tx, comms_obj, f"n{step}", {"model_name": "OutputModel", "state": {}, "seq": 100 + step})
            elif kind == "del_comm" and live_comms:
                tx.delete(comms_obj, rnd.choice(live_comms))
            elif kind == "metadata":
                md = src.get(am.ROOT, "metadata")[1]
                tx.put(md, "custom", S.Str, f"v{step}")
            elif kind == "outputs" and live_cells:
                outs = src.get(src.get(cells_obj, rnd.choice(live_cells))[1], "outputs")[1]
                tx.insert(outs, 0, S.Str, json.dumps({"output_type": "stream", "name": "stdout", "text": str(step)}))
            elif kind == "cell_md" and live_cells:
                md = tx.put_object(src.get(cells_obj, rnd.choice(live_cells))[1], "metadata", am.ObjType.Map)
                tx.put(md, "tags", S.Str, "t")
            elif kind == "replace_cell" and live_cells:  # a new object at the same key
                put_cell(tx, cells_obj, {"id": rnd.choice(live_cells), "position": "80", "source": "again"})
            elif kind == "reopen_comm" and live_comms:  # comm_open of an existing id: new entry, new seq
                put_comm(tx, comms_obj, rnd.choice(live_comms), {"model_name": "IntSliderModel",
                                                                 "state": {"value": 0}, "seq": 500 + step})
            elif kind == "burst" and live_comms:
                for cid in live_comms[:5]:
                    tx.put(src.get(comms_obj, cid)[1], "state", S.Str, json.dumps({"value": -step}))
        sync(src, s_src, rep, reader)
        assert views(reader) == views(full_read(rep.doc)), f"step {step}: {kind}"
    assert rep.paths.fallbacks == 0  # every change was placed without a full re-read


def test_change_decoder_rejects_garbage() -> None:
    with pytest.raises(ChangeFormatError):
        decode_change(b"not a change at all")
    doc = build_doc([{"id": "a", "position": "80", "source": "x"}])
    raw = doc.get_changes([])[0].raw_bytes
    with pytest.raises(ChangeFormatError):
        decode_change(raw[:20])  # truncated
    ops = decode_change(raw)
    assert ops.actor == b"runtimed" and ops.keys[0] == "schema_version" and ops.created


# --------------------------------------------------------------------------- hostile input


uleb = encode_uleb


def sync_message(heads: list[bytes], changes: list[bytes], have: list[bytes] = ()) -> bytes:
    """A v1 sync message (type 0x42) built field by field: heads, need, have (bloom filters), changes."""
    out = bytearray([0x42]) + uleb(len(heads)) + b"".join(heads) + uleb(0) + uleb(len(have))
    for bloom in have:
        out += uleb(0) + uleb(len(bloom)) + bloom
    out += uleb(len(changes))
    for ch in changes:
        out += uleb(len(ch)) + ch
    return bytes(out)


def two_changes() -> tuple[am.Document, bytes, bytes]:
    d = am.Document(actor_id=b"daemon")
    with d.transaction() as tx:
        tx.put(am.ROOT, "a", S.Str, "x")
    with d.transaction() as tx:
        tx.put(am.ROOT, "b", S.Str, "y")
    c1, c2 = (c.raw_bytes for c in d.get_changes([]))
    return d, c1, c2


def test_a_bloom_filter_that_makes_automerge_panic_is_a_doc_error() -> None:
    from inspector.document import DocError, guarded

    _, c1, _ = two_changes()
    bad = sync_message([], [c1], have=[bytes([1, 0, 7])])  # one entry, 0 bits per entry
    # the bare binding panics in generate(): a BaseException no `except Exception` catches
    bare, state = am.Document(), am.SyncState()
    bare.receive_sync_message(state, am.Message.decode(bad))
    with pytest.raises(DocError, match="panicked"):
        guarded("generate", bare.generate_sync_message, state)
    rep = DocReplica("notebook", 0)
    with pytest.raises(DocError, match="0 bits per entry") as exc:
        rep.receive(bad)
    assert exc.value.size == len(bad) and exc.value.exit_code == 8


def test_a_corrupt_change_is_a_doc_error_with_its_bytes_named() -> None:
    from inspector.document import DocError

    d, c1, _ = two_changes()
    broken = bytearray(c1)
    broken[12] ^= 0x01  # inside the change body: its checksum no longer matches
    msg = sync_message([c1[4:8] + bytes(28)], [bytes(broken)])
    rep = DocReplica("notebook", 0)
    with pytest.raises(DocError, match="checksum") as exc:
        rep.receive(msg)
    assert exc.value.size == len(msg) and len(exc.value.sha256) == 64


def test_a_change_automerge_keeps_out_is_reported_and_convergence_follows_advertised_heads() -> None:
    d, c1, c2 = two_changes()
    heads = d.get_heads()
    rep = DocReplica("notebook", 0)
    rep.receive(sync_message(heads, [c2]))  # its dependency c1 never sent
    problems = rep.take_problems()
    assert [p.kind for p in problems] == ["unapplied"]
    assert problems[0].size == len(c2) and problems[0].change_hash == heads[0].hex()
    assert rep.advertised_heads == (heads[0].hex(),) and rep.heads == () and not rep.converged
    assert rep.take_problems() == []  # reported once
    rep.receive(sync_message(heads, [c1]))  # the dependency arrives: the queued change applies
    assert rep.converged and rep.unapplied == {} and rep.take_problems() == []


def test_a_resent_change_is_not_a_problem() -> None:
    d, c1, c2 = two_changes()
    rep = DocReplica("notebook", 0)
    rep.receive(sync_message(d.get_heads(), [c1, c2]))
    rep.receive(sync_message(d.get_heads(), [c2]))
    assert rep.take_problems() == [] and rep.converged


def nested_map_doc(depth: int) -> am.Document:
    doc = build_doc([{"id": "c1", "position": "80"}], schema=3, comms={"w": {"state": {}, "seq": 0}})
    comm = doc.get(doc.get(am.ROOT, "comms")[1], "w")[1]
    with doc.transaction() as tx:
        obj = tx.put_object(comm, "state", am.ObjType.Map)
        for _ in range(depth):
            obj = tx.put_object(obj, "k", am.ObjType.Map)
        tx.put(obj, "leaf", S.Int, 1)
    return doc


def test_an_automerge_map_nested_990_deep_is_read_without_recursion() -> None:
    import sys

    from inspector.document import TOO_DEEP, to_json

    doc = nested_map_doc(990)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # nothing in the reader may recurse per level
    try:
        reader = full_read(doc)
        value = to_json(doc)
    finally:
        sys.setrecursionlimit(limit)
    state = reader.comms["w"].state
    for _ in range(100):
        state = state["k"]
    assert state == TOO_DEEP
    assert isinstance(value["comms"], dict)


def test_a_comm_state_string_nested_990_deep_is_a_state_error() -> None:
    deep = "[" * 990 + "]" * 990
    doc = build_doc([], schema=3, comms={"w": {"state": deep, "seq": 0}})
    view = full_read(doc).comms["w"]
    assert view.state == deep and "nested deeper than 100 levels" in (view.state_error or "")


def change_chunk(columns: list[tuple[int, bytes]]) -> bytes:
    """A change chunk with the given raw columns (header fields minimal, checksum not checked here)."""
    body = (uleb(0) + uleb(1) + b"a" + uleb(1) + uleb(1) + b"\x00" + uleb(0) + uleb(0) + uleb(len(columns))
            + b"".join(uleb(spec) + uleb(len(data)) for spec, data in columns) + b"".join(d for _, d in columns))
    return b"\x85\x6f\x4a\x83" + b"\x00" * 4 + b"\x01" + uleb(len(body)) + body


def sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        done = (n == 0 and not b & 0x40) or (n == -1 and b & 0x40)
        out.append(b | (0 if done else 0x80))
        if done:
            return bytes(out)


@pytest.mark.parametrize("case", ["huge_run", "huge_nulls", "huge_literal", "long_leb", "inflate_bomb"])
def test_hostile_change_columns_fail_fast_and_small(case: str) -> None:
    import time
    import tracemalloc
    import zlib

    from inspector.change_ops import COL_ACTION, INFLATE_MAX_RATIO

    if case == "huge_run":
        col = (COL_ACTION, sleb(1 << 40) + uleb(1))
    elif case == "huge_nulls":
        col = (COL_ACTION, sleb(0) + uleb(1 << 62))
    elif case == "huge_literal":
        col = (COL_ACTION, sleb(-(1 << 50)) + uleb(1))
    elif case == "long_leb":
        col = (COL_ACTION, b"\x02" + b"\x80" * 1_000_000 + b"\x01")
    else:
        deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
        col = (COL_ACTION | 0x08, deflater.compress(b"\x00" * (64 << 20)) + deflater.flush())
    raw = change_chunk([col])
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ChangeFormatError):
        decode_change(raw)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 0.5, f"{case}: {elapsed:.2f} s"
    # allocation bounded by the change's own size (the 64 MiB the bomb expands to is never made)
    bound = 2 * (INFLATE_MAX_RATIO * len(raw) + 65536) + (1 << 20)
    assert peak < bound, f"{case}: {peak} bytes for a {len(raw)}-byte change"


def test_a_join_whose_message_packs_many_changes_in_one_entry_reports_nothing() -> None:
    """A v2 (0x43) message may hold a whole history in one `changes` entry, chunk after chunk:
    each chunk is judged on its own bytes, so a healthy join is never reported as corrupt."""
    from inspector.document import change_hash, chunks, parse_sync_message

    src = build_doc([{"id": "c1", "position": "80", "source": "x"}], schema=3, comms={"w": {"state": {}, "seq": 0}})
    w = src.get(src.get(am.ROOT, "comms")[1], "w")[1]
    for i in range(300):
        with src.transaction() as tx:
            tx.put(w, "state", S.Str, json.dumps({"value": i}))
    rep, s_src, packed = DocReplica("notebook", 0), am.SyncState(), 0
    every_hash = {c.hash for c in src.get_changes([])}
    for _ in range(20):
        msg = src.generate_sync_message(s_src)
        if msg is None:
            break
        body = msg.encode()
        for entry in parse_sync_message(body).changes:
            split = chunks(entry)
            assert sum(map(len, split)) == len(entry)
            assert {change_hash(c) for c in split} <= every_hash  # each chunk checks out on its own
            packed = max(packed, len(split))
        reply, _ = rep.receive(body)
        if reply is None:
            break
        src.receive_sync_message(s_src, am.Message.decode(reply))
    assert packed > 1  # the case this guards: several chunks in one entry
    assert rep.converged and rep.take_problems() == [] and rep.unapplied == {}
    assert rep.heads == tuple(h.hex() for h in src.get_heads())


def test_the_index_built_in_slices_is_the_index_built_at_once() -> None:
    """Idle-time indexing in slices (the window's loop runs between them) ends with exactly the
    index a whole rebuild makes; a read that needs the index before the slices are done still
    gets the right paths."""
    from inspector.document import ObjectPaths

    cells = [{"id": f"c{i}", "position": f"{i:04d}", "source": f"x = {i}"} for i in range(600)]
    comms = {f"w{k}": {"model_name": "IntSliderModel", "state": {"value": k}, "seq": k} for k in range(150)}
    doc = build_doc(cells, schema=3, comms=comms)
    whole = ObjectPaths(3)
    whole.rebuild(doc)
    sliced = ObjectPaths(3)
    sliced.invalidate()
    slices = 0
    while not sliced.warm(doc, budget_s=0.0005):
        slices += 1
        assert sliced.stale
    assert slices >= 2, "the budget was meant to split the work"
    assert not sliced.stale and sliced._paths == whole._paths
    # half-built, then a change arrives: the read goes on with the slices only as far as its
    # object (not a rebuild from scratch: at 10,000 cells that was a 364 ms stall in a storm)
    # and places it; the slices then finish the same index
    part = ObjectPaths(3)
    part.invalidate()
    assert not part.warm(doc, budget_s=0.0)
    before = doc.get_heads()
    cobj = doc.get(doc.get(am.ROOT, "cells")[1], "c7")[1]
    with doc.transaction() as tx:
        tx.put(cobj, "execution_count", am.ScalarType.Str, "3")
    assert part.dirty(doc, before) == {("cells", "c7", "execution_count")}
    assert part.stale and part._build, "the read visited only what it needed"
    left = len(part._build)
    # a second change under an object already placed costs no visit at all
    before = doc.get_heads()
    with doc.transaction() as tx:
        tx.put(cobj, "execution_count", am.ScalarType.Str, "4")
    assert part.dirty(doc, before) == {("cells", "c7", "execution_count")}
    assert len(part._build) == left
    while not part.warm(doc, budget_s=0.001):
        pass
    assert part._paths == whole._paths
    # stale with no warm-up started yet (a read in the moments after the join): the same
    cold = ObjectPaths(3)
    cold.invalidate()
    before = doc.get_heads()
    with doc.transaction() as tx:
        tx.put(cobj, "execution_count", am.ScalarType.Str, "5")
    assert cold.dirty(doc, before) == {("cells", "c7", "execution_count")}
    assert cold.stale and cold._build, "the read visited only what it needed"
    while not cold.warm(doc, budget_s=0.001):
        pass
    assert cold._paths == whole._paths
