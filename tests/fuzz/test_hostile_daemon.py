"""A hostile daemon on a real Unix socket: each malformed input the decoders refuse, sent inside
well-formed frames to a real session. Content errors are recorded and the session stays live;
a sync message Automerge cannot take ends the connection with exit code 8 (the GUI reconnects).
Never a traceback, never a Python or Rust exception of anyone else's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import cbor2
import pytest
from scripted_daemon import ScriptedDaemon, build_doc
from test_core_document import nested_map_doc, sync_message, two_changes
from test_core_session import LAYOUT, SLIDER
from waiting import wait_until

from inspector import events as ev
from inspector.document import TOO_DEEP
from inspector.errors import EXIT_BAD_FRAME, BadFrame
from inspector.session import LIVE, PeerSession, SessionConfig


@pytest.fixture
def sock_path() -> Any:
    d = tempfile.mkdtemp(prefix="rti-", dir="/tmp")
    yield os.path.join(d, "rt.sock")
    with contextlib.suppress(OSError):
        os.rmdir(d)


@contextlib.asynccontextmanager
async def attached(daemon: ScriptedDaemon) -> AsyncIterator[PeerSession]:
    session = PeerSession(SessionConfig(daemon.path, daemon.notebook_id))
    async with session.running():
        await session.wait_settled(0.15, 10)
        yield session


def errors_of(s: PeerSession) -> list[str]:
    return [e.summary for e in s.log.events() if e.kind == ev.ERROR]


DEEP_BROADCAST = (b'{"event":"comm","msg_type":"comm_msg","content":{"comm_id":"sl","data":'
                  + b"[" * 1000 + b"]" * 1000 + b"}}")
HOSTILE_BROADCASTS = {
    "json_1000_deep": DEEP_BROADCAST,
    "buffers_300": b'{"event":"comm","msg_type":"comm_msg","content":{"comm_id":"sl","data":{}},"buffers":[[300]]}',
    "utf8_unknown_key": b'{"event":"kernel_status","status":"busy","cell_id":null,"\xff\xfe":1}',
}


@pytest.mark.parametrize("case", sorted(HOSTILE_BROADCASTS))
async def test_malformed_broadcast_content_is_recorded_and_the_session_goes_on(sock_path: str, case: str) -> None:
    doc = build_doc([], schema=3, comms={"sl": SLIDER, "lay": LAYOUT})
    async with ScriptedDaemon(sock_path, doc) as d, attached(d) as s:
        await d.broadcast(HOSTILE_BROADCASTS[case])
        await d.broadcast({"event": "kernel_status", "status": "idle", "cell_id": None})
        await wait_until(lambda: s.kernel_state.get("status") == "idle", "the broadcast after the hostile one")
        assert s.state == LIVE and s.error is None
        assert any("broadcast with" in e and "kept, ignored" in e for e in errors_of(s)), errors_of(s)


@pytest.mark.parametrize("body", [
    cbor2.dumps({"type": "snapshot", "peer_id": "d", "peers": 5}),
    cbor2.dumps({"type": "snapshot", "peer_id": "d", "peers": [{"peer_id": "a", "channels": 5}]}),
    b"\xa2\x64type\x66update\x67peer_id\xf7",  # peer_id: undefined
    b"\xa1\x64type" + b"\x81" * 3000 + b"\x00",
], ids=["peers_5", "channels_5", "undefined", "deep"])
async def test_malformed_presence_is_recorded_and_the_session_goes_on(sock_path: str, body: bytes) -> None:
    doc = build_doc([], schema=3, comms={"sl": SLIDER})
    async with ScriptedDaemon(sock_path, doc) as d, attached(d) as s:
        await d.send_typed(4, body)
        await d.broadcast({"event": "kernel_status", "status": "idle", "cell_id": None})
        await wait_until(lambda: s.kernel_state.get("status") == "idle", "the broadcast after the presence")
        assert s.state == LIVE and s.error is None


async def test_a_document_nested_990_deep_is_shown_truncated_not_crashed(sock_path: str) -> None:
    async with ScriptedDaemon(sock_path, nested_map_doc(990)) as d, attached(d) as s:
        state = s.snapshot().comms[0].state
        for _ in range(100):
            state = state["k"]
        assert state == TOO_DEEP and s.state == LIVE


async def test_a_sync_message_that_makes_automerge_panic_ends_the_connection_with_exit_8(sock_path: str) -> None:
    _, c1, _ = two_changes()
    bad = sync_message([], [c1], have=[bytes([1, 0, 7])])

    async def hostile(daemon: ScriptedDaemon, peer: Any) -> None:
        await asyncio.sleep(0.3)
        await daemon.send_typed(0, bad)

    doc = build_doc([], schema=3, comms={"sl": SLIDER})
    async with ScriptedDaemon(sock_path, doc, after_join=hostile) as d:
        session = PeerSession(SessionConfig(d.path, d.notebook_id))
        with pytest.raises(BadFrame) as exc:
            await asyncio.wait_for(session.run(), 10)
        assert exc.value.exit_code == EXIT_BAD_FRAME and "bloom filter" in str(exc.value)
        assert any("bloom filter" in e for e in errors_of(session))


async def test_a_change_automerge_keeps_out_is_held_by_the_replica_as_a_problem(sock_path: str) -> None:
    """The replica reports it and the session turns it into an error event naming the bytes."""
    src, c1, c2 = two_changes()

    async def hostile(daemon: ScriptedDaemon, peer: Any) -> None:
        await daemon.send_typed(0, sync_message(src.get_heads(), [c2]))

    doc = build_doc([], schema=3, comms={"sl": SLIDER})
    async with ScriptedDaemon(sock_path, doc, after_join=hostile) as d, attached(d) as s:
        rep = s.replicas[0]
        event = await wait_until(lambda: next((e for e in s.log.events() if "problem" in e.data), None),
                                 "the unapplied change to be reported")
        problem = event.data["problem"]
        assert problem["kind"] == "unapplied" and event.data["size"] == len(c2)
        assert problem["change_hash"] not in rep.heads
        assert s.state == LIVE  # a content problem: the session goes on


def losing(daemon_ref: list[ScriptedDaemon], connections: set[int]) -> Any:
    """A sync filter that drops, from the daemon's messages on the given connections (0: the
    first), the change `daemon_ref[0].lost` names, after the daemon's sync state has counted it
    sent: a change lost on the way, which automerge's daemon side never sends again there."""
    from inspector.document import change_hash, chunks, parse_sync_message

    def fn(peer: Any, body: bytes) -> bytes:
        d = daemon_ref[0]
        lost = getattr(d, "lost", None)
        if lost is None or d.peers.index(peer) not in connections:
            return body
        summary = parse_sync_message(body)
        every = [c for entry in summary.changes for c in chunks(entry)]  # an entry may hold several
        kept = [c for c in every if change_hash(c) != lost]
        return body if len(kept) == len(every) else sync_message(list(summary.heads), kept)

    return fn


