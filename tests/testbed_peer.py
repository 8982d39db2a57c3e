"""A tiny spec-level peer for testbed tests: raw frames over a real Unix socket, its own
Automerge replica, nothing borrowed from the server side."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from automerge import core as am

from inspector.protocol.framing import (
    CONTROL_FRAME_MAX,
    DATA_FRAME_MAX,
    ConnectionClosed,
    FrameType,
    encode_frame,
    encode_typed,
    preamble,
    read_frame,
)
from inspector.protocol.presence import decode_presence


class RawPeer:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.doc = am.Document()
        self.sync = am.SyncState()
        self.frames: list[tuple[int, bytes]] = []  # typed frames received, in order
        self.broadcasts: list[dict[str, Any]] = []
        self.presence: list[Any] = []
        self.responses: list[dict[str, Any]] = []

    async def open(self, raw_prefix: bytes = b"") -> None:
        self.reader, self.writer = await asyncio.open_unix_connection(self.socket_path, limit=DATA_FRAME_MAX + 16)
        if raw_prefix:
            self.writer.write(raw_prefix)

    async def connect(self, handshake: dict[str, Any], version: int = 2) -> dict[str, Any]:
        """Preamble + handshake; returns the untyped JSON reply."""
        await self.open()
        assert self.writer is not None and self.reader is not None
        self.writer.write(preamble(version) + encode_frame(json.dumps(handshake).encode(), CONTROL_FRAME_MAX))
        await self.writer.drain()
        reply = await asyncio.wait_for(read_frame(self.reader), 30)
        return json.loads(reply)

    async def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def send_typed(self, frame_type: int, body: bytes) -> None:
        await self.send(encode_typed(frame_type, body))

    async def request(self, req: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        n = len(self.responses)
        await self.send_typed(FrameType.REQUEST, json.dumps(req).encode())
        await self.pump_until(lambda: len(self.responses) > n, timeout)
        return self.responses[n]

    async def read_one(self, timeout: float = 10) -> tuple[int, bytes] | None:
        """Read and handle one typed frame; None on EOF."""
        assert self.reader is not None
        try:
            payload = await asyncio.wait_for(read_frame(self.reader), timeout)
        except ConnectionClosed:
            return None
        ftype, body = payload[0], payload[1:]
        self.frames.append((ftype, body))
        if ftype == FrameType.AUTOMERGE_SYNC:
            self.doc.receive_sync_message(self.sync, am.Message.decode(body))
            reply = self.doc.generate_sync_message(self.sync)
            if reply is not None:
                await self.send_typed(FrameType.AUTOMERGE_SYNC, reply.encode())
        elif ftype == FrameType.BROADCAST:
            self.broadcasts.append(json.loads(body))
        elif ftype == FrameType.RESPONSE:
            self.responses.append(json.loads(body))
        elif ftype == FrameType.PRESENCE:
            self.presence.append(decode_presence(body))
        return ftype, body

    async def pump_until(self, predicate: Any, timeout: float = 30) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("condition not met")
            try:
                got = await self.read_one(left)
            except TimeoutError:
                continue
            if got is None:
                raise ConnectionError("closed by the daemon")

    async def pump_quiet(self, quiet: float = 0.3, timeout: float = 30) -> None:
        """Read until nothing arrives for `quiet` seconds (used only to let sync converge)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                got = await self.read_one(quiet)
            except TimeoutError:
                return
            if got is None:
                raise ConnectionError("closed by the daemon")

    async def closed_by_peer(self, timeout: float = 10) -> bool:
        """True when the daemon closes this connection (EOF or reset) within `timeout`."""
        assert self.reader is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), deadline - loop.time())
            except TimeoutError:
                return False
            except ConnectionError:
                return True
            if not data:
                return True
        return False

    def cells(self) -> dict[str, Any]:
        got = self.doc.get(am.ROOT, "cells")
        return {} if got is None else am.extract(self.doc, got[1])

    def root(self) -> Any:
        return am.extract(self.doc)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


def running_testbed(prefix: str) -> Any:
    """A testbed daemon in a thread on a private socket, for a module-scoped fixture
    (`yield from running_testbed("tbk")`); stopped and its directory removed afterwards."""
    import os
    import shutil
    import tempfile

    from inspector.testbed import TestbedThread

    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    thread = TestbedThread(os.path.join(d, "rt.sock"), keep_alive=60.0).start()
    try:
        yield thread
    finally:
        thread.stop()
        shutil.rmtree(d, ignore_errors=True)


async def call_in_testbed(bed: Any, fn: Any, *args: Any) -> Any:
    """`fn(*args)` on the testbed's own loop, awaited from the test's."""
    return await asyncio.to_thread(bed.call, fn, *args)
