"""What a change says, read from its bytes, is what automerge reports: the values, predecessors
and dependencies `decode_change` reads, and the values the reader takes from the changes of a
linear history instead of reading them back (`Dirty.put`), which must always be `doc.get`'s."""

from __future__ import annotations

import hashlib
import json
import random
import zlib
from typing import Any

import msgspec
import pytest
from automerge import core as am
from scripted_daemon import build_doc
from test_core_document import sync_message, uleb

from inspector.change_ops import (
    ACTION_DELETE,
    ACTION_PUT,
    MAGIC,
    ChangeFormatError,
    _sleb,
    _uleb,
    decode_change,
)
from inspector.document import ALL, Dirty, DocReplica, NotebookReader, actor_label, kind_name, parse_exid
from inspector.v4.room import CommsDocReader

S = am.ScalarType
ACTORS = (b"runtimed", b"kernel", "frontend-\u00e9".encode(), bytes(range(16)))


# --------------------------------------------------------------------------- helpers


def binding_value(kind: str, value: Any) -> Any:
    """A decoded value in the form the binding gives it (Bytes as a list, Timestamps as datetimes)."""
    import datetime

    if kind == "Bytes":
        return list(value)
    if kind == "Timestamp":
        return datetime.datetime.fromtimestamp(value / 1000, datetime.UTC).replace(tzinfo=None)
    return value


def random_scalar(rnd: random.Random) -> tuple[Any, Any]:
    import datetime

    pick = rnd.randrange(9)
    if pick == 0:
        return S.Str, rnd.choice(["", "x", "h\u00e9llo \u2603", "\U0001f600 emoji", "a" * 300, json.dumps({"v": 1})])
    if pick == 1:
        return S.Int, rnd.choice([0, 1, -1, 63, 64, -64, -65, 2**40, -(2**62)])
    if pick == 2:
        return S.Uint, rnd.choice([0, 1, 127, 128, 2**63])
    if pick == 3:
        return S.F64, rnd.choice([0.0, -2.5, 1e300, float("inf")])
    if pick == 4:
        return S.Boolean, rnd.random() < 0.5
    if pick == 5:
        return S.Null, None
    if pick == 6:
        return S.Bytes, bytes(rnd.randrange(256) for _ in range(rnd.randrange(5)))
    if pick == 7:
        return S.Timestamp, datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    return S.Str, "".join(chr(rnd.randrange(0x20, 0x3000)) for _ in range(rnd.randrange(1, 20)))


def random_history(seed: int) -> am.Document:
    """Three actors editing a root map and a nested map, forking and merging now and then
    (so predecessors name several ops of several actors), with a text object in between."""
    rnd = random.Random(seed)
    base = am.Document(actor_id=ACTORS[0])
    with base.transaction() as tx:
        nested = tx.put_object(am.ROOT, "nested", am.ObjType.Map)
        text = tx.put_object(am.ROOT, "text", am.ObjType.Text)
        tx.insert(text, 0, S.Str, "a")
    docs = [base] + [base.fork() for _ in ACTORS[1:]]
    for d, actor in zip(docs[1:], ACTORS[1:], strict=True):
        d.set_actor(actor)
    keys = ["k0", "k1", "k2", "\u00fcml\u00e4ut", "state"]
    for step in range(60):
        d = rnd.choice(docs)
        with d.transaction() as tx:
            for _ in range(rnd.randrange(1, 4)):
                obj = rnd.choice([am.ROOT, nested])
                key = rnd.choice(keys)
                if rnd.random() < 0.15 and d.get(obj, key) is not None:
                    tx.delete(obj, key)
                elif rnd.random() < 0.05:
                    tx.put_object(obj, key, am.ObjType.Map)
                else:
                    tx.put(obj, key, *random_scalar(rnd))
            if rnd.random() < 0.2:
                tx.insert(text, 0, S.Str, rnd.choice("xyz\u00e9"))
        if step % 7 == 6:  # sync everyone: the next puts overwrite several concurrent ones
            for a in docs:
                for b in docs:
                    if a is not b:
                        a.merge(b)
        elif rnd.random() < 0.3:
            rnd.choice([o for o in docs if o is not d]).merge(d)
    for d in docs[1:]:
        base.merge(d)
    return base