@contextlib.asynccontextmanager
async def losing_room(sock_path: str, connections: set[int], rerequest_after_s: float
                      ) -> AsyncIterator[tuple[ScriptedDaemon, PeerSession]]:
    """A slider room whose daemon loses `daemon.lost` on the given connections, and a session
    attached to it, settled."""
    ref: list[ScriptedDaemon] = []
    doc = build_doc([], schema=3, comms={"sl": SLIDER, "lay": LAYOUT})
    async with ScriptedDaemon(sock_path, doc, sync_filter=losing(ref, connections)) as d:
        ref.append(d)
        session = PeerSession(SessionConfig(d.path, d.notebook_id, rerequest_after_s=rerequest_after_s))
        async with session.running():
            await session.wait_settled(0.15, 10)
            yield d, session


async def slider_moves(d: ScriptedDaemon, values: tuple[int, ...], lost: int = 0) -> list[bytes]:
    """The daemon moves the slider once per value, one change each (each depending on the one
    before), marks the `lost`-th as the one to lose, and syncs them in one message; returns
    their hashes."""
    import json

    from automerge import core as am

    sl = d.doc.get(d.doc.get(am.ROOT, "comms")[1], "sl")[1]
    hashes = []
    for value in values:
        with d.doc.transaction() as tx:
            tx.put(sl, "state", am.ScalarType.Str, json.dumps({**SLIDER["state"], "value": value}))
        hashes.append(d.doc.get_heads()[0])
    d.lost = hashes[lost]  # type: ignore[attr-defined]
    for p in d.peers:
        await d.sync_peer(p)
    return hashes


async def two_slider_moves(d: ScriptedDaemon) -> tuple[bytes, bytes]:
    """Two moves synced in one message, the first lost; returns their hashes."""
    first, second = await slider_moves(d, (51, 52))
    return first, second


