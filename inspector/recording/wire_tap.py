"""A recording tap between any runtimed client and the daemon: a Unix socket that forwards
every byte unchanged to the daemon's socket and records each frame in both directions (one
connection number per client connection). It records real traffic of peers the inspector does
not drive (the desktop app, a test peer) and is how the recorder's tests capture the testbed.

It does not know which channel a connection speaks, so it tells frames apart by their first
byte: the preamble opens every connection, the client's first frame is the handshake, and any
other payload starting below 0x20 is a typed frame (type bytes are 0x00-0x0a; JSON starts with `{`
and Automerge sync messages with 0x42/0x43).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

from ..protocol.framing import FrameDecoder, FrameError
from .recorder import Recorder
from .records import IN, OUT, PREAMBLE, TYPED, UNTYPED
from .replicas import Replicas


class WireTap:
    def __init__(self, listen_path: str, upstream_path: str, recorder: Recorder,
                 replicas: Replicas | None = None) -> None:
        """`replicas`, when given, follows the recorded frames (a checkpoint source for `recorder`)."""
        self.listen_path = listen_path
        self.replicas = replicas
        self.upstream_path = upstream_path
        self.recorder = recorder
        self.connections = 0
        self.frames = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> WireTap:
        self._server = await asyncio.start_unix_server(self._client, self.listen_path)
        os.chmod(self.listen_path, 0o600)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.listen_path)

    async def __aenter__(self) -> WireTap:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _client(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            u_reader, u_writer = await asyncio.open_unix_connection(self.upstream_path)
        except OSError as exc:
            self.recorder.connection(conn, "close", detail=f"upstream: {exc}")
            c_writer.close()
            return
        self.recorder.connection(conn, "open")
        channel: dict[str, str] = {}
        up = asyncio.create_task(self._pump(conn, OUT, c_reader, u_writer, channel))
        down = asyncio.create_task(self._pump(conn, IN, u_reader, c_writer, channel))
        self._tasks |= {up, down}
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (up, down):
                t.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            self._tasks -= {up, down}
            for w in (c_writer, u_writer):
                w.close()
            self.recorder.connection(conn, "close", channel.get("channel"))

    async def _pump(self, conn: int, direction: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    channel: dict[str, str]) -> None:
        decoder = FrameDecoder()
        pending = b""
        first = True
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                return
            writer.write(chunk)  # forward first, unchanged
            mono, wall = time.monotonic(), time.time()
            if direction == OUT and pending is not None:
                pending += chunk
                if len(pending) < 5:
                    continue
                self.recorder.frame(conn, OUT, PREAMBLE, pending[:5], mono, wall)
                chunk, pending = pending[5:], None
            try:
                payloads = decoder.feed(chunk)
            except FrameError:
                return
            for payload in payloads:
                if first and direction == OUT:  # the handshake
                    kind = UNTYPED
                    with contextlib.suppress(ValueError, AttributeError):
                        channel["channel"] = str(json.loads(payload).get("channel"))
                else:  # the daemon's first reply is typed (0x07) on a v4 typed bootstrap
                    kind = TYPED if payload and payload[0] < 0x20 else UNTYPED
                first = False
                rec = self.recorder.frame(conn, direction, kind, payload, mono, wall)
                if self.replicas is not None:
                    self.replicas.apply(rec)
                self.frames += 1
            await writer.drain()
