"""The one frame codec: preamble, u32 big-endian length-prefixed frames, typed frame bytes.

Used by the peer session, the pool client and the testbed server alike.
"""

from __future__ import annotations

import asyncio
import enum
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..errors import EXIT_CLOSED, BadFrame

MAGIC = bytes([0xC0, 0xDE, 0x01, 0xAC])
DATA_FRAME_MAX = 100 * 1024 * 1024  # every frame after the handshake
CONTROL_FRAME_MAX = 64 * 1024  # the handshake frame only
PRESENCE_MAX_V4 = 4096


class FrameType(enum.IntEnum):
    """Typed-frame bytes. v2 defines 0x00-0x04; v4 adds 0x05-0x0a."""

    AUTOMERGE_SYNC = 0x00
    REQUEST = 0x01
    RESPONSE = 0x02
    BROADCAST = 0x03
    PRESENCE = 0x04
    RUNTIME_STATE_SYNC = 0x05
    POOL_STATE_SYNC = 0x06
    SESSION_CONTROL = 0x07
    BLOB_UPLOAD = 0x08
    COMMS_SYNC = 0x09
    COMMENTS_SYNC = 0x0A

    @classmethod
    def name_of(cls, value: int) -> str:
        try:
            return cls(value).name.lower()
        except ValueError:
            return f"unknown_0x{value:02x}"


class FrameError(BadFrame):
    """A frame that cannot be accepted: the connection it came on is no longer usable."""


class FrameTooLarge(FrameError):
    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame too large: {length} bytes (max {limit})")
        self.length = length
        self.limit = limit


class ConnectionClosed(FrameError):
    """EOF. `clean` is True at a frame boundary or inside the length prefix."""

    exit_code = EXIT_CLOSED

    def __init__(self, clean: bool, detail: str = "") -> None:
        super().__init__(detail or ("connection closed" if clean else "connection closed inside a frame"))
        self.clean = clean


def preamble(version: int) -> bytes:
    return MAGIC + bytes([version])


def parse_preamble(data: bytes) -> int:
    """Return the protocol version byte; raise FrameError on wrong magic."""
    if len(data) != 5 or data[:4] != MAGIC:
        raise FrameError(f"invalid magic bytes: expected {MAGIC.hex()}, got {data[:4].hex()}")
    return data[4]


def encode_frame(payload: bytes, limit: int = DATA_FRAME_MAX) -> bytes:
    if len(payload) > limit:
        raise FrameTooLarge(len(payload), limit)
    return struct.pack(">I", len(payload)) + payload


def encode_typed(frame_type: int, body: bytes, limit: int = DATA_FRAME_MAX) -> bytes:
    return encode_frame(bytes([frame_type]) + body, limit)


@dataclass(frozen=True, slots=True)
class TypedFrame:
    frame_type: int
    body: bytes

    @property
    def type_name(self) -> str:
        return FrameType.name_of(self.frame_type)


def split_typed(payload: bytes) -> TypedFrame:
    if not payload:
        raise FrameError("empty frame")
    return TypedFrame(payload[0], bytes(payload[1:]))


class FrameDecoder:
    """Incremental decoder: feed arbitrary byte chunks, get whole payloads back.

    Robust to frames split at every byte; enforces the size limit as soon as the
    length prefix is known, before buffering the payload.
    """

    def __init__(self, limit: int = DATA_FRAME_MAX) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._need: int | None = None

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            if self._need is None:
                if len(self._buf) < 4:
                    break
                (length,) = struct.unpack_from(">I", self._buf)
                if length > self.limit:
                    raise FrameTooLarge(length, self.limit)
                del self._buf[:4]
                self._need = length
            if len(self._buf) < self._need:
                break
            out.append(bytes(self._buf[: self._need]))
            del self._buf[: self._need]
            self._need = None
        return out

    def at_boundary(self) -> bool:
        """True when EOF now would be a clean close (nothing or only part of a length prefix)."""
        return self._need is None


async def read_frame(reader: asyncio.StreamReader, limit: int = DATA_FRAME_MAX) -> bytes:
    """Read one frame from a stream. Raises ConnectionClosed / FrameTooLarge."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        raise ConnectionClosed(True) from exc
    (length,) = struct.unpack(">I", head)
    if length > limit:
        raise FrameTooLarge(length, limit)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise ConnectionClosed(False, f"connection closed inside a {length}-byte frame") from exc


async def frames(reader: asyncio.StreamReader, limit: int = DATA_FRAME_MAX) -> AsyncIterator[bytes]:
    """Every frame until the peer closes at a frame boundary (EOF inside a frame raises)."""
    while True:
        try:
            yield await read_frame(reader, limit)
        except ConnectionClosed as exc:
            if exc.clean:
                return
            raise
