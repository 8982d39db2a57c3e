"""What a checkpoint holds of a replica (`DocReplica.saved`): a full save with the raw changes
applied since appended, a new full save forked off once they outweigh it, and every form loads
into the very document the replica holds."""

from __future__ import annotations

import os
import random
import time

import pytest
from automerge import core as am
from test_applied_changes import joined, pump, saved_loads_back, write
from test_core_document import sync_message

import inspector.saved_form as saved_form
from inspector.saved_form import ForkedSave


def wait_for(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def storm(n: int, seed: int):
    src, comms, s_src, pair = joined()
    rnd = random.Random(seed)
    for _ in range(n):
        write(src, comms, rnd)
        pump(src, s_src, pair)
        yield src, comms, pair.rep


def test_a_checkpoint_appends_the_changes_since_the_last_full_save(monkeypatch) -> None:
    monkeypatch.setattr(saved_form, "CHEAP_SAVE_S", 0.0)
    src, comms, s_src, pair = joined()
    rep, rnd = pair.rep, random.Random(9)
    h0 = rep.doc.get_heads()
    first = rep.saved()
    assert rep.saved_form.full_saves == 1
    for _ in range(60):
        write(src, comms, rnd)
        pump(src, s_src, pair)
    saved = rep.saved()
    # the full save with the 60 changes' own bytes after it, not a second save of any kind
    assert saved.startswith(first)
    assert len(saved) - len(first) == sum(len(c.raw_bytes) for c in rep.doc.get_changes(h0))
    assert (rep.saved_form.full_saves, rep.saved_form.forked_saves) == (1, 0)
    loaded = saved_loads_back(rep)
    assert loaded.get(comms[0], "state") == rep.doc.get(comms[0], "state")


@pytest.mark.skipif(not saved_form.FORK_SAVES, reason="full saves are forked on Linux only")
def test_once_the_appended_changes_outweigh_the_full_save_it_is_saved_again_in_a_child(monkeypatch) -> None:
    monkeypatch.setattr(saved_form, "MIN_FULL_SAVE", 0)
    monkeypatch.setattr(saved_form, "CHEAP_SAVE_S", 0.0)  # every save counts as slow: the fork path
    rep = None
    for i, (_, _, rep) in enumerate(storm(200, 10)):
        rep.saved()
        if i % 10 == 0:
            saved_loads_back(rep)
    form = rep.saved_form
    assert form.full_saves == 1  # only the first: every later full save ran in a child
    assert form.forked_saves > 3
    if form._pending is not None:
        wait_for(lambda: form._pending.done)
    saved = rep.saved()
    # just after a full save came back, the form is that save plus the few changes since
    assert len(saved) <= 2 * len(rep.doc.save()) + 2000
    saved_loads_back(rep)


def test_a_document_quick_to_save_is_saved_inline_once_the_changes_outweigh_it(monkeypatch) -> None:
    """A small room (the usual case): its checkpoints stay within twice a full save."""
    monkeypatch.setattr(saved_form, "CHEAP_SAVE_S", 60.0)  # every save counts as quick, however loaded the machine
    sizes, ratios = [], []
    for i, (_, _, rep) in enumerate(storm(300, 12)):
        saved = rep.saved()
        if i % 10 == 0:
            full = len(rep.doc.save())
            sizes.append(len(saved))
            ratios.append(len(saved) / full)
    form = rep.saved_form
    assert form.forked_saves == 0
    assert 3 < form.full_saves < 150  # again and again, yet not at every checkpoint
    assert max(ratios) <= 2.1, ratios  # the form within twice a full save (plus the last change)
    saved_loads_back(rep)


def test_where_it_cannot_fork_the_full_save_is_taken_inline(monkeypatch) -> None:
    monkeypatch.setattr(saved_form, "MIN_FULL_SAVE", 0)
    monkeypatch.setattr(saved_form, "CHEAP_SAVE_S", 0.0)  # every save counts as slow: the fork path
    monkeypatch.setattr(saved_form, "FORK_SAVES", False)
    sizes = []
    for _, _, rep in storm(200, 11):
        sizes.append(len(rep.saved()))
    assert rep.saved_form.forked_saves == 0
    assert 1 < rep.saved_form.full_saves < 40  # rarer as the history grows
    assert max(sizes) <= 2 * len(rep.doc.save()) + 2000
    saved_loads_back(rep)


@pytest.mark.skipif(not saved_form.FORK_SAVES, reason="full saves are forked on Linux only")
def test_a_child_that_fails_is_replaced_by_an_inline_save(monkeypatch) -> None:
    monkeypatch.setattr(saved_form, "MIN_FULL_SAVE", 0)
    monkeypatch.setattr(saved_form, "CHEAP_SAVE_S", 0.0)  # every save counts as slow: the fork path
    monkeypatch.setattr(saved_form, "_child", lambda doc, fd: os._exit(3))
    gen = storm(40, 12)
    for _, _, rep in gen:
        rep.saved()
        if rep.saved_form._pending is not None:
            break
    pending = rep.saved_form._pending
    wait_for(lambda: pending.done)
    saved_loads_back(rep)  # the failure is noticed here and the form saved inline
    assert rep.saved_form.full_saves == 2 and rep.saved_form.forked_saves == 0
    with pytest.raises(ChildProcessError):
        os.waitpid(pending.pid, os.WNOHANG)  # collected: no zombie


@pytest.mark.skipif(not saved_form.FORK_SAVES, reason="full saves are forked on Linux only")
def test_a_forked_save_holds_the_document_as_it_was_when_forked_and_cancel_collects_the_child() -> None:
    doc = am.Document()
    with doc.transaction() as tx:
        tx.put(am.ROOT, "k", am.ScalarType.Int, 1)
    heads = doc.get_heads()
    job = ForkedSave.start(doc)
    with doc.transaction() as tx:  # after the fork: not in the child's copy
        tx.put(am.ROOT, "k", am.ScalarType.Int, 2)
    wait_for(lambda: job.done)
    got = am.Document.load(job.result())
    assert got.get_heads() == heads and got.get(am.ROOT, "k")[0][1] == 1
    # a save no longer wanted: the child is stopped and collected
    slow = ForkedSave.start(doc)
    slow.cancel()
    with pytest.raises(ChildProcessError):
        os.waitpid(slow.pid, os.WNOHANG)


def test_a_document_moved_by_an_apply_that_failed_half_way_is_saved_in_full_next(monkeypatch) -> None:
    src, comms, s_src, pair = joined()
    rep = pair.rep
    rep.saved()
    held = rep.doc.get_heads()
    write(src, comms, random.Random(13))
    raw = bytes(src.get_changes(held)[0].raw_bytes)

    def fails(*args):
        raise RuntimeError("after automerge applied the message")

    monkeypatch.setattr(rep, "_applied_from", fails)
    with pytest.raises(RuntimeError):
        rep.receive(sync_message(src.get_heads(), [raw]))
    assert rep.doc.get_heads() == src.get_heads()  # the document moved, unseen by the form
    saved_loads_back(rep)
    assert rep.saved_form.full_saves == 2


def test_a_copied_replica_keeps_a_form_of_its_own(monkeypatch) -> None:
    """Time travel deep-copies replicas: a copy taken while the original's full save runs in a
    child starts a form of its own, and the original still gets its child's save."""
    import copy

    monkeypatch.setattr(saved_form, "MIN_FULL_SAVE", 0)
    monkeypatch.setattr(saved_form, "CHEAP_SAVE_S", 0.0)
    src, comms, s_src, pair = joined()
    if not saved_form.FORK_SAVES:
        pytest.skip("full saves are forked on Linux only")
    rep, rnd = pair.rep, random.Random(14)
    rep.saved()
    while rep.saved_form._pending is None:
        assert rep.saved_form.full_saves == 1  # the first, inline; the next one forks
        write(src, comms, rnd)
        pump(src, s_src, pair)
        rep.saved()
    # as replay_driver.copy_replay copies: the document forked, a fresh sync state
    twin = copy.deepcopy(rep, {id(rep.doc): rep.doc.fork(), id(rep.state): am.SyncState()})
    assert twin.saved_form._pending is None and twin.saved_form._base is None
    pending = rep.saved_form._pending
    wait_for(lambda: pending.done)  # the copy did not stop the original's child
    for _ in range(5):
        write(src, comms, rnd)
        pump(src, s_src, pair)
    for r in (rep, twin):
        assert am.Document.load(r.saved()).get_heads() == r.doc.get_heads()
    assert twin.doc.get_heads() != rep.doc.get_heads()
    assert rep.saved_form.forked_saves >= 1 and rep.saved_form.full_saves == 1
    assert twin.saved_form.full_saves == 1  # its own, inline: nothing of the original's to append to
