"""A change lost between the real runtimed 2.9.0 and the inspector is asked for again by a rejoin.

A proxy on a Unix socket of our own sits between the session and the daemon and, on the first
notebook connection only, takes the changes out of the next comms-document sync message that
carries any (everything else of the message is kept byte for byte). The daemon's sync state has
counted them sent, so on that connection it never sends them again: only the re-request (a
rejoin) brings the room back to the daemon's heads."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from contextlib import asynccontextmanager
from typing import Any

import pytest
from waiting import wait_until

from inspector import events as ev
from inspector.change_ops import encode_uleb
from inspector.document import chunks, parse_sync_message
from inspector.protocol.framing import FrameDecoder, encode_frame
from inspector.session import LIVE, PeerSession, SessionConfig

COMMS_SYNC = 0x09


def without_changes(body: bytes) -> tuple[bytes, int]:
    """The sync message with its changes taken out (heads, need, have and anything after the
    changes kept as they were); returns it and how many change chunks were taken out."""
    changes = parse_sync_message(body).changes
    if not changes:
        return body, 0
    section = encode_uleb(len(changes)) + b"".join(encode_uleb(len(c)) + c for c in changes)
    i = body.rindex(section)  # the change list comes last but for what a newer format appends
    return body[:i] + encode_uleb(0) + body[i + len(section):], sum(len(chunks(c)) for c in changes)


class LosingProxy:
    """Forwards every connection to the daemon; when armed, the first notebook connection loses
    the changes of its next comms sync message that carries any."""

    def __init__(self, upstream: str, path: str) -> None:
        self.upstream = upstream
        self.path = path
        self.armed = False
        self.lost = 0  # change chunks taken out
        self.notebook_connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> LosingProxy:
        self._server = await asyncio.start_unix_server(self._serve, self.path)
        os.chmod(self.path, 0o600)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
        pre = await reader.readexactly(5)
        up_writer.write(pre)
        handshake = await reader.readexactly(int.from_bytes(await reader.readexactly(4), "big"))
        up_writer.write(encode_frame(handshake))
        is_notebook = json.loads(handshake).get("channel") == "notebook_sync"
        index = None
        if is_notebook:
            index = self.notebook_connections
            self.notebook_connections += 1
        pumps = [asyncio.create_task(self._pump(reader, up_writer, None)),
                 asyncio.create_task(self._pump(up_reader, writer, index))]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for t in pumps:
            t.cancel()
        writer.close()
        up_writer.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, index: int | None) -> None:
        decoder = FrameDecoder()
        while data := await src.read(65536):
            for payload in decoder.feed(data):
                if (index == 0 and self.armed and payload[:1] == bytes([COMMS_SYNC])
                        and payload[1:2] in (b"\x42", b"\x43")):
                    body, taken = without_changes(payload[1:])
                    if taken:
                        self.armed = False
                        self.lost += taken
                        payload = bytes([COMMS_SYNC]) + body
                dst.write(encode_frame(payload))
            await dst.drain()


@asynccontextmanager
async def proxied(real_socket: str):
    with tempfile.TemporaryDirectory(prefix="rtd-proxy-") as tmp:
        os.chmod(tmp, 0o700)
        async with LosingProxy(real_socket, os.path.join(tmp, "proxy.sock")) as proxy:
            yield proxy


def slider(s: PeerSession) -> Any:
    return next(((c.state or {}).get("value") for c in s.snapshot().comms if c.model_name == "IntSliderModel"), None)


@pytest.mark.parametrize("source, final", [
    ("s.value = 7", 7),  # one change, lost whole: only the daemon's heads tell
    ("s.value = 5\nimport time; time.sleep(0.3)\ns.value = 8", 8),  # the next depends on the lost one
], ids=["lost-whole", "next-depends-on-it"])
async def test_a_change_lost_on_the_way_from_the_real_daemon_is_re_requested(real_socket, widget_room,
                                                                             source, final) -> None:
    async with proxied(real_socket) as proxy:
        s = PeerSession(SessionConfig(proxy.path, widget_room.notebook_id, rerequest_after_s=0.5))
        async with s.running():
            await s.wait_for(lambda snap: snap.connection == LIVE and slider(s) is not None, 60)
            await s.wait_settled(0.3, 30)
            assert proxy.notebook_connections == 1
            proxy.armed = True
            res = await widget_room.acall(op="run", source=source)
            assert res["success"], res
            await wait_until(lambda: proxy.lost >= 1, "a comms change lost on the way", 30, poll=0.05)
            await wait_until(lambda: proxy.notebook_connections == 2, "the rejoin", 30, poll=0.05)
            await s.wait_for(lambda snap: slider(s) == final and snap.connection == LIVE, 30)
            rerequests = [e for e in s.log.events() if "rerequest" in e.data]
            assert len(rerequests) == 1 and rerequests[0].kind == ev.LIFECYCLE and rerequests[0].data["rerequest"]
            await s.wait_settled(0.3, 30)
            assert all(rep.converged for rep in s.replicas.values())
            assert s.error is None and proxy.notebook_connections == 2
