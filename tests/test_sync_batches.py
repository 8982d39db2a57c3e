"""Sync messages read together are applied together (`SessionCore.receive_batch`), with the
same outcome as one by one: replayed from the real 2.9.0 corpus both ways, the room, the
replicas' heads, the frames logged and the verdicts agree; a malformed message in a batch is
still reported on its own."""

from __future__ import annotations

from typing import Any

import pytest

from inspector.document import DocError, combine_sync_messages, parse_sync_message
from inspector.errors import InspectorError
from tests.test_verdicts_corpus import CAPTURED, Replay


def _grouped(r: Replay) -> Replay:
    """Like Replay.run, but each run of consecutive frames goes in as one batch at the time of
    its last frame (as a session that fell behind reads them)."""
    core = r.core
    batch: list[bytes] = []
    t_batch = 0.0

    def flush() -> None:
        for _ in core.receive_batch(batch, t_batch):
            pass
        r._collect(t_batch)
        batch.clear()

    end = 0.0
    for rec in r.inputs:
        t = rec["t"]
        if rec["op"] == "receive":
            batch.append(bytes.fromhex(rec["hex"]))
            t_batch = end = t
            continue
        if batch:
            flush()
        r._until(t)
        if rec["op"] == "begin":
            core.begin(rec["protocol_version"], t=t)
        elif rec["op"] == "bootstrap":
            core.bootstrap(bytes.fromhex(rec["hex"]), t)
        elif rec["op"] == "kernel_comm":
            core.kernel_comm(rec["msg_type"], rec["content"], [bytes.fromhex(b) for b in rec["buffers"]],
                             t, rec.get("msg_id"))
        elif rec["op"] == "kernel_event":
            core.kernel_event(rec["what"], rec["payload"], t)
        r._collect(t)
        end = t
    if batch:
        flush()
    r._until(end + 5.0)
    r._collect(end + 5.0)
    return r


def _room(r: Replay) -> dict[str, Any]:
    snap = r.core.snapshot()
    return {
        "comms": [(c.comm_id, c.seq, c.model_name, c.state, c.outputs) for c in snap.comms],
        "cells": [(c.id, c.cell_type, c.source) for c in snap.cells],
        "heads": {ft: rep.heads for ft, rep in r.core.replicas.items()},
        "frames_in": r.core.log.frames_in,
        "verdicts": sorted((d.comm_id, d.kind) for d in r.failing()),
    }


@pytest.mark.parametrize("name", CAPTURED)
def test_a_batch_ends_where_one_by_one_ends(name: str) -> None:
    one = Replay(name).run()
    many = _grouped(Replay(name))
    assert _room(many) == _room(one)
    # the event that reports a batch's changes names every frame it took them from
    batched = [e for e in many.core.log.events() if e.kind == "doc_changed" and e.data.get("frame_seqs")]
    assert all(len(e.data["frame_seqs"]) > 1 for e in batched)
    if name in ("widgets_300", "interact"):  # sessions with sync frames back to back
        assert batched


def _sync_frames(name: str) -> list[bytes]:
    r = Replay(name).run()
    sync = set(r.core.profile.doc_types)
    return [bytes.fromhex(rec["hex"]) for rec in r.inputs
            if rec["op"] == "receive" and bytes.fromhex(rec["hex"])[0] in sync]


def test_combining_keeps_every_change_and_the_last_heads() -> None:
    frames = _sync_frames("widgets_300")
    by_type: dict[int, list[bytes]] = {}
    for f in frames:
        by_type.setdefault(f[0], []).append(f[1:])
    ft, bodies = max(by_type.items(), key=lambda kv: sum(len(parse_sync_message(b).changes) for b in kv[1]))
    combined, summary = combine_sync_messages(bodies)
    again = parse_sync_message(combined)
    assert again == summary
    assert again.heads == parse_sync_message(bodies[-1]).heads
    assert again.changes == tuple(c for b in bodies for c in parse_sync_message(b).changes)
    assert len(again.changes) > 1


def _combined(r: Replay) -> list[Any]:
    return [e for e in r.core.log.events() if e.data.get("frame_seqs")]


# claims five heads in no bytes (our reading rejects it); a change chunk whose bytes are not a
# change (our reading takes it, automerge's decoder does not)
MALFORMED = {"truncated": b"\x42\x05", "not_a_change": b"\x42\x00\x00\x00\x01\x04junk"}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_message_in_a_batch_is_reported_alone(kind: str) -> None:
    frames = _sync_frames("widgets_300")
    good = frames[-1]
    with pytest.raises(DocError):
        combine_sync_messages([good[1:], MALFORMED[kind]])
    outcome = []
    for batched in (False, True):
        r = Replay("widgets_300").run()
        before = len(list(r.core.log.events()))
        bad = bytes([good[0]]) + MALFORMED[kind]
        raised: type | None = None  # a protocol error ends the connection, a content error does not
        try:
            if batched:
                for _ in r.core.receive_batch([good, bad], r.end):
                    pass
            else:
                r.core.receive(good, r.end)
                r.core.receive(bad, r.end)
        except InspectorError as exc:
            raised = type(exc)
        errs = [e for e in list(r.core.log.events())[before:] if e.kind == "error"]
        # the error names the frame that carried the bad bytes, and those bytes
        outcome.append((raised, errs[-1].data["size"], errs[-1].data.get("hex", bad[-4:].hex()),
                        errs[-1].data["frame_seq"] == r.core.log.frames_in))
        assert not _combined(r)  # taken one by one, not combined
    assert outcome[0] == outcome[1]
    if kind == "truncated":  # the message cannot be read: the connection starts over
        assert outcome[0] == (DocError, len(bad), bad.hex(), True)
    else:  # one change that is not a change: reported as corrupt, the session goes on
        assert outcome[0] == (None, 4, b"junk".hex(), True)
        assert "not an automerge chunk" in errs[-1].summary
