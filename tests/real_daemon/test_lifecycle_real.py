"""Staying attached to the real runtimed 2.9.0 and knowing the room's true state: the read-only
keep-alive, the room evicted by `shutdown_notebook`, the kernel stopped and restarted (and the
`auto` kernel tap following the restart). The 5-minute idle deadline is an opt-in slow test
(`RUNTIMED_SLOW_TESTS=1`): runtimed 2.9.0 takes it from its config only (`idle_peer_timeout_ms`,
set by its own tests), never from the environment or the command line."""

from __future__ import annotations

import asyncio
import json
import os

import cbor2
import pytest
from waiting import wait_until

from inspector import events as ev
from inspector.connection import close_writer, open_channel
from inspector.divergence import DivergenceOptions
from inspector.protocol import messages as m
from inspector.protocol.framing import FrameType, encode_frame, read_frame
from inspector.session import LIVE, PeerSession, SessionConfig
from real_daemon.conftest import RoomDriver

SYNC_TYPES = {0x00, 0x05, 0x06, 0x09, 0x0A}
HEARTBEAT = {"type": "heartbeat", "peer_id": "inspector"}


@pytest.fixture()
def room(real_socket):
    drv = RoomDriver(real_socket)
    try:
        drv.notebook_id = drv.call(op="create")["notebook_id"]
        res = drv.call(op="run", source="import ipywidgets as w\ns = w.IntSlider(value=3)\ndisplay(s)")
        assert res["success"], res
        yield drv
    finally:
        drv.close()


async def start(s: PeerSession) -> asyncio.Task:
    task = asyncio.create_task(s.run_forever(retry_initial=0.5, retry_max=2.0))
    await s.wait_settled(0.3, 60)
    return task


async def finish(s: PeerSession, task: asyncio.Task) -> None:
    await s.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def sent_non_sync(s: PeerSession) -> list[tuple[int, bytes]]:
    return [(f.frame_type, f.body[1:]) for f in s.log.frames()
            if f.direction == "out" and f.frame_type is not None and f.frame_type not in SYNC_TYPES]


async def test_keepalive_is_a_heartbeat_other_peers_never_see(real_socket, room):
    a = PeerSession(SessionConfig(real_socket, room.notebook_id, keepalive_s=0.5))
    b = PeerSession(SessionConfig(real_socket, room.notebook_id))
    ta, tb = await start(a), await start(b)
    try:
        peers_before = set(b.presence_peers)
        await wait_until(lambda: a.keepalives_sent >= 4, "four keep-alives", 20, poll=0.05)
        await room.acall(op="run", source="s.value = 4")  # the room still answers both
        await wait_until(lambda: all(c.state.get("value") == 4 for c in b.snapshot().comms
                                     if c.model_name == "IntSliderModel"), "value 4 in b", 20, poll=0.05)
        # what the keep-alive sends, and nothing else beyond sync replies
        out = sent_non_sync(a)
        assert len(out) >= 4 and {ft for ft, _ in out} == {FrameType.PRESENCE}
        assert all(cbor2.loads(body) == HEARTBEAT for _, body in out)
        # another peer in the room hears nothing of it: the daemon stores no presence for a peer
        # that never published any, and relays no heartbeat (what b hears is the daemon's own
        # kernel_state presence, from the execution above)
        heard = [e.data["presence"] for e in b.log.events() if e.kind == ev.PRESENCE]
        assert not any(p.get("type") == "heartbeat" for p in heard), heard
        for pid in set(b.presence_peers) - peers_before:
            assert set(b.presence_peers[pid]) <= {"kernel_state"}, b.presence_peers[pid]
        assert not any("inspector" in str(v) for v in b.presence_peers.values())
        # and the documents hold no change of ours
        label = a.capabilities["actor_label"]
        for doc in a.snapshot().documents:
            assert label not in doc.actors, doc.name
        assert a.state == LIVE and a.connections == 1
    finally:
        await finish(a, ta)
        await finish(b, tb)


