"""The records of a recording and their one binary encoding.

A recording is a sequence of records: session metadata first, then frames, kernel messages,
timers, connection boundaries and checkpoints as they happen. Each record is a msgspec
Struct tagged by its kind and encoded as a MessagePack array (fields by position, new fields only ever appended; bytes stay bytes: a frame body is
stored exactly as it crossed the socket, with no base64).
"""

from __future__ import annotations

from typing import Any

import msgspec

IN = "in"  # daemon -> inspector
OUT = "out"  # inspector -> daemon

# frame kinds: what the codec saw on the wire
PREAMBLE = "preamble"  # the 5 raw bytes before any frame (no length prefix)
UNTYPED = "untyped"  # a length-prefixed frame without a type byte (handshake, its reply, pool JSON)
TYPED = "typed"  # a length-prefixed frame whose first byte is its type


class Meta(msgspec.Struct, tag="meta", frozen=True, array_like=True):
    """Who was recorded: always the first record of a file."""

    inspector_version: str
    start_wall: float  # seconds since the epoch
    start_mono: float  # the monotonic clock at the same instant
    socket: str | None = None
    notebook_id: str | None = None
    protocol: str | None = None  # "v2" | "v4"
    protocol_version: int | None = None
    daemon_version: str | None = None
    extra: dict[str, Any] = {}


class Frame(msgspec.Struct, tag="frame", frozen=True, array_like=True):
    """One frame in or out. `payload` is the frame as the codec returns it (type byte first for
    typed frames); on the wire it was preceded by its u32 big-endian length, except a preamble.
    `redacted` frames carry no payload (see redact.py); `size` is always the original length."""

    conn: int
    direction: str  # IN | OUT
    kind: str  # PREAMBLE | UNTYPED | TYPED
    mono: float
    wall: float
    payload: bytes
    size: int = -1
    redacted: bool = False

    @property
    def frame_type(self) -> int | None:
        return self.payload[0] if self.kind == TYPED and self.payload else None


class Kernel(msgspec.Struct, tag="kernel", frozen=True, array_like=True):
    """A kernel IOPub message the tap verified, as the dict jupyter_client gave it."""

    mono: float
    wall: float
    msg: dict[str, Any]
    channel: str = "iopub"


class Timer(msgspec.Struct, tag="timer", frozen=True, array_like=True):
    """A timer the engine used: `name` and the monotonic time it was read or fired at, so replay
    feeds the engine the same clock."""

    name: str
    mono: float
    wall: float
    due: float | None = None


class Connection(msgspec.Struct, tag="connection", frozen=True, array_like=True):
    """A connection boundary: `event` is "open" or "close" (with the reason)."""

    conn: int
    event: str
    mono: float
    wall: float
    channel: str | None = None
    detail: str = ""


class DocState(msgspec.Struct, frozen=True, array_like=True):
    """One document at a checkpoint: what `Document.load` takes (a full save, possibly followed
    by the changes applied since: `saved_form.SavedForm`) and its heads (hex)."""

    saved: bytes
    heads: list[str]
    original_heads: list[str] | None = None  # set when redaction rebuilt the document


class Checkpoint(msgspec.Struct, tag="checkpoint", frozen=True, array_like=True):
    """The documents (by name: "notebook", "runtime_state", "comms", ...) and, optionally, the
    session core's own state, so a seek starts here instead of at the start."""

    mono: float
    wall: float
    conn: int
    docs: dict[str, DocState]
    core: Any = None


class Mark(msgspec.Struct, tag="mark", frozen=True, array_like=True):
    """A note on the timeline (a divergence transition, a user's bookmark)."""

    mono: float
    wall: float
    text: str
    data: dict[str, Any] = {}


class Manifest(msgspec.Struct, tag="manifest", frozen=True, array_like=True):
    """An output manifest the live session fetched from the daemon's blob server (HTTP, not the
    socket): the hash and what the server answered, the parsed manifest or the error, at the
    time the session had it. A replay shows the outputs the live session showed, when it did."""

    mono: float
    wall: float
    ref: str
    manifest: dict[str, Any] | None = None
    error: str | None = None


Record = Meta | Frame | Kernel | Timer | Connection | Checkpoint | Mark | Manifest

# kind byte in each record header, so a reader can index a file without decoding bodies
KIND_CODES: dict[type, int] = {Meta: 1, Frame: 2, Kernel: 3, Timer: 4, Connection: 5, Checkpoint: 6, Mark: 7,
                               Manifest: 8}
KIND_NAMES = {code: cls.__struct_config__.tag for cls, code in KIND_CODES.items()}

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)


def encode_record(rec: Record) -> bytes:
    return _encoder.encode(rec)


def decode_record(data: bytes) -> Record:
    return _decoder.decode(data)


def mono_of(rec: Record) -> float:
    return rec.start_mono if isinstance(rec, Meta) else rec.mono