def model_winners(changes: list[Any]) -> dict[tuple[Any, str], tuple[int, bytes]]:
    """Replay the decoded ops with automerge's map rules: an op hides the ops it names as
    predecessors; a delete shows nothing; the highest op id among those left is the value."""
    visible: dict[tuple[Any, str], set[tuple[int, bytes]]] = {}
    for ch in changes:
        ops = decode_change(ch.raw_bytes)
        for i, (obj, key) in enumerate(zip(ops.objs, ops.keys, strict=True)):
            if key is None:
                continue
            seen = visible.setdefault((obj, key), set())
            seen -= set(ops.preds[i])
            if ops.actions[i] != ACTION_DELETE:
                seen.add((ops.start_op + i, ops.actor))
    return {k: max(v) for k, v in visible.items() if v}


def split_change(raw: bytes) -> tuple[bytes, dict[int, bytes], bytes]:
    """(header, columns by spec, trailing bytes) of an uncompressed change chunk."""
    length, pos = _uleb(raw, 9)
    body = raw[pos : pos + length]
    n, p = _uleb(body, 0)
    p += 32 * n
    n, p = _uleb(body, p)
    p += n
    _, p = _uleb(body, p)
    _, p = _uleb(body, p)
    _, p = _sleb(body, p)
    n, p = _uleb(body, p)
    p += n
    n, p = _uleb(body, p)
    for _ in range(n):
        m, p = _uleb(body, p)
        p += m
    head = body[:p]
    n, p = _uleb(body, p)
    specs = []
    for _ in range(n):
        spec, p = _uleb(body, p)
        ln, p = _uleb(body, p)
        specs.append((spec, ln))
    cols = {}
    for spec, ln in specs:
        cols[spec] = body[p : p + ln]
        p += ln
    return head, cols, body[p:]


def join_change(head: bytes, cols: dict[int, bytes], extra: bytes = b"") -> bytes:
    """A change chunk with a valid checksum from a header and columns."""
    body = bytearray(head) + uleb(len(cols))
    for spec in sorted(cols):
        body += uleb(spec) + uleb(len(cols[spec]))
    for spec in sorted(cols):
        body += cols[spec]
    chunk = bytes([1]) + uleb(len(body)) + bytes(body + extra)
    return MAGIC + hashlib.sha256(chunk).digest()[:4] + chunk


def with_start_op(raw: bytes, start_op: int) -> bytes:
    head, cols, extra = split_change(raw)
    n, p = _uleb(head, 0)
    p += 32 * n
    n, p = _uleb(head, p)
    p += n
    _, p = _uleb(head, p)
    _, end = _uleb(head, p)
    return join_change(head[:p] + uleb(start_op) + head[end:], cols, extra)


def _sleb_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        if (n == 0 and not b & 0x40) or (n == -1 and b & 0x40):
            return bytes(out + bytes([b]))
        out.append(b | 0x80)


# --------------------------------------------------------------------------- the decoder


