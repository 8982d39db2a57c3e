"""Testbed daemon, no kernel: handshakes, join sequence, sync between peers, presence relay,
pool and blob channels, blob HTTP, documents from .ipynb and saved docs, and bad input that
closes only the offending connection."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from automerge import core as am
from testbed_peer import RawPeer

from inspector.protocol import messages as m
from inspector.protocol.framing import (
    DATA_FRAME_MAX,
    FrameType,
    encode_frame,
    encode_typed,
    preamble,
    read_frame,
)
from inspector.protocol.presence import encode_presence
from inspector.session import PeerSession, SessionConfig
from inspector.testbed import Testbed
from inspector.testbed.blob_store import MANIFEST_MEDIA_TYPE
from inspector.testbed.faults import Fault, FaultError

SAMPLE = Path(__file__).resolve().parent.parent / "inspector" / "testbed" / "samples" / "widgets-demo.ipynb"


@pytest.fixture
async def tb():
    d = tempfile.mkdtemp(prefix="tb", dir="/tmp")
    bed = Testbed(os.path.join(d, "rt.sock"), auto_launch=False, keep_alive=0.5)
    await bed.start()
    try:
        yield bed
    finally:
        await bed.stop()
        shutil.rmtree(d, ignore_errors=True)


async def _pool(sock: str, req: dict) -> dict:
    reader, writer = await asyncio.open_unix_connection(sock)
    writer.write(preamble(2) + encode_frame(b'{"channel":"pool"}') + encode_frame(json.dumps(req).encode()))
    await writer.drain()
    resp = json.loads(await asyncio.wait_for(read_frame(reader), 10))
    writer.close()
    return resp


async def test_join_sequence_and_handshake_reply(tb: Testbed) -> None:
    nid = tb.create_room(["x = 1", "y = 2"])
    peer = RawPeer(tb.socket_path)
    reply = await peer.connect({"channel": "notebook_sync", "notebook_id": nid, "protocol": "v2"})
    assert reply == {"protocol": "v2", "protocol_version": 2, "daemon_version": "2.0.0+testbed"}
    first = await peer.read_one()
    assert first is not None and first[0] == FrameType.AUTOMERGE_SYNC  # the daemon speaks first
    await peer.pump_quiet()
    root = peer.root()
    assert root["schema_version"] == 3 and root["comms"] == {} and root["notebook_id"] == nid
    cells = sorted(root["cells"].values(), key=lambda c: (c["position"], c["id"]))
    assert [c["source"] for c in cells] == ["x = 1", "y = 2"]
    assert [c["position"] for c in cells] == ["80", "8180"]
    assert all(c["execution_count"] == "null" and c["outputs"] == [] for c in cells)
    # no comms, no other peers with presence: nothing but sync frames
    assert {f for f, _ in peer.frames} == {FrameType.AUTOMERGE_SYNC}
    assert peer.doc.get(am.ROOT, "schema_version")[0] == (am.ScalarType.Uint, 3)
    rooms = await _pool(tb.socket_path, {"type": "list_rooms"})
    assert rooms == {"type": "rooms_list", "rooms": [{"notebook_id": nid, "active_peers": 1, "has_kernel": False}]}
    await peer.close()


async def test_changes_from_one_peer_reach_the_others(tb: Testbed) -> None:
    nid = tb.create_room(["a = 1"])
    writer_peer = RawPeer(tb.socket_path)
    await writer_peer.connect({"channel": "notebook_sync", "notebook_id": nid})
    await writer_peer.pump_quiet()
    session = PeerSession(SessionConfig(tb.socket_path, nid))
    run = asyncio.create_task(session.run())
    try:
        await session.wait_settled(0.2, 10)
        assert [c.source for c in session.snapshot().cells] == ["a = 1"]
        # a client edit (own actor) travels through the daemon's doc to the other peer
        writer_peer.doc.set_actor(b"agent:test:0001")
        cells_obj = writer_peer.doc.get(am.ROOT, "cells")[1]
        with writer_peer.doc.transaction() as tx:
            cell = tx.put_object(cells_obj, "c-new", am.ObjType.Map)
            tx.put(cell, "id", am.ScalarType.Str, "c-new")
            tx.put(cell, "cell_type", am.ScalarType.Str, "code")
            tx.put(cell, "position", am.ScalarType.Str, "8180")
            src = tx.put_object(cell, "source", am.ObjType.Text)
            for i, ch in enumerate("b = 2"):
                tx.insert(src, i, am.ScalarType.Str, ch)
        msg = writer_peer.doc.generate_sync_message(writer_peer.sync)
        await writer_peer.send_typed(FrameType.AUTOMERGE_SYNC, msg.encode())
        pump = asyncio.create_task(writer_peer.pump_quiet(0.5))
        await tb.wait_until(lambda: [c.source for c in session.snapshot().cells] == ["a = 1", "b = 2"], 10)
        await pump
        assert tb.room(nid).doc.cell("c-new")["source"] == "b = 2"
        # and a daemon-side write reaches both
        tb.add_cell(nid, "c = 3")
        await tb.wait_until(lambda: len(session.snapshot().cells) == 3, 10)
    finally:
        await session.stop()
        run.cancel()
        await writer_peer.close()


async def test_presence_relay_and_left(tb: Testbed) -> None:
    nid = tb.create_room(["x"])
    a, b = RawPeer(tb.socket_path), RawPeer(tb.socket_path)
    await a.connect({"channel": "notebook_sync", "notebook_id": nid})
    await a.pump_quiet(0.2)
    await b.connect({"channel": "notebook_sync", "notebook_id": nid})
    await b.pump_quiet(0.2)
    update = {"type": "update", "peer_id": "spoofed", "peer_label": " Ana\u200b ", "channel": "cursor",
              "data": {"cell_id": "c1", "line": 3, "column": 7}}
    await a.send_typed(FrameType.PRESENCE, encode_presence(update))
    await b.pump_until(lambda: b.presence, 10)
    got = b.presence[0]
    assert got.type == "update" and got.peer_id not in (None, "spoofed")
    assert got.raw["peer_label"] == "Ana" and got.raw["data"] == {"cell_id": "c1", "line": 3, "column": 7}
    # a third peer joining gets a snapshot of the others' presence
    c = RawPeer(tb.socket_path)
    await c.connect({"channel": "notebook_sync", "notebook_id": nid})
    await c.pump_until(lambda: c.presence, 10)
    snap = c.presence[0]
    assert snap.type == "snapshot" and snap.peer_id == "daemon"
    assert [p["peer_id"] for p in snap.peers] == [got.peer_id]
    await a.close()
    await b.pump_until(lambda: any(p.type == "left" for p in b.presence), 10)
    assert [p.peer_id for p in b.presence if p.type == "left"] == [got.peer_id]
    await b.close()
    await c.close()


async def test_pool_and_blob_channels_and_http(tb: Testbed) -> None:
    assert await _pool(tb.socket_path, {"type": "ping"}) == {"type": "pong"}
    stats = await _pool(tb.socket_path, {"type": "status"})
    assert stats["type"] == "stats" and "uv_available" in stats["stats"]
    nid = tb.create_room(["print(1)"])
    state = await _pool(tb.socket_path, {"type": "inspect_notebook", "notebook_id": nid})
    assert state["type"] == "notebook_state" and state["source"] == "live_room"
    assert [c["source"] for c in state["cells"]] == ["print(1)"] and state["kernel_info"] is None
    missing = await _pool(tb.socket_path, {"type": "inspect_notebook", "notebook_id": "nope"})
    assert missing["type"] == "error" and "message" in missing

    reader, writer = await asyncio.open_unix_connection(tb.socket_path)
    writer.write(preamble(2) + encode_frame(b'{"channel":"blob"}') + encode_frame(b'{"action":"get_port"}'))
    port = json.loads(await read_frame(reader))["port"]
    assert port == tb.blob_port
    writer.write(encode_frame(b'{"action":"store","media_type":"text/plain"}') + encode_frame(b"hello blob"))
    digest = json.loads(await read_frame(reader))["hash"]
    writer.close()

    def get(path: str, method: str = "GET") -> tuple[int, bytes, dict]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, b"", {}

    status, body, headers = await asyncio.to_thread(get, f"/blob/{digest}")
    assert (status, body, headers["Content-Type"]) == (200, b"hello blob", "text/plain")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert (await asyncio.to_thread(get, "/health"))[:2] == (200, b"OK")
    assert (await asyncio.to_thread(get, "/blob/" + "0" * 64))[0] == 404
    assert (await asyncio.to_thread(get, "/blob/abc"))[0] == 404
    assert (await asyncio.to_thread(get, "/output/1"))[0] == 404
    assert (await asyncio.to_thread(get, f"/blob/{digest}", "POST"))[0] == 405


async def test_ipynb_room_is_built_as_the_daemon_builds_it(tb: Testbed) -> None:
    nid = tb.add_notebook(str(SAMPLE))
    assert nid == str(SAMPLE.resolve())
    peer = RawPeer(tb.socket_path)
    await peer.connect({"channel": "notebook_sync", "notebook_id": nid})
    await peer.pump_quiet()
    cells = sorted(peer.cells().values(), key=lambda c: (c["position"], c["id"]))
    nb = json.loads(SAMPLE.read_text())
    assert [c["id"] for c in cells] == [c["id"] for c in nb["cells"]]
    assert [c["position"] for c in cells] == ["80", "8180", "8280", "8380", "8480", "8580"]
    assert [c["source"] for c in cells] == ["".join(c["source"]) for c in nb["cells"]]
    cells_obj = peer.doc.get(am.ROOT, "cells")[1]
    first = peer.doc.get(cells_obj, cells[0]["id"])[1]
    assert peer.doc.get(first, "source")[0] == am.ObjType.Text  # the only Text in the schema
    assert peer.doc.get(first, "metadata")[0] == am.ObjType.Map  # native metadata
    meta = peer.root()["metadata"]
    assert meta["kernelspec"] == {"name": "python3", "display_name": "Python 3", "language": "python"}
    assert meta["runtime"] == "python"
    await peer.close()


async def test_open_notebook_and_create_notebook(tb: Testbed, tmp_path: Path) -> None:
    peer = RawPeer(tb.socket_path)
    reply = await peer.connect({"channel": "open_notebook", "path": str(SAMPLE)})
    assert reply["notebook_id"] == str(SAMPLE.resolve()) and reply["cell_count"] == 6
    assert reply["needs_trust_approval"] is False and "error" not in reply
    await peer.close()
    created = RawPeer(tb.socket_path)
    reply = await created.connect({"channel": "create_notebook", "runtime": "python"})
    assert reply["cell_count"] == 1 and reply["notebook_id"] in tb.rooms
    await created.pump_quiet()
    (cell,) = created.cells().values()
    assert cell["source"] == "" and cell["cell_type"] == "code"
    await created.close()
    fresh = RawPeer(tb.socket_path)
    reply = await fresh.connect({"channel": "open_notebook", "path": str(tmp_path / "new")})
    assert reply["notebook_id"] == str(tmp_path / "new.ipynb") and reply["cell_count"] == 1
    await fresh.close()


async def test_saved_v2_doc_is_migrated_to_v3(tb: Testbed) -> None:
    doc = am.Document(actor_id=b"runtimed")
    with doc.transaction() as tx:
        tx.put(am.ROOT, "schema_version", am.ScalarType.Uint, 2)
        tx.put(am.ROOT, "notebook_id", am.ScalarType.Str, "3c7e6f0a-0000-4000-8000-000000000001")
        tx.put_object(am.ROOT, "cells", am.ObjType.Map)
        tx.put_object(am.ROOT, "metadata", am.ObjType.Map)
    nid = tb.load_saved_doc(doc.save())
    assert nid == "3c7e6f0a-0000-4000-8000-000000000001"
    peer = RawPeer(tb.socket_path)
    await peer.connect({"channel": "notebook_sync", "notebook_id": nid})
    await peer.pump_quiet()
    assert peer.doc.get(am.ROOT, "schema_version")[0] == (am.ScalarType.Uint, 3)
    assert peer.doc.get(am.ROOT, "comms")[0] == am.ObjType.Map
    resp = await peer.request({"action": "get_doc_bytes"})
    assert resp["result"] == "doc_bytes"
    assert am.extract(am.Document.load(bytes(resp["bytes"])))["comms"] == {}
    await peer.close()


async def test_requests_without_a_kernel(tb: Testbed) -> None:
    nid = tb.create_room(["1 + 1"])
    peer = RawPeer(tb.socket_path)
    await peer.connect({"channel": "notebook_sync", "notebook_id": nid})
    cid = tb.cell_ids(nid)[0]
    assert await peer.request({"action": "get_kernel_info"}) == {
        "result": "kernel_info", "kernel_type": None, "env_source": None, "status": "not_started"}
    assert await peer.request({"action": "execute_cell", "cell_id": cid}) == {"result": "no_kernel"}
    assert await peer.request({"action": "get_queue_state"}) == {"result": "queue_state", "executing": None, "queued": []}
    assert await peer.request({"action": "clear_outputs", "cell_id": "c9"}) == {
        "result": "error", "error": "Cell not found in document: c9"}
    assert await peer.request({"action": "get_raw_metadata", "key": "runtime"}) == {"result": "raw_metadata", "value": "python"}
    snap = await peer.request({"action": "get_metadata_snapshot"})
    assert json.loads(snap["snapshot"])["kernelspec"]["name"] == "python3"
    await peer.close()


BAD_INPUTS = {
    "malformed_json_request": encode_typed(FrameType.REQUEST, b'{"action": "get_kernel_info"'),
    "unknown_action": encode_typed(FrameType.REQUEST, b'{"action":"make_coffee"}'),
    "unknown_frame_type": encode_typed(0x05, b"\x00"),
    "oversized_frame": struct.pack(">I", DATA_FRAME_MAX + 1),
    "empty_frame": struct.pack(">I", 0),
    "garbage_sync": encode_typed(FrameType.AUTOMERGE_SYNC, b"\xff\xfe not automerge"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
async def test_bad_input_closes_only_that_connection(tb: Testbed, name: str) -> None:
    nid = tb.create_room(["x = 1"])
    session = PeerSession(SessionConfig(tb.socket_path, nid))
    run = asyncio.create_task(session.run())
    try:
        await session.wait_settled(0.2, 10)
        bad = RawPeer(tb.socket_path)
        await bad.connect({"channel": "notebook_sync", "notebook_id": nid})
        await bad.pump_quiet(0.2)
        await bad.send(BAD_INPUTS[name])
        assert await bad.closed_by_peer(10), f"{name}: the connection stayed open"
        # the room and the other peer are intact: doc changes and requests still flow
        tb.add_cell(nid, "after = 1")
        await tb.wait_until(lambda: [c.source for c in session.snapshot().cells] == ["x = 1", "after = 1"], 10)
        info = await session.request(m.GetKernelInfo())
        assert isinstance(info, m.KernelInfo) and info.status == "not_started"
        rooms = await _pool(tb.socket_path, {"type": "list_rooms"})
        assert rooms["rooms"][0]["active_peers"] == 1
        assert session.state == "live"
    finally:
        await session.stop()
        run.cancel()


@pytest.mark.parametrize("prefix", [b"\xc0\xde\x01\xad\x02", b"\xc0\xde\x01\xac\x04", b"\xc0\xde\x01\xac\x01"])
async def test_wrong_preamble_is_closed_without_reply(tb: Testbed, prefix: bytes) -> None:
    peer = RawPeer(tb.socket_path)
    await peer.open(prefix + encode_frame(b'{"channel":"pool"}') + encode_frame(b'{"type":"ping"}'))
    assert await peer.closed_by_peer(10)
    assert await _pool(tb.socket_path, {"type": "ping"}) == {"type": "pong"}


async def test_unknown_channel_and_oversized_handshake_close(tb: Testbed) -> None:
    peer = RawPeer(tb.socket_path)
    await peer.open(preamble(2) + encode_frame(b'{"channel":"teleport"}'))
    assert await peer.closed_by_peer(10)
    big = RawPeer(tb.socket_path)
    await big.open(preamble(2) + struct.pack(">I", 64 * 1024 + 1))
    assert await big.closed_by_peer(10)


async def test_blob_manifest_shapes(tb: Testbed) -> None:
    store = tb.daemon.blobs
    small = store.store_manifest({"output_type": "stream", "name": "stdout", "text": ["a\n", "b\n"]})
    assert store.get_json(small) == {"output_type": "stream", "name": "stdout", "text": {"inline": "a\nb\n"}}
    assert store.media_type(small) == MANIFEST_MEDIA_TYPE
    big_text = "x" * 9000
    digest = store.store_manifest({"output_type": "execute_result", "data": {"text/plain": big_text},
                                   "metadata": {}, "execution_count": 3})
    manifest = store.get_json(digest)
    assert manifest["execution_count"] == 3 and "metadata" not in manifest
    ref = manifest["data"]["text/plain"]
    assert ref["size"] == 9000 and store.get(ref["blob"]) == big_text.encode()


def test_fault_parsing() -> None:
    assert Fault.parse("doc-drop-update:IntSliderModel") == Fault("doc-drop-update", None, "IntSliderModel", None)
    assert Fault.parse("doc-skip-open:every=3").matches("X", 2) and not Fault.parse("doc-skip-open:every=3").matches("X", 1)
    assert Fault.parse("doc-delay-ms=250").value == 250
    assert str(Fault.parse("doc-delay-ms=250:OutputModel")) == "doc-delay-ms=250:OutputModel"
    for bad in ("nope", "doc-delay-ms", "doc-skip-open=3", "doc-skip-open:every=0"):
        with pytest.raises(FaultError):
            Fault.parse(bad)
