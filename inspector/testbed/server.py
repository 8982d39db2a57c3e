"""The testbed daemon's Unix-socket server: preamble, handshake routing and the per-channel loops.

Protocol v2 server side (wire-protocol.md): notebook channels (`notebook_sync`,
`open_notebook`, `create_notebook`) with typed frames 0x00-0x04, the `pool` and `blob`
channels, and the daemon's silent close on any bad input, which ends that connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import uuid
from typing import Any

from automerge.core import Document, Message, SyncState

from ..protocol import messages as m
from ..protocol.framing import (
    CONTROL_FRAME_MAX,
    DATA_FRAME_MAX,
    MAGIC,
    ConnectionClosed,
    FrameError,
    FrameType,
    encode_frame,
    encode_typed,
    frames,
    read_frame,
)
from ..protocol.presence import PresenceError, decode_presence
from .blob_store import BlobServer, BlobStore
from .faults import FaultSet
from .notebook_doc import NotebookDoc, new_python_notebook, notebook_from_ipynb
from .room import Peer, Room

log = logging.getLogger("inspector.testbed")

PROTOCOL_VERSION = 2
DAEMON_VERSION = "2.0.0+testbed"
HANDSHAKE_TIMEOUT = 10.0
PRESENCE_MAX = 4096

# Requests the daemon knows but the testbed does not model: answered with `error`, not a close.
_UNSUPPORTED_ACTIONS = {
    "get_history", "complete", "save_notebook", "clone_notebook", "sync_environment",
    "set_raw_metadata", "set_metadata_snapshot",
}


class Daemon:
    """Rooms, blob store and faults shared by every connection."""

    def __init__(self, socket_path: str, *, faults: FaultSet | None = None, keep_alive: float = 30.0,
                 auto_launch: bool = True, blob_dir: str | None = None) -> None:
        self.socket_path = socket_path
        self.faults = faults if faults is not None else FaultSet()  # shared: toggled at runtime
        self.keep_alive = keep_alive
        self.auto_launch = auto_launch
        self.blobs = BlobStore(blob_dir)
        self.blob_server = BlobServer(self.blobs)
        self.rooms: dict[str, Room] = {}
        self.kernels_started = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    # -- rooms -----------------------------------------------------------------------------

    def get_or_create_room(self, notebook_id: str, trusted: bool | None = None) -> Room:
        room = self.rooms.get(notebook_id)
        if room is None:
            if trusted is None:
                trusted = _is_uuid(notebook_id) or os.path.exists(notebook_id)
            room = Room(self, notebook_id, NotebookDoc.new(notebook_id), trusted=trusted)
            self.rooms[notebook_id] = room
        return room

    def add_room(self, notebook_id: str, doc: NotebookDoc, *, pinned: bool = False, path: str | None = None) -> Room:
        room = Room(self, notebook_id, doc, trusted=True, pinned=pinned, path=path)
        self.rooms[notebook_id] = room
        return room

    def load_ipynb(self, path: str, pinned: bool = True) -> Room:
        path = os.path.realpath(path)
        with open(path, encoding="utf-8") as fh:
            nb = json.load(fh)
        return self.add_room(path, notebook_from_ipynb(nb, path, self.blobs), pinned=pinned, path=path)

    def load_saved_doc(self, data: bytes, notebook_id: str | None = None, pinned: bool = True) -> Room:
        doc = NotebookDoc.load(data)
        nid = notebook_id or doc.notebook_id() or str(uuid.uuid4())
        return self.add_room(nid, doc, pinned=pinned)

    # -- server ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.blob_server.start()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)  # a stale socket from a crashed run
        self._server = await asyncio.start_unix_server(self._on_connect, path=self.socket_path,
                                                       limit=DATA_FRAME_MAX + 16)
        os.chmod(self.socket_path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for room in list(self.rooms.values()):
            with contextlib.suppress(Exception):
                await room.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        await self.blob_server.stop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        if self.blobs.owned:
            shutil.rmtree(self.blobs.root, ignore_errors=True)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._serve(reader, writer)
        except (FrameError, ConnectionError, m.MessageError, asyncio.IncompleteReadError) as exc:
            log.info("connection closed: %s", exc)
        except TimeoutError:
            log.info("connection closed: handshake timeout")
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("connection failed")
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_handshake(self, reader: asyncio.StreamReader) -> bytes:
        first = await reader.readexactly(1)
        if first[0] == MAGIC[0]:
            rest = await reader.readexactly(4)
            if first + rest[:3] != MAGIC:
                raise FrameError(f"invalid magic bytes: {(first + rest[:3]).hex()}")
            if rest[3] != PROTOCOL_VERSION:
                raise FrameError(f"protocol version mismatch: {rest[3]} (expected {PROTOCOL_VERSION})")
            return await read_frame(reader, CONTROL_FRAME_MAX)
        # Legacy (pre-preamble) client: byte 0 starts the handshake's length prefix.
        head = first + await reader.readexactly(3)
        length = int.from_bytes(head, "big")
        if length > CONTROL_FRAME_MAX:
            raise FrameError(f"handshake too large: {length}")
        return await reader.readexactly(length)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = await asyncio.wait_for(self._read_handshake(reader), HANDSHAKE_TIMEOUT)
        hs = m.decode_handshake(raw)
        if isinstance(hs, m.Unknown):
            raise FrameError(f"unknown handshake channel {hs.tag!r}")
        if isinstance(hs, m.Pool):
            await self._pool_loop(reader, writer)
        elif isinstance(hs, m.BlobChannel):
            await self._blob_loop(reader, writer)
        elif isinstance(hs, m.PoolStateSubscribe):
            writer.write(encode_frame(json.dumps({"event": "pool_state", "uv_error": None, "conda_error": None}).encode()))
            await writer.drain()
            await reader.read()  # nothing more is ever pushed; wait for the peer to go
        elif isinstance(hs, m.SettingsSync):
            await self._settings_loop(reader, writer)
        elif isinstance(hs, m.NotebookSync | m.OpenNotebook | m.CreateNotebook):
            await self._notebook(hs, reader, writer)
        else:
            raise FrameError(f"unsupported channel {type(hs).__name__}")

    # -- notebook channels -----------------------------------------------------------------

    def _capabilities(self) -> bytes:
        return m.encode(m.ProtocolCapabilities(protocol="v2", protocol_version=PROTOCOL_VERSION,
                                               daemon_version=DAEMON_VERSION))

    def _connection_info(self, notebook_id: str, cell_count: int, error: str | None = None) -> bytes:
        return m.encode(m.NotebookConnectionInfo(protocol="v2", protocol_version=PROTOCOL_VERSION,
                                                 daemon_version=DAEMON_VERSION, notebook_id=notebook_id,
                                                 cell_count=cell_count, needs_trust_approval=False, error=error))

    async def _notebook(self, hs: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if isinstance(hs, m.NotebookSync):
            room = self.get_or_create_room(hs.notebook_id)
            if hs.initial_metadata and "kernelspec" not in room.doc.metadata():
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    room.doc.set_metadata_snapshot(json.loads(hs.initial_metadata))
            reply = self._capabilities()
        elif isinstance(hs, m.OpenNotebook):
            path = os.path.abspath(hs.path)
            if os.path.exists(path):
                path = os.path.realpath(path)
            elif not path.endswith(".ipynb"):
                path += ".ipynb"
            room = self.rooms.get(path)
            if room is None or not room.doc.cell_ids():
                try:
                    if os.path.exists(path):
                        with open(path, encoding="utf-8") as fh:
                            doc = notebook_from_ipynb(json.load(fh), path, self.blobs)
                    else:
                        doc = new_python_notebook(path)
                except (OSError, ValueError) as exc:
                    writer.write(encode_frame(self._connection_info("", 0, f"Cannot access notebook '{hs.path}': {exc}")))
                    await writer.drain()
                    return
                room = self.add_room(path, doc, path=path) if room is None else room
                if room.doc is not doc:
                    room.doc = doc
            reply = self._connection_info(path, len(room.doc.cell_ids()))
        else:
            nid = hs.notebook_id if hs.notebook_id and hs.notebook_id in self.rooms else str(uuid.uuid4())
            room = self.rooms.get(nid) or self.add_room(nid, new_python_notebook(nid))
            if not room.doc.cell_ids():
                room.doc.append_cell("code", "")
            reply = self._connection_info(nid, len(room.doc.cell_ids()))
        peer = Peer(room, writer)
        room.join(peer, reply)
        writer_task = asyncio.get_running_loop().create_task(peer.writer_loop())
        try:
            await self._notebook_loop(room, peer, reader)
        finally:
            room.leave(peer)
            peer.close()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(writer_task, 2)
            writer_task.cancel()

    async def _notebook_loop(self, room: Room, peer: Peer, reader: asyncio.StreamReader) -> None:
        async for payload in frames(reader):
            if not payload:
                raise FrameError("empty frame")
            ftype, body = payload[0], payload[1:]
            if ftype == FrameType.AUTOMERGE_SYNC:
                try:
                    msg = Message.decode(bytes(body))
                    room.doc.doc.receive_sync_message(peer.sync_state, msg)
                except Exception as exc:
                    raise FrameError(f"bad sync message: {exc}") from exc
                room.doc_changed()  # every received sync frame wakes every peer, the sender too
            elif ftype == FrameType.REQUEST:
                req = m.decode_request(bytes(body))  # MessageError closes the connection
                if isinstance(req, m.Unknown):
                    if req.tag in _UNSUPPORTED_ACTIONS:
                        resp: Any = m.ErrorResponse(error=f"{req.tag} is not supported by the testbed daemon")
                    else:
                        raise FrameError(f"unknown request action {req.tag!r}")
                else:
                    resp = await self.handle_request(room, req)
                peer.send(encode_typed(FrameType.RESPONSE, m.encode(resp)))
            elif ftype in (FrameType.RESPONSE, FrameType.BROADCAST):
                log.warning("ignoring client frame of type 0x%02x", ftype)
            elif ftype == FrameType.PRESENCE:
                if len(body) > PRESENCE_MAX:
                    log.warning("presence frame too large (%d bytes), dropped", len(body))
                    continue
                try:
                    pres = decode_presence(bytes(body))
                except PresenceError as exc:
                    log.warning("bad presence frame: %s", exc)
                    continue
                if pres.type == "update":
                    room.presence_update(peer, pres.raw)
            else:
                raise FrameError(f"unknown notebook frame type 0x{ftype:02x}")

    async def handle_request(self, room: Room, req: Any) -> Any:
        if isinstance(req, m.LaunchKernel):
            return await room.launch_kernel()
        if isinstance(req, m.ExecuteCell | m.QueueCell):
            async with room.kernel_lock:
                pass
            if room.kernel is None:
                return m.NoKernel()
            if room.doc.cell(req.cell_id) is None:
                return m.ErrorResponse(error=f"Cell not found in document: {req.cell_id}")
            if room.kernel.dead:
                return m.ErrorResponse(error="Kernel is not running")
            room.enqueue(req.cell_id)
            return m.CellQueued(cell_id=req.cell_id)
        if isinstance(req, m.RunAllCells):
            if room.kernel is None:
                return m.NoKernel()
            code = [c for c in room.doc.cell_ids() if (room.doc.cell(c) or {}).get("cell_type") == "code"]
            for cid in code:
                room.enqueue(cid)
            return m.AllCellsQueued(count=len(code))
        if isinstance(req, m.ClearOutputs):
            if not room.doc.reset_outputs(req.cell_id, "null"):
                return m.ErrorResponse(error=f"Cell not found in document: {req.cell_id}")
            room.doc_changed()
            room.broadcast(m.OutputsClearedBroadcast(cell_id=req.cell_id))
            return m.OutputsCleared(cell_id=req.cell_id)
        if isinstance(req, m.InterruptExecution):
            if room.kernel is None:
                return m.NoKernel()
            try:
                await room.kernel.interrupt()
            except Exception as exc:
                return m.ErrorResponse(error=str(exc))
            return m.InterruptSent()
        if isinstance(req, m.ShutdownKernel):
            return await room.shutdown_kernel()
        if isinstance(req, m.GetKernelInfo):
            async with room.kernel_lock:
                return room.kernel_info()
        if isinstance(req, m.GetQueueState):
            async with room.kernel_lock:
                return m.QueueState(executing=room.executing, queued=list(room.queue))
        if isinstance(req, m.SendComm):
            if room.kernel is None:
                return m.NoKernel()
            try:
                room.kernel.send_shell(req.message)
            except Exception as exc:
                return m.ErrorResponse(error=f"send_comm failed: {exc}")
            return m.Ok()
        if isinstance(req, m.GetDocBytes):
            return m.DocBytes(bytes=list(room.doc.save()))
        if isinstance(req, m.GetRawMetadata):
            return m.RawMetadata(value=room.doc.raw_metadata(req.key))
        if isinstance(req, m.GetMetadataSnapshot):
            return m.MetadataSnapshot(snapshot=json.dumps(room.doc.metadata_snapshot()))
        return m.ErrorResponse(error=f"unsupported request {m.tag_of(req)}")

    # -- daemon-level channels -------------------------------------------------------------

    async def _pool_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for payload in frames(reader):
            req = m.decode_pool_request(payload)
            resp: Any
            if isinstance(req, m.Ping):
                resp = m.Pong()
            elif isinstance(req, m.ListRooms):
                for room in list(self.rooms.values()):  # blocks while any room launches a kernel
                    async with room.kernel_lock:
                        pass
                resp = {"type": "rooms_list", "rooms": [r.room_info() for r in self.rooms.values()]}
            elif isinstance(req, m.PoolStatus):
                resp = m.Stats(stats={"uv_available": 1, "uv_warming": 0, "uv_target": 1,
                                      "conda_available": 0, "conda_warming": 0, "conda_target": 0})
            elif isinstance(req, m.InspectNotebook):
                room = self.rooms.get(req.notebook_id)
                if room is None:
                    resp = m.PoolError(message=f"Notebook not found: no active room and no persisted file at {req.notebook_id!r}")
                else:
                    info = room.kernel_info()
                    resp = {"type": "notebook_state", "notebook_id": room.notebook_id, "cells": room.doc.cells(),
                            "source": "live_room",
                            "kernel_info": None if room.kernel is None else {
                                "kernel_type": info.kernel_type, "env_source": info.env_source,
                                "status": info.status}}
            elif isinstance(req, m.Unknown):
                resp = m.PoolError(message=f"unsupported request type {req.tag!r}")
            else:
                resp = m.PoolError(message=f"unsupported request {m.tag_of(req)}")
            body = json.dumps(resp, separators=(",", ":")).encode() if isinstance(resp, dict) else m.encode(resp)
            writer.write(encode_frame(body))
            await writer.drain()

    async def _blob_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for payload in frames(reader):
            req = m.decode_json(payload)
            action = req.get("action") if isinstance(req, dict) else None
            if action == "get_port":
                resp: dict[str, Any] = {"port": self.blob_server.port}
            elif action == "store":
                data = await read_frame(reader, DATA_FRAME_MAX)
                try:
                    resp = {"hash": self.blobs.put(data, str(req.get("media_type") or "application/octet-stream"))}
                except (OSError, ValueError) as exc:
                    resp = {"error": str(exc)}
            else:
                raise FrameError(f"unknown blob action {action!r}")
            writer.write(encode_frame(json.dumps(resp, separators=(",", ":")).encode()))
            await writer.drain()

    async def _settings_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A settings doc nobody writes: enough for a peer that syncs and reads nothing.
        doc, state = Document(actor_id=b"runtimed"), SyncState()
        while True:
            msg = doc.generate_sync_message(state)
            if msg is not None:
                writer.write(encode_frame(msg.encode()))
                await writer.drain()
            try:
                payload = await read_frame(reader, DATA_FRAME_MAX)
            except ConnectionClosed:
                return
            doc.receive_sync_message(state, Message.decode(payload))


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