@pytest.mark.parametrize("seed", range(6))
def test_decoded_values_preds_and_deps_equal_automerges(seed: int) -> None:
    doc = random_history(seed)
    changes = doc.get_changes([])
    put_ops: dict[tuple[int, bytes], tuple[str, Any]] = {}
    for ch in changes:
        ops = decode_change(ch.raw_bytes)
        assert set(ops.deps) == set(ch.deps) and len(ops.deps) == len(ch.deps)
        assert ops.actor == ch.actor_id and ops.start_op == ch.start_op
        assert len(ops.actions) == len(ops.values) == len(ops.preds) == ch.max_op - ch.start_op + 1
        for i, act in enumerate(ops.actions):
            if act == ACTION_PUT and ops.keys[i] is not None:
                put_ops[(ops.start_op + i, ops.actor)] = ops.values[i]
    winners = model_winners(changes)
    nested = doc.get(am.ROOT, "nested")[1]
    checked = 0
    for obj, obj_id in ((am.ROOT, None), (nested, (parse_exid(nested)[1], parse_exid(nested)[0]))):
        for key in ["k0", "k1", "k2", "\u00fcml\u00e4ut", "state"]:
            got = doc.get(obj, key)
            win = winners.get((obj_id, key))
            if got is None:
                assert win is None, (key, win)
                continue
            actor, counter = parse_exid(got[1])
            assert win == (counter, actor), key  # the predecessors say which op is visible
            if isinstance(got[0], am.ObjType):
                continue
            kind, value = put_ops[(counter, actor)]
            assert kind == kind_name(got[0][0])
            assert binding_value(kind, value) == got[0][1]
            checked += 1
    assert checked


def test_an_overwrite_names_the_op_it_replaces_and_several_actors_are_indexed() -> None:
    a = am.Document(actor_id=b"aaaa")
    with a.transaction() as tx:
        tx.put(am.ROOT, "k", S.Str, "one")
    b = a.fork()
    b.set_actor(b"bbbb")
    with a.transaction() as tx:
        tx.put(am.ROOT, "k", S.Int, -7)
    with b.transaction() as tx:
        tx.put(am.ROOT, "k", S.F64, 0.25)
    a.merge(b)
    heads = a.get_heads()
    with a.transaction() as tx:
        tx.put(am.ROOT, "k", S.Str, "after both")
    last = a.get_changes(heads)[0]
    ops = decode_change(last.raw_bytes)
    assert set(ops.deps) == set(heads) and len(heads) == 2
    assert sorted(ops.preds[0]) == [(2, b"aaaa"), (2, b"bbbb")]  # both concurrent values
    assert ops.values[0] == ("Str", "after both")


def test_a_big_change_is_deflated_by_automerge_and_reads_the_same() -> None:
    d = am.Document(actor_id=b"runtimed")
    with d.transaction() as tx:
        for i in range(300):
            tx.put(am.ROOT, f"key{i}", S.Str, f"value \u00e9 {i}" * 3)
    ch = d.get_changes([])[0]
    assert ch.bytes[8] == 2 and len(ch.bytes) < len(ch.raw_bytes)  # a compressed chunk
    plain_ops, packed_ops = decode_change(ch.raw_bytes), decode_change(ch.bytes)
    assert packed_ops == plain_ops
    assert plain_ops.values[299] == ("Str", "value \u00e9 299" * 3)


def test_a_deflated_column_reads_the_same() -> None:
    d = am.Document(actor_id=b"runtimed")
    with d.transaction() as tx:
        for i in range(50):
            tx.put(am.ROOT, f"key{i}", S.Str, "x" * i)
    raw = d.get_changes([])[0].raw_bytes
    head, cols, extra = split_change(raw)
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    cols[0x57 | 0x08] = z.compress(cols.pop(0x57)) + z.flush()
    assert decode_change(join_change(head, cols, extra)) == decode_change(raw)