async def shutdown_notebook(socket_path: str, notebook_id: str) -> dict:
    """What another client does to evict a room (the inspector never sends this)."""
    reader, writer = await open_channel(socket_path, 4, m.Pool())
    try:
        writer.write(encode_frame(json.dumps({"type": "shutdown_notebook", "notebook_id": notebook_id}).encode()))
        await writer.drain()
        return json.loads(await asyncio.wait_for(read_frame(reader), 30))
    finally:
        await close_writer(writer)


async def test_a_room_evicted_by_shutdown_notebook_is_shown_gone_not_live(real_socket, room):
    s = PeerSession(SessionConfig(real_socket, room.notebook_id, divergence=DivergenceOptions()))
    task = await start(s)
    try:
        assert s.snapshot().lifecycle.room == "open"
        resp = await shutdown_notebook(real_socket, room.notebook_id)
        assert resp.get("found") is True, resp
        # runtimed keeps the evicted room's peers connected: the session's room check finds it gone
        snap = await s.wait_for(lambda sn: sn.lifecycle.room == "gone" and sn.connection != LIVE, 30)
        assert snap.lifecycle.daemon == "reconnecting" and snap.lifecycle.kernel == "shutdown"
        assert snap.lifecycle.reconnect_in_s is not None or s.attempts >= 1
        assert any(e.kind == ev.LIFECYCLE and e.data.get("what") == "room_gone" for e in s.log.events())
    finally:
        await finish(s, task)


async def test_kernel_stop_and_restart_are_lifecycle_and_the_auto_tap_follows(real_socket, room):
    s = PeerSession(SessionConfig(real_socket, room.notebook_id,
                                  divergence=DivergenceOptions(kernel_connection="auto")))
    task = await start(s)
    try:
        await wait_until(lambda: s.divergence.tap_path is not None, "the auto tap", 30, poll=0.05)
        first_tap = s.divergence.tap_path
        await room.acall(op="restart")
        snap = await s.wait_for(lambda sn: sn.lifecycle.kernel_restarts >= 1 and sn.lifecycle.kernel == "idle", 60)
        await wait_until(lambda: s.divergence.tap_path not in (None, first_tap), "the tap on the new kernel", 30,
                         poll=0.05)
        whats = [e.data.get("to") for e in s.log.events() if e.kind == ev.LIFECYCLE and e.target == "kernel"]
        assert "idle" in whats and any(w not in ("idle", "busy") for w in whats), whats
        await room.acall(op="stop_runtime")
        snap = await s.wait_for(lambda sn: sn.lifecycle.kernel not in ("idle", "busy", None), 60)
        assert snap.connection == LIVE  # the room stays; its kernel went
        await wait_until(lambda: s.divergence.tap_path is None, "the tap dropped with the kernel", 30, poll=0.05)
    finally:
        await finish(s, task)


@pytest.mark.timeout(480)  # past the daemon's 300 s deadline, beyond the suite's per-test limit
@pytest.mark.skipif(not os.environ.get("RUNTIMED_SLOW_TESTS"), reason="opt-in slow test (RUNTIMED_SLOW_TESTS=1): "
                    "waits past runtimed's 300 s idle-peer deadline")
async def test_past_the_idle_deadline_the_keepalive_keeps_the_session_and_without_it_the_daemon_drops_it(
        real_socket, room):
    kept = PeerSession(SessionConfig(real_socket, room.notebook_id))  # the default interval
    bare = PeerSession(SessionConfig(real_socket, room.notebook_id, keepalive_s=None))
    tk, tb = await start(kept), await start(bare)
    try:
        await wait_until(lambda: bare.connections >= 2 or bare.attempts >= 1, "the daemon to drop the bare peer",
                         360, poll=1.0)
        assert kept.state == LIVE and kept.connections == 1 and kept.keepalives_sent >= 4
        assert any("closed the connection" in e.summary for e in bare.log.events() if e.kind == ev.ERROR)
    finally:
        await finish(kept, tk)
        await finish(bare, tb)
