"""The daemon-level `pool` channel: ping, list_rooms, daemon info; and protocol probing.

A pool connection is not a notebook peer: it joins no room and launches nothing.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .connection import close_writer, open_channel
from .errors import Closed, InspectorError, NotRuntimed, ProtocolMismatch, Timeout
from .protocol import messages as m
from .protocol.framing import ConnectionClosed, FrameError, encode_frame, read_frame

SUPPORTED_VERSIONS = (2, 4)


class PoolClient:
    def __init__(self, path: str, version: int = 2, *, allow_other_user: bool = False, timeout: float = 5.0) -> None:
        self.path = path
        self.version = version
        self.allow_other_user = allow_other_user
        self.timeout = timeout
        self._rw: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> PoolClient:
        self._rw = await open_channel(self.path, self.version, m.Pool(),
                                      allow_other_user=self.allow_other_user, timeout=self.timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._rw:
            await close_writer(self._rw[1])
            self._rw = None

    async def request(self, req: m.PoolRequest) -> m.PoolResponse | m.Unknown:
        assert self._rw is not None, "use PoolClient as an async context manager"
        reader, writer = self._rw
        async with self._lock:
            try:
                writer.write(encode_frame(m.encode(req)))
                await writer.drain()
                payload = await asyncio.wait_for(read_frame(reader), self.timeout)
            except TimeoutError:
                raise Timeout(f"no answer to pool {m.tag_of(req)} within {self.timeout:.0f} s") from None
            except ConnectionClosed:
                raise Closed(f"the daemon closed the pool connection after {m.tag_of(req)} "
                             f"(protocol version {self.version} refused?)") from None
            except (ConnectionError, BrokenPipeError) as exc:
                raise Closed(f"pool connection lost: {exc}") from None
            except FrameError as exc:
                raise NotRuntimed(f"{self.path} answered with something that is not a runtimed frame: {exc}") from None
        try:
            return m.decode_pool_response(payload)
        except m.MessageError as exc:
            raise NotRuntimed(f"{self.path} answered the pool channel with {exc}") from None

    async def ping(self) -> m.Pong:
        resp = await self.request(m.Ping())
        if not isinstance(resp, m.Pong):
            raise NotRuntimed(f"unexpected answer to ping: {m.to_builtins(resp)!r}")
        return resp

    async def list_rooms(self) -> list[m.RoomInfo]:
        resp = await self.request(m.ListRooms())
        if isinstance(resp, m.RoomsList):
            return resp.rooms
        if isinstance(resp, m.PoolError):
            raise InspectorError(f"list_rooms failed: {resp.message}")
        raise InspectorError(f"unexpected answer to list_rooms: {m.to_builtins(resp)!r}")

    async def daemon_info(self) -> m.DaemonInfoResp | None:
        if self.version < 4:
            return None
        resp = await self.request(m.GetDaemonInfo())
        return resp if isinstance(resp, m.DaemonInfoResp) else None


@dataclass
class DaemonProbe:
    path: str
    protocol_version: int
    daemon_version: str | None
    rooms: list[m.RoomInfo] = field(default_factory=list)
    blob_port: int | None = None
    pid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def supported(self) -> bool:
        return self.protocol_version in SUPPORTED_VERSIONS

    def room(self, notebook_id: str) -> m.RoomInfo | None:
        return next((r for r in self.rooms if r.notebook_id == notebook_id), None)


def _daemon_json(path: str) -> dict[str, Any]:
    try:
        data = json.loads((Path(path).parent / "daemon.json").read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


async def blob_port_v2(path: str, allow_other_user: bool = False, timeout: float = 3.0) -> int | None:
    """The v2 `blob` channel answers get_port; daemon.json is the fallback."""
    try:
        reader, writer = await open_channel(path, 2, m.BlobChannel(), allow_other_user=allow_other_user,
                                            timeout=timeout)
    except InspectorError:
        return _daemon_json(path).get("blob_port")
    try:
        writer.write(encode_frame(b'{"action":"get_port"}'))
        await writer.drain()
        payload = await asyncio.wait_for(read_frame(reader), timeout)
        port = json.loads(payload).get("port")
        return int(port) if isinstance(port, int) else None
    except (TimeoutError, FrameError, ValueError, ConnectionError, AttributeError):
        return _daemon_json(path).get("blob_port")
    finally:
        await close_writer(writer)


async def probe(path: str, *, allow_other_user: bool = False, timeout: float = 5.0,
                with_rooms: bool = True) -> DaemonProbe:
    """Learn the daemon's protocol version without joining anything.

    A v2 daemon answers a v2 pool ping; a v4 daemon's pool answers any version and names its
    own in `pong`; a v4 daemon closes a v2 preamble on every other channel.
    """
    last: InspectorError | None = None
    for version in (2, 4):
        try:
            async with PoolClient(path, version, allow_other_user=allow_other_user, timeout=timeout) as pool:
                pong = await pool.ping()
                proto = pong.protocol_version or version
                probe_ = DaemonProbe(path, proto, pong.daemon_version)
                if proto != version:
                    if proto not in SUPPORTED_VERSIONS:
                        return probe_
                    # A v4 pool answers any preamble version: keep asking on this connection.
                    pool.version = proto
                if with_rooms:
                    probe_.rooms = await pool.list_rooms()
                info = await pool.daemon_info()
                if info is not None:
                    probe_.blob_port, probe_.pid = info.blob_port, info.pid
                    probe_.info = m.to_builtins(info)
                    probe_.daemon_version = probe_.daemon_version or info.daemon_version
            if probe_.protocol_version == 2:
                dj = _daemon_json(path)
                probe_.daemon_version = probe_.daemon_version or dj.get("version")
                probe_.pid = dj.get("pid")
                probe_.info = dj
                probe_.blob_port = await blob_port_v2(path, allow_other_user)
            return probe_
        except Closed as exc:
            last = exc
            continue
        except Timeout as exc:
            last = exc
            continue
    if isinstance(last, Timeout):
        raise NotRuntimed(f"{path} accepted the connection but never answered a runtimed ping "
                          f"(tried protocol versions 2 and 4)")
    raise NotRuntimed(f"{path} closed the connection on a runtimed ping with protocol versions 2 and 4: "
                      "not a runtimed socket, or a daemon of an unsupported version")


def require_supported(p: DaemonProbe) -> None:
    if not p.supported:
        raise ProtocolMismatch(
            f"the daemon speaks protocol {p.protocol_version} ({p.daemon_version or 'unknown version'}); "
            f"this inspector speaks protocols {', '.join(map(str, SUPPORTED_VERSIONS))}",
            version=p.protocol_version, daemon_version=p.daemon_version)