def test_garbled_changes_raise_only_change_format_errors() -> None:
    rnd = random.Random(7)
    doc = random_history(3)
    seeds = [ch.raw_bytes for ch in doc.get_changes([])[:20]] + [ch.bytes for ch in doc.get_changes([])[-3:]]
    for _ in range(3000):
        raw = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randrange(1, 4)):
            raw[rnd.randrange(8, len(raw))] = rnd.randrange(256)
        try:
            decode_change(bytes(raw))
        except ChangeFormatError:
            pass
    ch = am.Document(actor_id=b"x")
    with ch.transaction() as tx:
        tx.put(am.ROOT, "k", S.Str, "abc")
        tx.put(am.ROOT, "j", S.Str, "de")
    raw = ch.get_changes([])[0].raw_bytes
    head, cols, extra = split_change(raw)

    def bad(col: int, data: bytes) -> bytes:
        return join_change(head, {**cols, col: data}, extra)

    def meta(*entries: int) -> bytes:  # a literal run of value metadata
        return bytes([0x80 - len(entries)]) + b"".join(uleb(e) for e in entries)

    hostile = [
        (bad(0x56, meta((9 << 4) | 6, (2 << 4) | 6)), "runs past its column"),
        (bad(0x57, cols[0x57] + b"zz"), "bytes no op uses"),
        (bad(0x57, b"\xff\xfe\xfd\xfc\xfb"), "utf-8"),
        (join_change(head, {**cols, 0x56: meta((4 << 4) | 5, (1 << 4) | 6), 0x57: b"\0\0\0\0e"}, extra),
         "float value of 4 bytes"),
        (join_change(head, {**cols, 0x56: meta((3 << 4) | 3, (2 << 4) | 6), 0x57: b"\x01\0\0de"}, extra),
         "does not fill its bytes"),
        (join_change(head, {**cols, 0x56: meta((1 << 4) | 2, (2 << 4) | 6), 0x57: b"\x01de"}, extra),
         "boolean value has bytes"),
        (bad(0x70, bytes([0x7F, 5])), "disagree"),  # more predecessors than the columns hold
        (join_change(head, {**cols, 0x70: bytes([0x7E, 1, 0]), 0x71: bytes([0x7F, 9]), 0x73: bytes([0x7F, 1])},
                     extra), "predecessor without a valid actor"),
        (bytes(MAGIC) + b"\0\0\0\0" + bytes([1]) + uleb(12) + uleb(2**60) + b"\0" * 10, "dependencies"),
    ]
    for raw, reason in hostile:
        with pytest.raises(ChangeFormatError, match=reason):
            decode_change(raw)


# --------------------------------------------------------------------------- the replica and the reader


class CountingDoc:
    """A document whose `get` and `values` calls are counted (the reads the fast path avoids)."""

    def __init__(self, doc: am.Document) -> None:
        self._doc = doc
        self.gets: list[Any] = []
        self.values_calls = 0

    def get(self, obj: bytes, prop: Any, *rest: Any) -> Any:
        self.gets.append(prop)
        return self._doc.get(obj, prop, *rest)

    def values(self, obj: bytes, *rest: Any) -> Any:
        self.values_calls += obj != am.ROOT  # the root's few keys are read on every refresh
        return self._doc.values(obj, *rest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._doc, name)


def pump(src: am.Document, s_src: am.SyncState, rep: DocReplica) -> list[set[tuple[str, ...]]]:
    """Sync `rep` with `src`; the dirty sets of the messages that changed it."""
    out = []
    for _ in range(50):
        m = src.generate_sync_message(s_src)
        if m is None:
            return out
        reply, dirty = rep.receive(m.encode())
        if dirty:
            out.append(dirty)
        if reply is None:
            return out
        src.receive_sync_message(s_src, am.Message.decode(reply))
    raise AssertionError("sync did not converge")


def plain(view: Any) -> dict[str, Any]:
    return msgspec.to_builtins(view)


def storm_room(n_comms: int = 3) -> tuple[am.Document, list[bytes], list[bytes]]:
    comms = {f"w{k}": {"model_name": "IntSliderModel", "state": {"value": 0}, "seq": k} for k in range(n_comms)}
    cells = [{"id": f"c{i}", "position": f"{0x80 + i:02X}", "source": "x = 1"} for i in range(2)]
    src = build_doc(cells, schema=3, comms=comms)
    cmap, cells_map = src.get(am.ROOT, "comms")[1], src.get(am.ROOT, "cells")[1]
    return src, [src.get(cmap, f"w{k}")[1] for k in range(n_comms)], \
        [src.get(cells_map, f"c{i}")[1] for i in range(2)]


