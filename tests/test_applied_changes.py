"""The changes a replica learns from a sync message itself are exactly `get_changes(before)`.

Every message is fed to two replicas: one that reads the applied changes from the message
(checked against automerge after each message: same hashes, same attributes, deps first) and
one that always asks automerge. Their replies, dirty paths, values, problems, actor counts
and reader output must be the same."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from automerge import core as am
from test_change_values import storm_room
from test_core_document import sync_message, views

from inspector.document import AppliedChange, Dirty, DocReplica, NotebookReader, SyncSummary

S = am.ScalarType


class Checked(DocReplica):
    """Reads the applied changes from the message and checks them against automerge."""

    def _applied_from(self, summary: SyncSummary, before: list[bytes], after: list[bytes],
                      seqs: dict[bytes, tuple[int, bytes]]) -> list[AppliedChange] | None:
        got = super()._applied_from(summary, before, after, seqs)
        if got is None:
            return None
        truth = {c.hash: c for c in self.doc.get_changes(before)}
        assert [c.hash for c in got if c.hash in truth] == [c.hash for c in got]
        assert len(got) == len(truth)
        seen: set[bytes] = set()
        for c in got:
            t = truth[c.hash]
            assert (c.raw_bytes, c.actor_id, c.seq, list(c.deps), c.start_op, c.max_op) == \
                (bytes(t.raw_bytes), t.actor_id, t.seq, list(t.deps), t.start_op, t.max_op)
            assert all(d in seen or d not in truth for d in c.deps)  # deps come first
            seen.add(c.hash)
        return got


class Fallback(DocReplica):
    def _applied_from(self, *args: Any) -> None:
        return None


def same_dirty(a: set, b: set) -> None:
    assert type(a) is type(b) and set(a) == set(b)
    if isinstance(a, Dirty):
        assert (a.heads, a._last, a._sources) == (b.heads, b._last, b._sources)


class Pair:
    def __init__(self, depth: int = 3) -> None:
        self.rep, self.ref = Checked("notebook", 0, depth), Fallback("notebook", 0, depth)
        self.readers = NotebookReader(), NotebookReader()
        self.fed = 0

    def feed(self, body: bytes) -> bytes | None:
        (r1, d1), (r2, d2) = self.rep.receive(body), self.ref.receive(body)
        assert r1 == r2
        same_dirty(d1, d2)
        assert self.rep.linear == self.ref.linear
        assert self.readers[0].refresh(self.rep.doc, d1) == self.readers[1].refresh(self.ref.doc, d2)
        assert views(self.readers[0]) == views(self.readers[1])
        assert [p.to_json() for p in self.rep.take_problems()] == [p.to_json() for p in self.ref.take_problems()]
        assert self.rep.unapplied.keys() == self.ref.unapplied.keys()
        self.fed += 1
        if self.fed % 3 == 0:  # now and then: between calls the counts are carried by receive
            assert self.rep.change_actors() == self.ref.change_actors()
        if self.fed % 4 == 0:  # a checkpoint now and then: the appended changes in between
            saved_loads_back(self.rep)
        return r1

    def done(self) -> None:
        assert self.rep.change_actors() == self.ref.change_actors()
        assert self.rep.heads == self.ref.heads
        for r in (self.rep, self.ref):
            saved_loads_back(r)


def saved_loads_back(rep: DocReplica) -> am.Document:
    """What a checkpoint holds of `rep` loads into the very same document."""
    loaded = am.Document.load(rep.saved())
    assert loaded.get_heads() == rep.doc.get_heads()
    assert {c.hash for c in loaded.get_changes([])} == {c.hash for c in rep.doc.get_changes([])}
    return loaded


def pump(src: am.Document, s_src: am.SyncState, pair: Pair) -> None:
    for _ in range(50):
        m = src.generate_sync_message(s_src)
        if m is None:
            return
        reply = pair.feed(m.encode())
        if reply is None:
            return
        src.receive_sync_message(s_src, am.Message.decode(reply))
    raise AssertionError("sync did not converge")


def write(doc: am.Document, objs: list[bytes], rnd: random.Random, n: int = 1) -> None:
    for _ in range(n):
        with doc.transaction() as tx:
            for _ in range(rnd.randrange(1, 3)):
                tx.put(rnd.choice(objs), "state", S.Str, json.dumps({"value": rnd.randrange(1000)}))


def joined() -> tuple[am.Document, list[bytes], am.SyncState, Pair]:
    src, comms, _ = storm_room(3)
    src.set_actor(b"runtimed")
    pair, s_src = Pair(), am.SyncState()
    pump(src, s_src, pair)
    return src, comms, s_src, pair


def test_one_writer_is_read_from_the_messages() -> None:
    src, comms, s_src, pair = joined()
    rnd = random.Random(1)
    for i in range(30):
        write(src, comms, rnd, 1 + i % 3)
        pump(src, s_src, pair)
    pair.done()
    assert pair.rep.linear
    assert pair.rep.applied_read == {"message": 30, "automerge": 1}  # the join asks automerge


def test_two_alternating_writers_are_read_from_the_messages() -> None:
    src, comms, s_src, pair = joined()
    rnd = random.Random(2)
    for i in range(30):
        src.set_actor((b"kernel", b"frontend")[i % 2])
        write(src, comms, rnd)
        pump(src, s_src, pair)
    pair.done()
    assert pair.rep.applied_read["automerge"] == 1
    # each change names the other writer's change (the head) and its own writer's previous one
    assert any(len(c.deps) == 2 for c in pair.rep.doc.get_changes([]))


def test_merged_forks() -> None:
    src, comms, s_src, pair = joined()
    rnd = random.Random(3)
    for i in range(10):
        a, b = src.fork(), src.fork()
        a.set_actor(b"fork-a-%d" % i)
        b.set_actor(b"fork-b")
        write(a, comms, rnd, 2)
        write(b, comms, rnd, 1 + i % 2)
        write(src, comms, rnd)
        src.merge(a)
        if i % 2:
            pump(src, s_src, pair)
        src.merge(b)
        pump(src, s_src, pair)
    pair.done()
    assert not pair.rep.linear
    assert pair.rep.applied_read["message"] > 0


@pytest.mark.parametrize("seed", range(12))
def test_random_histories(seed: int) -> None:
    rnd = random.Random(seed)
    src, comms, s_src, pair = joined()
    writers = [b"runtimed", b"kernel", b"frontend"]
    forks: list[am.Document] = []
    for _ in range(40):
        r = rnd.random()
        if r < 0.5:
            src.set_actor(rnd.choice(writers))
            write(src, comms, rnd, rnd.randrange(1, 4))
        elif r < 0.7:
            f = src.fork()
            f.set_actor(rnd.choice(writers[1:]) + b"-%d" % len(forks))  # one fork per actor: automerge
            # refuses two changes with one actor and seq
            forks.append(f)
        elif forks:
            f = rnd.choice(forks)
            write(f, comms, rnd, rnd.randrange(1, 3))
            if rnd.random() < 0.5:
                src.merge(f)
        if rnd.random() < 0.6:
            pump(src, s_src, pair)
    pump(src, s_src, pair)
    pair.done()
    assert pair.rep.applied_read["message"] > 0


def test_a_compressed_change_falls_back() -> None:
    src, comms, s_src, pair = joined()
    with src.transaction() as tx:
        tx.put(comms[0], "state", S.Str, json.dumps({"value": "x" * 4000}))
    ch = src.get_changes(pair.rep.doc.get_heads())[0]
    packed = bytes(ch.bytes)
    assert packed[8] == 2  # automerge compressed it
    pair.feed(sync_message(src.get_heads(), [packed]))
    assert pair.rep.heads == tuple(h.hex() for h in src.get_heads())
    assert pair.rep.applied_read["automerge"] == 2
    write(src, comms, random.Random(4))
    pump(src, s_src, pair)
    pair.done()
    assert pair.rep.applied_read["automerge"] == 2


def test_changes_already_held_are_told_from_new_ones() -> None:
    src, comms, s_src, pair = joined()
    rnd = random.Random(5)
    held = pair.rep.doc.get_heads()
    old = [bytes(c.raw_bytes) for c in src.get_changes([])]
    write(src, comms, rnd)
    new = bytes(src.get_changes(held)[0].raw_bytes)
    # the head it follows, resent with it: skipped
    pair.feed(sync_message(src.get_heads(), [old[-1], new]))
    assert pair.rep.applied_read == {"message": 1, "automerge": 1}
    # an older change resent with a new one: automerge says which were new
    held = pair.rep.doc.get_heads()
    write(src, comms, rnd)
    new = bytes(src.get_changes(held)[0].raw_bytes)
    pair.feed(sync_message(src.get_heads(), [old[0], new]))
    assert pair.rep.applied_read == {"message": 1, "automerge": 2}
    # only held changes: nothing moves
    pair.feed(sync_message(src.get_heads(), old[-3:]))
    pump(src, s_src, pair)
    pair.done()


def test_a_change_whose_dependency_is_missing() -> None:
    src, comms, s_src, pair = joined()
    rnd = random.Random(6)
    base = src.get_heads()
    a = src.fork()
    a.set_actor(b"kernel")
    write(a, comms, rnd, 2)
    a1, a2 = (bytes(c.raw_bytes) for c in a.get_changes(base))
    write(src, comms, rnd)
    b1 = bytes(src.get_changes(base)[0].raw_bytes)
    # a2 without a1: automerge keeps it queued, b1 is applied
    both = src.get_heads() + a.get_heads()  # advertised: not converged, so a2 is reported
    pair.feed(sync_message(both, [a2, b1]))
    assert pair.rep.applied_read == {"message": 1, "automerge": 1}
    assert len(pair.rep.unapplied) == 1
    # a1 arrives: automerge applies it and the queued a2, which this message does not carry
    pair.feed(sync_message(both, [a1]))
    assert pair.rep.applied_read["automerge"] == 2
    assert not pair.rep.unapplied
    src.merge(a)
    pump(src, s_src, pair)
    pair.done()


def test_a_change_queued_earlier_is_named_by_one_the_message_applies() -> None:
    src, comms, s_src, pair = joined()
    rnd = random.Random(7)
    base = src.get_heads()
    a = src.fork()
    a.set_actor(b"kernel")
    write(a, comms, rnd, 3)
    a1, a2, a3 = (bytes(c.raw_bytes) for c in a.get_changes(base))
    pair.feed(sync_message(a.get_heads(), [a2]))  # queued
    pair.feed(sync_message(a.get_heads(), [a1, a3]))  # a1 lets a2 in, a3 follows a2
    assert pair.rep.applied_read["automerge"] == 2
    src.merge(a)
    pump(src, s_src, pair)
    pair.done()


def test_a_loaded_document_asks_automerge() -> None:
    src, comms, s_src, pair = joined()
    for r in (pair.rep, pair.ref):
        r.doc = am.Document.load(r.doc.save())
    write(src, comms, random.Random(8))
    pump(src, s_src, pair)
    pair.done()
    assert pair.rep.applied_read["automerge"] == 2
