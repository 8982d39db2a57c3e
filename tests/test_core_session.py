"""The read-only peer against a scripted daemon on a real Unix socket (real automerge)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from automerge import core as am
from scripted_daemon import ScriptedDaemon, build_doc, put_comm
from waiting import wait_until

from inspector import events as ev
from inspector.errors import BadFrame, Closed, NotRuntimed, ProtocolMismatch, UnknownNotebook
from inspector.protocol.presence import encode_presence
from inspector.session import LIVE, PeerSession, SessionConfig

HASH = "ab" * 32

CELLS = [
    {"id": "c-b", "position": "8180", "source": "print('b')\nx = 2", "execution_count": "7",
     "outputs": [HASH, json.dumps({"output_type": "stream", "name": "stdout", "text": "b\n"})]},
    {"id": "c-a", "position": "80", "source": "# title", "cell_type": "markdown", "metadata": {"tags": ["t"]}},
    {"id": "c-tie2", "position": "8280", "source": ""},
    {"id": "c-tie1", "position": "8280", "source": "", "metadata": '{"legacy": true}'},
]

SLIDER = {"model_module": "@jupyter-widgets/controls", "model_name": "IntSliderModel",
          "state": {"_model_module": "@jupyter-widgets/controls", "_model_name": "IntSliderModel", "value": 50,
                    "layout": "IPY_MODEL_lay"}, "seq": 2}
LAYOUT = {"model_module": "@jupyter-widgets/base", "model_name": "LayoutModel",
          "state": {"_model_name": "LayoutModel", "width": None}, "seq": 0}


@pytest.fixture
def sock_path() -> Any:
    d = tempfile.mkdtemp(prefix="rti-", dir="/tmp")
    yield os.path.join(d, "rt.sock")
    with contextlib.suppress(OSError):
        os.rmdir(d)


@contextlib.asynccontextmanager
async def attached(daemon: ScriptedDaemon, settle: float = 0.15, **cfg: Any) -> AsyncIterator[PeerSession]:
    session = PeerSession(SessionConfig(daemon.path, daemon.notebook_id, **cfg))
    async with session.running():
        await session.wait_settled(settle, 10)
        yield session


async def test_v2_document_cells_in_position_order_with_tolerated_shapes(sock_path: str) -> None:
    doc = build_doc(CELLS, schema=2)
    async with ScriptedDaemon(sock_path, doc) as d, attached(d) as s:
        snap = s.snapshot()
        assert s.state == LIVE
        assert [c.id for c in snap.cells] == ["c-a", "c-b", "c-tie1", "c-tie2"]  # ties broken by id
        b = snap.cells[1]
        assert b.source == "print('b')\nx = 2" and b.execution_count == 7
        assert b.outputs[0].ref == HASH and b.outputs[0].error  # no blob server: unresolved, with the reason
        assert b.outputs[1].ref == "raw" and b.outputs[1].output_type == "stream"
        assert snap.cells[0].metadata == {"tags": ["t"]} and snap.cells[0].cell_type == "markdown"
        assert snap.cells[2].metadata == {"legacy": True} and "legacy metadata (JSON string)" in snap.cells[2].flags
        assert snap.schema_version == 2 and snap.comms == ()
        assert snap.metadata["kernelspec"]["name"] == "python3"
        assert snap.daemon.protocol_version == 2 and snap.daemon.daemon_version == "2.0.0+scripted"
        assert snap.feed.received_comm_sync is False and snap.feed.baseline == "pending"
        assert snap.heads == tuple(h.hex() for h in doc.get_heads())
        out = snap.to_json()
        assert set(out) >= {"daemon", "notebook_id", "schema_version", "heads", "cells", "metadata", "comms",
                            "feed", "kernel"}


async def test_v3_comms_and_feed_from_comm_sync_then_broadcasts(sock_path: str) -> None:
    doc = build_doc(CELLS[:1], schema=3, comms={"sl": SLIDER, "lay": LAYOUT,
                                                "bad": {"model_name": "X", "state": "{nope", "seq": 5,
                                                        "seq_int": True}})
    comm_sync = [{"comm_id": "lay", "target_name": "jupyter.widget", "state": LAYOUT["state"],
                  "model_module": "@jupyter-widgets/base", "model_name": "LayoutModel"},
                 {"comm_id": "sl", "target_name": "jupyter.widget", "state": SLIDER["state"],
                  "model_module": "@jupyter-widgets/controls", "model_name": "IntSliderModel"}]
    async with ScriptedDaemon(sock_path, doc, comm_sync=comm_sync) as d, attached(d) as s:
        snap = s.snapshot()
        assert [c.comm_id for c in snap.comms] == ["lay", "sl", "bad"]  # seq order
        bad = snap.comms[2]
        assert bad.state == "{nope" and bad.state_error and "seq stored as Int, not Uint" in bad.flags
        assert snap.comms[1].state["value"] == 50 and snap.comms[1].writer == "runtimed"
        assert snap.feed.received_comm_sync and [c.comm_id for c in snap.feed.comms] == ["lay", "sl"]
        assert snap.feed.comms[1].captured is None  # history before the join is unknown

        changed = asyncio.Event()
        s.add_listener(lambda paths: changed.set() if "comms/sl" in paths else None)
        await d.broadcast({"event": "comm", "msg_type": "comm_msg",
                           "content": {"comm_id": "sl", "data": {"method": "update", "state": {"value": 72}}},
                           "buffers": []})
        await d.change(lambda tx: tx.put(d.doc.get(d.doc.get(am.ROOT, "comms")[1], "sl")[1], "state",
                                         am.ScalarType.Str, json.dumps({**SLIDER["state"], "value": 72})))
        await asyncio.wait_for(changed.wait(), 5)
        snap = await s.wait_for(lambda sn: sn.comms[1].state["value"] == 72
                                and sn.feed.comms[1].state["value"] == 72, 5)
        assert snap.comms[1].writer == "runtimed"

        await d.broadcast({"event": "comm", "msg_type": "comm_open",
                           "content": {"comm_id": "new", "target_name": "jupyter.widget",
                                       "data": {"state": {"_model_name": "OutputModel",
                                                          "_model_module": "@jupyter-widgets/output"}}},
                           "buffers": [[1, 2, 3]]})
        await d.broadcast({"event": "comm", "msg_type": "comm_close", "content": {"comm_id": "lay", "data": {}},
                           "buffers": []})
        await d.broadcast({"event": "comm", "msg_type": "comm_msg",
                           "content": {"comm_id": "ghost", "data": {"method": "update", "state": {"a": 1}}},
                           "buffers": []})
        feed = (await s.wait_for(lambda sn: "ghost" in sn.feed.orphans, 5)).feed
        assert [c.comm_id for c in feed.comms] == ["sl", "new"]
        assert feed.comms[1].model_name == "OutputModel" and feed.comms[1].buffers == (3,)
        assert feed.comms[1].captured == ()  # opened after the join: history known
        assert feed.orphans == {"ghost": {"update": 1}}


async def test_frames_split_at_every_byte(sock_path: str) -> None:
    doc = build_doc(CELLS, schema=3, comms={"sl": SLIDER})
    comm_sync = [{"comm_id": "sl", "target_name": "jupyter.widget", "state": SLIDER["state"]}]
    async with ScriptedDaemon(sock_path, doc, comm_sync=comm_sync, split_writes=True) as d, attached(d) as s:
        snap = s.snapshot()
        assert len(snap.cells) == 4 and snap.comms[0].comm_id == "sl"
        assert snap.feed.comms[0].state["value"] == 50


async def test_unknown_events_and_presence_are_kept_not_fatal(sock_path: str) -> None:
    snapshot_presence = encode_presence({"type": "snapshot", "peer_id": "daemon", "peers": [
        {"peer_id": "p1", "peer_label": "Ana", "channels": [{"channel": "cursor",
                                                              "data": {"cell_id": "c-a", "line": 1, "column": 2}}]}]})
    doc = build_doc(CELLS[:1], schema=3, comms={})
    async with ScriptedDaemon(sock_path, doc, presence_snapshot=snapshot_presence) as d, attached(d) as s:
        await d.broadcast({"event": "brand_new_event", "x": 1})
        await d.send_typed(4, encode_presence({"type": "update", "peer_id": "p2", "channel": "focus",
                                               "data": {"cell_id": "c-a"}}))
        await d.send_typed(4, encode_presence({"type": "mystery", "peer_id": "p3"}))
        await d.send_typed(4, b"\xff\x00garbage")
        await d.broadcast(b"{not json")
        await d.broadcast({"event": "kernel_status", "status": "busy", "cell_id": "c-b"})
        await s.wait_for(lambda sn: sn.kernel.status == "busy", 5)
        kinds = [(e.kind, e.summary) for e in s.log.events()]
        assert any(k == ev.BROADCAST and "unknown broadcast event 'brand_new_event'" in t for k, t in kinds)
        assert any(k == ev.PRESENCE and "snapshot from daemon: 1 peer" in t for k, t in kinds)
        assert any(k == ev.PRESENCE and "unknown presence type 'mystery'" in t for k, t in kinds)
        assert any(k == ev.ERROR and "presence frame" in t for k, t in kinds)
        assert any(k == ev.ERROR and "invalid JSON" in t for k, t in kinds)
        assert s.presence_peers["p1"]["cursor"]["line"] == 1 and "p2" in s.presence_peers
        assert s.state == LIVE and s.snapshot().kernel.status == "busy"
        # first broadcast was not comm_sync: the feed baseline is empty, as the spec says
        assert s.snapshot().feed.baseline == "empty"


async def test_observer_never_writes_to_the_document(sock_path: str) -> None:
    doc = build_doc(CELLS, schema=3, comms={"sl": SLIDER})
    async with ScriptedDaemon(sock_path, doc) as d, attached(d) as s:
        await d.change(lambda tx: put_comm(tx, d.doc.get(am.ROOT, "comms")[1], "w2", LAYOUT))
        await s.wait_for(lambda sn: {c.comm_id for c in sn.comms} == {"sl", "w2"}, 5)
        await s.wait_settled(0.15, 5)
        actors = {ch.actor_id for ch in d.doc.get_changes([])}
        assert actors == {b"runtimed"}  # the daemon holds no change from the inspector
        peer = d.peers[0]
        assert {ft for ft, _ in peer.received} == {0}  # only sync replies: no request, no presence
        frames_out = [f for f in s.log.frames() if f.direction == "out" and f.frame_type is not None]
        assert frames_out and all(f.frame_type == 0 for f in frames_out)


async def test_incremental_refresh_rereads_only_what_changed(sock_path: str) -> None:
    doc = build_doc(CELLS, schema=3, comms={"sl": SLIDER, "lay": LAYOUT})
    async with ScriptedDaemon(sock_path, doc) as d, attached(d) as s:
        before = s.snapshot()
        seen: list[set[str]] = []
        s.add_listener(seen.append)
        comms = d.doc.get(am.ROOT, "comms")[1]
        await d.change(lambda tx: tx.put(d.doc.get(comms, "lay")[1], "state", am.ScalarType.Str,
                                         json.dumps({"_model_name": "LayoutModel", "width": "50%"})))
        after = await s.wait_for(lambda sn: sn.comms[0].state.get("width") == "50%", 5)
        changed = set().union(*seen)
        assert "comms/lay" in changed and not any(p.startswith("cells/") for p in changed)
        assert after.comms[0].state["width"] == "50%"
        # untouched entries are the very same objects: nothing else was re-read
        assert after.cells[0] is before.cells[0] and after.comms[1] is before.comms[1]


async def test_v2_indexes_the_document_after_the_join_so_the_first_update_reads_incrementally(
        sock_path: str) -> None:
    """The index of object paths is built in slices once the join is done, as on v4: the first
    update does not build it in one go (0.5-0.9 s at 10,000 cells) or read the room again."""
    doc = build_doc(CELLS, schema=3, comms={"sl": SLIDER, "lay": LAYOUT})
    async with ScriptedDaemon(sock_path, doc) as d, attached(d) as s:
        (rep,) = s.replicas.values()
        for _ in range(500):  # the driver runs the idle slices on its own; wait for them
            if not rep.paths.stale:
                break
            await asyncio.sleep(0.01)
        assert not rep.paths.stale and len(rep.paths) > 0
        before = s.snapshot()
        comms = d.doc.get(am.ROOT, "comms")[1]
        await d.change(lambda tx: tx.put(d.doc.get(comms, "lay")[1], "state", am.ScalarType.Str,
                                         json.dumps({"_model_name": "LayoutModel", "width": "9px"})))
        after = await s.wait_for(lambda sn: sn.comms[0].state.get("width") == "9px", 5)
        assert rep.paths.fallbacks == 0 and after.cells[0] is before.cells[0]


async def test_unknown_notebook_is_refused_without_joining(sock_path: str) -> None:
    async with ScriptedDaemon(sock_path, build_doc([], schema=2), notebook_id="real") as d:
        s = PeerSession(SessionConfig(sock_path, "other"))
        with pytest.raises(UnknownNotebook, match="never creates rooms"):
            await s.run()
        assert d.peers == []  # no notebook connection was made


async def test_v4_daemon_named_by_version(sock_path: str) -> None:
    """A daemon whose pool names protocol 5 and refuses v2 notebooks: named, not joined."""
    async with ScriptedDaemon(sock_path, build_doc([], schema=2), refuse_v2_notebook=True,
                              pool_pong={"type": "pong", "protocol_version": 5, "daemon_version": "3.1.0+abc"}):
        s = PeerSession(SessionConfig(sock_path, "nb-1"))
        with pytest.raises(ProtocolMismatch, match=r"protocol 5 \(3.1.0\+abc\)"):
            await s.run()


async def test_v3_daemon_detected_by_frame_type(sock_path: str) -> None:
    async def send_runtime_state(d: ScriptedDaemon, peer: Any) -> None:
        await d.send_typed(0x05, b"\x42\x00")

    async with ScriptedDaemon(sock_path, build_doc(CELLS, schema=3), daemon_version="2.3.0+v3",
                              after_join=send_runtime_state):
        s = PeerSession(SessionConfig(sock_path, "nb-1"))
        with pytest.raises(ProtocolMismatch, match=r"2.3.0\+v3.*frame type 0x05"):
            await s.run()
        assert s.state == "error"


async def test_oversized_frame_and_closed_connection(sock_path: str) -> None:
    async def oversized(d: ScriptedDaemon, peer: Any) -> None:
        await asyncio.sleep(0.05)
        await d.send_oversized_length()

    async with ScriptedDaemon(sock_path, build_doc(CELLS, schema=2), after_join=oversized):
        s = PeerSession(SessionConfig(sock_path, "nb-1"))
        with pytest.raises(BadFrame, match="oversized frame"):
            await s.run()
        assert len(s.log.frames()) >= 2  # what was recorded before the error is kept

    async def close(d: ScriptedDaemon, peer: Any) -> None:
        # the peer acknowledged the document (its second sync reply): then the daemon goes away
        await wait_until(lambda: sum(ft == 0 for ft, _ in peer.received) >= 2, "the peer's ack", 10, poll=0.01)
        peer.writer.close()

    async with ScriptedDaemon(sock_path, build_doc(CELLS, schema=2), after_join=close):
        s = PeerSession(SessionConfig(sock_path, "nb-1"))
        with pytest.raises(Closed, match="closed the connection"):
            await s.run()
        assert s.snapshot().cells  # the replica survives the disconnect


async def test_not_a_runtimed_socket(sock_path: str) -> None:
    async def http_ish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(http_ish, sock_path)
    try:
        s = PeerSession(SessionConfig(sock_path, "nb-1"))
        with pytest.raises(NotRuntimed):
            await s.run()
    finally:
        server.close()
        os.unlink(sock_path)