def full_view(doc: am.Document) -> tuple[list[Any], list[Any]]:
    r = NotebookReader()
    r.refresh(doc, {ALL})
    return [plain(c) for c in r.ordered_cells()], [plain(c) for c in r.ordered_comms()]


def test_a_linear_storm_reads_the_states_and_writers_doc_get_gives() -> None:
    src, comms, cells = storm_room()
    rep, reader, s_src = DocReplica("notebook", 0, 3), NotebookReader(), am.SyncState()
    for dirty in pump(src, s_src, rep):
        reader.refresh(rep.doc, dirty)
    reader.refresh(rep.doc, {ALL})
    rnd = random.Random(1)
    fast = 0
    for i in range(120):
        src.set_actor(rnd.choice(ACTORS))  # several writers, one line of history
        with src.transaction() as tx:
            for _ in range(rnd.randrange(1, 3)):
                pick = rnd.random()
                if pick < 0.7:
                    tx.put(rnd.choice(comms), "state", S.Str, json.dumps({"value": i, "s": "\u00e9" * (i % 3)}))
                elif pick < 0.9:
                    tx.put(rnd.choice(cells), "execution_count", S.Str, str(i))
                else:
                    tx.put(rnd.choice(cells), "execution_count", S.Int, i)
        if i % 10 == 9:  # several changes in one sync message
            with src.transaction() as tx:
                tx.put(comms[0], "state", S.Str, json.dumps({"value": -i}))
        for dirty in pump(src, s_src, rep):
            assert rep.linear
            assert isinstance(dirty, Dirty) and dirty.current(rep.doc)
            counting = CountingDoc(rep.doc)
            reader.refresh(counting, dirty)
            fast += "state" not in counting.gets and "execution_count" not in counting.gets
        assert ([plain(c) for c in reader.ordered_cells()], [plain(c) for c in reader.ordered_comms()]) \
            == full_view(rep.doc)
        for k, obj in enumerate(comms):
            got = rep.doc.get(obj, "state")
            assert reader.comms[f"w{k}"].state == json.loads(got[0][1])
            if reader.comms[f"w{k}"].writer is not None and i > 0:
                assert reader.comms[f"w{k}"].writer in {actor_label(a) for a in ACTORS}
        assert src.get(comms[0], "state")[1] == rep.doc.get(comms[0], "state")[1]
    assert fast >= 100  # the values came from the changes, not from doc.get


def test_writer_labels_are_the_ones_doc_gets_exid_gives() -> None:
    src, comms, _ = storm_room(1)
    rep, reader, s_src = DocReplica("notebook", 0, 3), NotebookReader(), am.SyncState()
    pump(src, s_src, rep)
    reader.refresh(rep.doc, {ALL})
    for actor in ACTORS:
        src.set_actor(actor)
        with src.transaction() as tx:
            tx.put(comms[0], "state", S.Str, json.dumps({"by": actor.hex()}))
        (dirty,) = pump(src, s_src, rep)
        reader.refresh(rep.doc, dirty)
        exid = rep.doc.get(comms[0], "state")[1]
        assert reader.comms["w0"].writer == actor_label(parse_exid(exid)[0]) == actor_label(actor)


