"""An in-process, scripted runtimed stand-in on a real Unix socket, built with automerge.

It speaks the v2 wire protocol from the daemon side closely enough to exercise the peer
(preamble, handshake reply, daemon-first sync, comm_sync, broadcasts, presence) and lets a
test script anything else: split writes, unknown frames, malformed or oversized frames, a
v3/v4 daemon's reactions, closing. The full testbed with a kernel lives in inspector.testbed.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from automerge import core as am

from inspector.protocol import messages as m
from inspector.protocol.framing import MAGIC, FrameError, encode_frame, encode_typed, read_frame

S = am.ScalarType


def build_doc(cells: list[dict[str, Any]], *, schema: int = 2, comms: dict[str, dict[str, Any]] | None = None,
              notebook_id: str = "nb-1", metadata: dict[str, Any] | None = None,
              actor: bytes = b"runtimed") -> am.Document:
    """A notebook doc as the daemon writes it (document-schema §2/§3/§10)."""
    doc = am.Document(actor_id=actor)
    with doc.transaction() as tx:
        tx.put(am.ROOT, "schema_version", S.Uint, schema)
        tx.put(am.ROOT, "notebook_id", S.Str, notebook_id)
        cm = tx.put_object(am.ROOT, "cells", am.ObjType.Map)
        md = tx.put_object(am.ROOT, "metadata", am.ObjType.Map)
        put_json(tx, md, metadata or {"runtime": "python",
                                      "kernelspec": {"name": "python3", "display_name": "Python 3",
                                                     "language": "python"}})
        for c in cells:
            put_cell(tx, cm, c)
        if comms is not None:
            co = tx.put_object(am.ROOT, "comms", am.ObjType.Map)
            for cid, entry in comms.items():
                put_comm(tx, co, cid, entry)
    return doc


def put_json(tx: Any, obj: bytes, value: dict[str, Any]) -> None:
    for k, v in value.items():
        _put_value(tx, obj, k, v)


def _put_value(tx: Any, obj: bytes, key: Any, v: Any, insert: bool = False) -> None:
    def put_scalar(kind: Any, val: Any) -> None:
        (tx.insert if insert else tx.put)(obj, key, kind, val)

    if isinstance(v, dict):
        child = (tx.insert_object if insert else tx.put_object)(obj, key, am.ObjType.Map)
        put_json(tx, child, v)
    elif isinstance(v, list):
        child = (tx.insert_object if insert else tx.put_object)(obj, key, am.ObjType.List)
        for i, item in enumerate(v):
            _put_value(tx, child, i, item, insert=True)
    elif isinstance(v, bool):
        put_scalar(S.Boolean, v)
    elif isinstance(v, int):
        put_scalar(S.Int, v)
    elif isinstance(v, float):
        put_scalar(S.F64, v)
    elif v is None:
        put_scalar(S.Null, None)
    else:
        put_scalar(S.Str, str(v))


def put_cell(tx: Any, cells: bytes, c: dict[str, Any]) -> bytes:
    obj = tx.put_object(cells, c["id"], am.ObjType.Map)
    tx.put(obj, "id", S.Str, c["id"])
    tx.put(obj, "cell_type", S.Str, c.get("cell_type", "code"))
    tx.put(obj, "position", S.Str, c["position"])
    src = tx.put_object(obj, "source", am.ObjType.Text)
    if c.get("source"):
        _insert_text(tx, src, c["source"])
    tx.put(obj, "execution_count", S.Str, c.get("execution_count", "null"))
    outs = tx.put_object(obj, "outputs", am.ObjType.List)
    for i, o in enumerate(c.get("outputs", [])):
        tx.insert(outs, i, S.Str, o)
    md = c.get("metadata", {})
    if isinstance(md, str):
        tx.put(obj, "metadata", S.Str, md)
    else:
        mo = tx.put_object(obj, "metadata", am.ObjType.Map)
        put_json(tx, mo, md)
    return obj


def _insert_text(tx: Any, text_obj: bytes, text: str) -> None:
    for i, ch in enumerate(text):
        tx.insert(text_obj, i, S.Str, ch)


def put_comm(tx: Any, comms: bytes, comm_id: str, e: dict[str, Any]) -> bytes:
    obj = tx.put_object(comms, comm_id, am.ObjType.Map)
    tx.put(obj, "target_name", S.Str, e.get("target_name", "jupyter.widget"))
    tx.put(obj, "model_module", S.Str, e.get("model_module", ""))
    tx.put(obj, "model_name", S.Str, e.get("model_name", ""))
    state = e.get("state", {})
    tx.put(obj, "state", S.Str, state if isinstance(state, str) else json.dumps(state))
    outs = tx.put_object(obj, "outputs", am.ObjType.List)
    for i, o in enumerate(e.get("outputs", [])):
        tx.insert(outs, i, S.Str, o)
    tx.put(obj, "seq", S.Int if e.get("seq_int") else S.Uint, e.get("seq", 0))
    return obj


@dataclass
class Peer:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    state: Any = field(default_factory=am.SyncState)
    received: list[tuple[int, bytes]] = field(default_factory=list)


class ScriptedDaemon:
    def __init__(self, path: str, doc: am.Document, notebook_id: str = "nb-1", *, protocol_version: int = 2,
                 daemon_version: str = "2.0.0+scripted", comm_sync: list[dict[str, Any]] | None = None,
                 presence_snapshot: bytes | None = None, split_writes: bool = False,
                 pool_pong: dict[str, Any] | None = None, refuse_v2_notebook: bool = False,
                 after_join: Callable[[ScriptedDaemon, Peer], Any] | None = None,
                 blob_port: int | None = None, rooms: list[dict[str, Any]] | None = None,
                 handshake_delay: float = 0.0, stall_sync: bool = False,
                 sync_filter: Callable[[Peer, bytes], bytes] | None = None, reply_delay: float = 0.0) -> None:
        self.path = path
        self.doc = doc
        self.notebook_id = notebook_id
        self.protocol_version = protocol_version
        self.daemon_version = daemon_version
        self.comm_sync = comm_sync
        self.presence_snapshot = presence_snapshot
        self.split_writes = split_writes
        self.pool_pong = pool_pong if pool_pong is not None else {"type": "pong"}
        self.refuse_v2_notebook = refuse_v2_notebook
        self.after_join = after_join
        self.blob_port = blob_port
        self.rooms = rooms
        self.handshake_delay = handshake_delay  # seconds before the notebook handshake reply
        self.stall_sync = stall_sync  # advertise heads in the first message, never send the changes
        # rewrites each sync message as it leaves (after the daemon's sync state recorded it sent):
        # a change lost on the way, which the daemon then never sends again on that connection
        self.sync_filter = sync_filter
        self.reply_delay = reply_delay  # seconds before answering a peer's sync message (a slow daemon)
        self.peers: list[Peer] = []
        self.joined = asyncio.Event()
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> ScriptedDaemon:
        if os.path.exists(self.path):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, self.path)
        os.chmod(self.path, 0o600)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for p in self.peers:
            p.writer.close()
        if self._server:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if os.path.exists(self.path):
            os.unlink(self.path)

    async def write(self, peer: Peer, data: bytes) -> None:
        if self.split_writes:
            for i in range(len(data)):
                peer.writer.write(data[i : i + 1])
                await peer.writer.drain()
        else:
            peer.writer.write(data)
            await peer.writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            pre = await reader.readexactly(5)
            if pre[:4] != MAGIC:
                writer.close()
                return
            hs = json.loads(await read_frame(reader))
            channel = hs.get("channel")
            if channel == "pool":
                await self._pool(reader, writer, pre[4])
                return
            if channel == "blob":
                await read_frame(reader)
                writer.write(encode_frame(json.dumps({"port": self.blob_port} if self.blob_port
                                                     else {"error": "blob server not running"}).encode()))
                await writer.drain()
                return
            if pre[4] != self.protocol_version or self.refuse_v2_notebook:
                writer.close()
                return
            if channel != "notebook_sync" or hs.get("notebook_id") != self.notebook_id:
                writer.close()
                return
            peer = Peer(reader, writer)
            self.peers.append(peer)
            if self.handshake_delay:
                await asyncio.sleep(self.handshake_delay)
            await self.write(peer, encode_frame(json.dumps({
                "protocol": "v2", "protocol_version": 2, "daemon_version": self.daemon_version}).encode()))
            msg = self.doc.generate_sync_message(peer.state)
            if msg is not None:
                await self.write_sync(peer, msg.encode())
            if self.comm_sync:
                await self.broadcast_to(peer, {"event": "comm_sync", "comms": self.comm_sync})
            if self.presence_snapshot is not None:
                await self.write(peer, encode_typed(4, self.presence_snapshot))
            self.joined.set()
            if self.after_join:
                t = asyncio.create_task(self.after_join(self, peer))
                self._tasks.add(t)
            while True:
                payload = await read_frame(reader)
                peer.received.append((payload[0], payload[1:]))
                if payload[0] == 0 and not self.stall_sync:
                    if self.reply_delay:
                        await asyncio.sleep(self.reply_delay)
                    self.doc.receive_sync_message(peer.state, am.Message.decode(payload[1:]))
                    await self.sync_peer(peer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError, FrameError):
            pass
        finally:
            writer.close()

    async def _pool(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: int) -> None:
        if version != 2 and self.pool_pong.get("protocol_version") is None:
            writer.close()  # a v2 daemon refuses other versions everywhere
            return
        while True:
            req = json.loads(await read_frame(reader))
            if req["type"] == "ping":
                resp: dict[str, Any] = self.pool_pong
            elif req["type"] == "list_rooms":
                rooms = self.rooms if self.rooms is not None else [{
                    "notebook_id": self.notebook_id, "active_peers": len(self.peers), "has_kernel": False}]
                resp = {"type": "rooms_list", "rooms": rooms}
            elif req["type"] == "get_daemon_info":
                resp = {"type": "daemon_info", "protocol_version": self.pool_pong.get("protocol_version"),
                        "daemon_version": self.daemon_version}
            else:
                writer.close()
                return
            writer.write(encode_frame(json.dumps(resp).encode()))
            await writer.drain()

    async def sync_peer(self, peer: Peer) -> None:
        while True:
            msg = self.doc.generate_sync_message(peer.state)
            if msg is None:
                return
            await self.write_sync(peer, msg.encode())
            return  # one message per wake-up, as the daemon does; the peer's reply drives the next

    async def write_sync(self, peer: Peer, body: bytes) -> None:
        await self.write(peer, encode_typed(0, self.sync_filter(peer, body) if self.sync_filter else body))

    async def change(self, fn: Callable[[Any], None]) -> None:
        with self.doc.transaction() as tx:
            fn(tx)
        for p in self.peers:
            await self.sync_peer(p)

    async def broadcast_to(self, peer: Peer, event: dict[str, Any] | bytes) -> None:
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        await self.write(peer, encode_typed(3, body))

    async def broadcast(self, event: dict[str, Any] | bytes) -> None:
        for p in self.peers:
            await self.broadcast_to(p, event)

    async def send_raw(self, data: bytes) -> None:
        for p in self.peers:
            await self.write(p, data)

    async def send_typed(self, frame_type: int, body: bytes) -> None:
        await self.send_raw(encode_typed(frame_type, body))

    async def send_oversized_length(self) -> None:
        await self.send_raw(struct.pack(">I", 200 * 1024 * 1024) + b"\x00")

    def ids(self) -> Any:
        return m