def slider_value(s: PeerSession) -> Any:
    """The slider's value in the snapshot; None while it shows no slider (a rejoin's fresh
    replicas before their first sync)."""
    return next((c.state.get("value") for c in s.snapshot().comms if c.comm_id == "sl"), None)


async def test_a_change_lost_on_the_way_is_re_requested_by_a_rejoin_and_the_room_converges(sock_path: str) -> None:
    async with losing_room(sock_path, {0}, 0.3) as (d, session):
        first, second = await two_slider_moves(d)
        # the second move arrives without the first: held back, reported, then asked for again
        await wait_until(lambda: len(d.peers) == 2, "a rejoin", timeout=10)
        await session.wait_for(lambda snap: slider_value(session) == 52, 10)
        events = session.log.events()
        problem = next(e for e in events if e.kind == ev.ERROR and "problem" in e.data)
        assert problem.data["problem"]["change_hash"] == second.hex() and problem.data["problem"]["kind"] == "unapplied"
        assert problem.data["decision"] == "re-request if stuck"
        rerequest = next(e for e in events if "rerequest" in e.data)
        assert rerequest.kind == ev.LIFECYCLE and rerequest.data["rerequest"] == [second.hex()]
        assert "rejoining the room" in rerequest.summary
        await session.wait_settled(0.15, 10)
        assert session.replicas[0].converged and first.hex() not in session.replicas[0].unapplied
        assert session.state == LIVE and session.error is None and len(d.peers) == 2


async def test_a_change_lost_whole_is_re_requested_once_a_later_message_comes_without_it(sock_path: str) -> None:
    """One move, its only change dropped: nothing arrives to report, only a head never reached."""
    async with losing_room(sock_path, {0}, 0.3) as (d, session):
        (lost,) = await slider_moves(d, (61,))
        await wait_until(lambda: len(d.peers) == 2, "a rejoin", timeout=10)
        await session.wait_for(lambda snap: slider_value(session) == 61, 10)
        events = session.log.events()
        assert not any(e.kind == ev.ERROR and "problem" in e.data for e in events)  # nothing came to report
        rerequest = next(e for e in events if "rerequest" in e.data)
        assert rerequest.kind == ev.LIFECYCLE and rerequest.data["rerequest"] == [lost.hex()]
        await session.wait_settled(0.15, 10)
        assert session.replicas[0].converged and session.state == LIVE and session.error is None
        assert sum(1 for e in session.log.events() if "rerequest" in e.data) == 1 and len(d.peers) == 2


async def test_a_slow_join_is_waited_for_not_taken_for_a_lost_change(sock_path: str) -> None:
    """The first message advertises the heads, the changes come a round later after 0.8 s: longer
    than the re-request delay, yet no message came without them, so nothing is re-requested."""
    doc = build_doc([], schema=3, comms={"sl": SLIDER, "lay": LAYOUT})
    async with ScriptedDaemon(sock_path, doc, reply_delay=0.8) as d:
        session = PeerSession(SessionConfig(d.path, d.notebook_id, rerequest_after_s=0.2))
        async with session.running():
            await session.wait_for(lambda snap: session.state == LIVE, 10)
            assert slider_value(session) == 50 and session.replicas[0].converged
            await session.wait_settled(0.3, 10)
            assert not any("rerequest" in e.data for e in session.log.events())
            assert len(d.peers) == 1 and session.rejoin is None


async def test_a_change_that_comes_back_bad_is_asked_for_once_and_the_room_stays_short_of_the_heads(
        sock_path: str) -> None:
    async with losing_room(sock_path, {0, 1, 2}, 0.2) as (d, session):
        _, second = await two_slider_moves(d)
        again = await wait_until(lambda: next((e for e in session.log.events()
                                               if e.kind == ev.ERROR and e.data.get("rerequested")), None),
                                 "the change reported again after the rejoin", timeout=10)
        assert "again after it was re-requested" in again.summary and again.data["decision"] == "continue"
        assert again.data["problem"]["change_hash"] == second.hex()
        # nothing more is scheduled: no second re-request, no second rejoin
        assert session._stuck_at is None and session.rejoin is None and len(d.peers) == 2
        assert sum(1 for e in session.log.events() if "rerequest" in e.data) == 1
        # judged against the daemon's heads: never called complete while short of them
        assert slider_value(session) == 50 and session.state != LIVE
        assert any("not at the daemon heads" in m for m in session.missing())