def test_a_concurrent_edit_makes_the_replica_non_linear_and_doc_get_decides() -> None:
    src, comms, _ = storm_room(1)
    rep, reader, s_src = DocReplica("notebook", 0, 3), NotebookReader(), am.SyncState()
    pump(src, s_src, rep)
    reader.refresh(rep.doc, {ALL})
    with src.transaction() as tx:
        tx.put(comms[0], "state", S.Str, json.dumps({"value": 1}))
    for dirty in pump(src, s_src, rep):
        reader.refresh(rep.doc, dirty)
    assert rep.linear
    a, b = src.fork(), src.fork()
    a.set_actor(b"aaaa-frontend")
    b.set_actor(b"zzzz-kernel")
    with a.transaction() as tx:
        tx.put(comms[0], "state", S.Str, json.dumps({"value": "a"}))
    with b.transaction() as tx:
        tx.put(comms[0], "state", S.Str, json.dumps({"value": "b"}))
    # a's change comes last, b's wins (same counter, higher actor): the last put is not the value
    src.merge(b)
    src.merge(a)
    before = rep.doc.get_heads()
    for dirty in pump(src, s_src, rep):
        reader.refresh(rep.doc, dirty)
    assert [c.actor_id for c in rep.doc.get_changes(before)] == [b"zzzz-kernel", b"aaaa-frontend"]
    assert not rep.linear
    got = rep.doc.get(comms[0], "state")
    assert json.loads(got[0][1]) == {"value": "b"}
    assert reader.comms["w0"].state == json.loads(got[0][1])
    assert reader.comms["w0"].writer == actor_label(parse_exid(got[1])[0])
    # from then on the values are read from the document
    with src.transaction() as tx:
        tx.put(comms[0], "state", S.Str, json.dumps({"value": 3}))
    for dirty in pump(src, s_src, rep):
        assert not (isinstance(dirty, Dirty) and dirty.current(rep.doc))
        counting = CountingDoc(rep.doc)
        reader.refresh(counting, dirty)
        assert "state" in counting.gets
    assert reader.comms["w0"].state == {"value": 3}
    assert full_view(rep.doc)[1] == [plain(c) for c in reader.ordered_comms()]


def test_a_loaded_document_is_not_taken_as_linear() -> None:
    src, comms, _ = storm_room(1)
    rep, s_src = DocReplica("notebook", 0, 3), am.SyncState()
    pump(src, s_src, rep)
    assert rep.linear
    rep.doc = am.Document.load(src.save())
    assert not rep.linear


def crafted_room() -> tuple[am.Document, DocReplica, NotebookReader]:
    src, comms, _ = storm_room(1)
    rep, reader = DocReplica("notebook", 0, 3), NotebookReader()
    pump(src, am.SyncState(), rep)
    reader.refresh(rep.doc, {ALL})
    return src, rep, reader


def test_a_change_that_reuses_op_counters_ends_the_fast_path() -> None:
    # a put on top of the heads whose op counter is lower than ops already made: automerge's
    # winner is then not the last put, so the history is not taken as linear
    src, rep, reader = crafted_room()
    obj = src.get(src.get(am.ROOT, "comms")[1], "w0")[1]
    heads = src.get_heads()
    with src.transaction() as tx:
        tx.put(obj, "state", S.Str, json.dumps({"value": "low"}))
    change = src.get_changes(heads)[0]
    low = with_start_op(change.raw_bytes, 2)
    _, dirty = rep.receive(sync_message(heads, [low]))
    reader.refresh(rep.doc, dirty)
    assert not rep.linear
    got = rep.doc.get(obj, "state")
    assert reader.comms["w0"].state == json.loads(got[0][1])
    assert full_view(rep.doc)[1] == [plain(c) for c in reader.ordered_comms()]


def test_a_predecessor_on_another_key_does_not_hide_the_value() -> None:
    # automerge hides only ops of the same key; a change naming another key's op changes nothing
    src, rep, reader = crafted_room()
    obj = src.get(src.get(am.ROOT, "comms")[1], "w0")[1]
    state_op = parse_exid(src.get(obj, "state")[1])
    heads = src.get_heads()
    with src.transaction() as tx:
        tx.put(obj, "target_name", S.Str, "other")
    raw = src.get_changes(heads)[0].raw_bytes
    head, cols, extra = split_change(raw)
    assert state_op[0] == b"runtimed"
    # one predecessor: actor 0 (runtimed), counter of the state's op (a delta from 0)
    cols[0x70], cols[0x71], cols[0x73] = bytes([0x7F, 1]), bytes([0x7F, 0]), bytes([0x7F]) + _sleb_bytes(state_op[1])
    crafted = join_change(head, cols, extra)
    assert decode_change(crafted).preds[0] == ((state_op[1], b"runtimed"),)
    _, dirty = rep.receive(sync_message(heads, [crafted]))
    reader.refresh(rep.doc, dirty)
    assert rep.doc.get(obj, "state") is not None
    assert full_view(rep.doc)[1] == [plain(c) for c in reader.ordered_comms()]


def test_a_put_that_leaves_a_conflict_still_shows_the_highest_op() -> None:
    # a put on top of the heads that names no predecessor: both values stay, the newer wins
    src, rep, reader = crafted_room()
    obj = src.get(src.get(am.ROOT, "comms")[1], "w0")[1]
    heads = src.get_heads()
    with src.transaction() as tx:
        tx.put(obj, "state", S.Str, json.dumps({"value": "no preds"}))
    raw = src.get_changes(heads)[0].raw_bytes
    head, cols, extra = split_change(raw)
    cols[0x70] = bytes([0x7F, 0])
    cols.pop(0x71, None)
    cols.pop(0x73, None)
    crafted = join_change(head, cols, extra)
    assert decode_change(crafted).preds == [()]
    _, dirty = rep.receive(sync_message(heads, [crafted]))
    reader.refresh(rep.doc, dirty)
    assert reader.comms["w0"].state == json.loads(rep.doc.get(obj, "state")[0][1]) == {"value": "no preds"}
    assert full_view(rep.doc)[1] == [plain(c) for c in reader.ordered_comms()]


# --------------------------------------------------------------------------- the v4 comms document


def test_the_comms_document_reader_takes_a_storm_from_the_changes() -> None:
    src = am.Document(actor_id=b"runtimed")
    with src.transaction() as tx:
        comms = tx.put_object(am.ROOT, "comms", am.ObjType.Map)
        objs, layouts = [], []
        for k in range(3):
            o = tx.put_object(comms, f"w{k}", am.ObjType.Map)
            tx.put(o, "value", S.Int, 0)
            tx.put(o, "description", S.Str, "")
            layout = tx.put_object(o, "layout", am.ObjType.Map)
            tx.put(layout, "width", S.Str, "auto")
            objs.append(o)
            layouts.append(layout)
    rep, reader, s_src = DocReplica("comms", 0), CommsDocReader(), am.SyncState()
    pump(src, s_src, rep)
    reader.refresh(rep.doc, {ALL})
    rnd = random.Random(5)
    fast = 0
    for i in range(80):
        src.set_actor(rnd.choice(ACTORS))
        with src.transaction() as tx:
            pick = rnd.random()
            k = rnd.randrange(3)
            o = objs[k]
            if pick < 0.6:
                tx.put(o, "value", S.Int, i)
            elif pick < 0.75:
                tx.put(o, "value", S.F64, i / 2)
                tx.put(o, "description", S.Str, f"\u00e9 {i}")
            elif pick < 0.85:  # a nested object of the state
                tx.put(layouts[k], "width", S.Str, f"{i}px")
            elif pick < 0.92:
                tx.put(o, f"new{i}", S.Str, "a new key")
            elif src.get(o, "description") is not None:
                tx.delete(o, "description")
            else:
                tx.put(o, "description", S.Str, "back")
        for dirty in pump(src, s_src, rep):
            counting = CountingDoc(rep.doc)
            reader.refresh(counting, dirty)
            fast += counting.values_calls == 0
        full = CommsDocReader()
        full.refresh(rep.doc, {ALL})
        assert reader.comms == full.comms
    assert rep.linear and fast >= 30
