"""Snapshots shipped in pieces: what a session core running in another process sends the window.

Decoding a whole 10,000-cell snapshot takes 20-130 ms, longer than a frame, so a snapshot goes as
the entries that changed since the last one (cells, comms, feed comms), in chunks of at most
`CHUNK` entries, followed by a header: the snapshot without those entries plus their order as
keys. A receiver decodes one message per event-loop callback (`SnapshotAssembler.take`) and builds
the snapshot once the header arrives, reusing the entries it already holds. A join sends every
entry once; a slider update sends one comm and a header.

The encoder and the assembler do no I/O (bytes in, bytes out), so a test drives both directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from .integrity import IntegrityReport
from .snapshot import CellView, CommView, FeedCommView, Snapshot

CHUNK = 500  # entries per message: a 1,000-entry chunk of a 10k room decodes in ~1-3.5 ms


class CellChunk(msgspec.Struct, tag="cells", array_like=True):
    keys: list[str]
    entries: list[CellView]


class CommChunk(msgspec.Struct, tag="comms", array_like=True):
    keys: list[str]
    entries: list[CommView]


class FeedChunk(msgspec.Struct, tag="feed", array_like=True):
    keys: list[str]
    entries: list[FeedCommView]


class Header(msgspec.Struct, tag="header", array_like=True):
    """The snapshot with no cells, comms or feed comms; each order is None when unchanged."""

    snap: Snapshot
    cells: list[str] | None
    comms: list[str] | None
    feed: list[str] | None
    integrity: IntegrityReport | None  # the snapshot's is typed Any: it would decode as a dict


StreamMessage = CellChunk | CommChunk | FeedChunk | Header
_PARTS: tuple[tuple[type, str], ...] = ((CellChunk, "cells"), (CommChunk, "comms"), (FeedChunk, "feed"))


def _keyed(entries: Iterable[Any], key_of: Any) -> tuple[list[str], list[Any]]:
    # a hostile room may repeat an id: the n-th repeat gets its own key, so no entry is lost
    keys: list[str] = []
    seen: dict[str, int] = {}
    for e in entries:
        k = key_of(e)
        n = seen.get(k)
        seen[k] = 0 if n is None else n + 1
        keys.append(k if n is None else f"{k}\x00{n + 1}")
    return keys, list(entries)


def _cell_key(c: CellView) -> str:
    return c.id or c.key


def _comm_key(c: CommView | FeedCommView) -> str:
    return c.comm_id


class SnapshotEncoder:
    """Turns each snapshot into the messages a receiver needs, given what it sent before."""

    def __init__(self, chunk: int = CHUNK) -> None:
        self.chunk = chunk
        self._sent: list[dict[str, Any]] = [{}, {}, {}]  # per part: key -> entry last sent
        self._order: list[list[str] | None] = [None, None, None]
        self._enc = msgspec.msgpack.Encoder()
        self.entries_sent = 0

    def reset(self) -> None:
        """Forget what was sent (a new receiver): the next snapshot goes whole."""
        self._sent = [{}, {}, {}]
        self._order = [None, None, None]

    def encode(self, snap: Snapshot) -> list[bytes]:
        out: list[bytes] = []
        orders: list[list[str] | None] = []
        parts = (_keyed(snap.cells, _cell_key), _keyed(snap.comms, _comm_key), _keyed(snap.feed.comms, _comm_key))
        for i, ((cls, _name), (keys, entries)) in enumerate(zip(_PARTS, parts, strict=True)):
            sent = self._sent[i]
            changed_k, changed_e = [], []
            for k, e in zip(keys, entries, strict=True):
                old = sent.get(k)
                if old is not e and old != e:
                    changed_k.append(k)
                    changed_e.append(e)
            for s in range(0, len(changed_k), self.chunk):
                out.append(self._encode(cls(changed_k[s:s + self.chunk], changed_e[s:s + self.chunk])))
            self._sent[i] = dict(zip(keys, entries, strict=True))
            orders.append(None if keys == self._order[i] else keys)
            self._order[i] = keys
            self.entries_sent += len(changed_k)
        bare = msgspec.structs.replace(snap, cells=(), comms=(), feed=msgspec.structs.replace(snap.feed, comms=()),
                                       integrity=None)
        out.append(self._encode(Header(bare, *orders, snap.integrity)))
        return out

    def _encode(self, msg: StreamMessage) -> bytes:
        try:
            return self._enc.encode(msg)
        except UNSHIPPABLE:
            return self._enc.encode(_textual(msg))


# What msgpack cannot carry: an integer beyond 64 bits, or nesting deeper than the encoder's
# limit (the readers stop at MAX_DEPTH, but a snapshot must never stop the stream).
UNSHIPPABLE = (OverflowError, TypeError, RecursionError, msgspec.EncodeError)
NOT_SHIPPED = "(not shipped to the window: nested too deep for the stream)"


def _textual(msg: Any) -> Any:
    """`msg` with what msgpack cannot carry replaced: big integers as their decimal text, values
    nested too deep as a marker; each entry touched says so in its flags."""
    if isinstance(msg, Header):
        try:
            snap = msgspec.convert(_big_ints_as_text(msgspec.json.encode(msg.snap)), Snapshot)
        except UNSHIPPABLE:
            snap = msgspec.structs.replace(msg.snap, metadata=NOT_SHIPPED, extra_root={}, documents=(),
                                           warnings=(*msg.snap.warnings, NOT_SHIPPED))
        return msgspec.structs.replace(msg, snap=snap)
    fixed = []
    for e in msg.entries:
        try:
            msgspec.msgpack.encode(e)
            fixed.append(e)
            continue
        except UNSHIPPABLE:
            pass
        try:
            e = msgspec.convert(_big_ints_as_text(msgspec.json.encode(e)), type(e))
            fixed.append(msgspec.structs.replace(e, flags=(*e.flags, "big_int_as_text")))
        except UNSHIPPABLE:
            fixed.append(_not_shipped(e))
    return type(msg)(msg.keys, fixed)


def _not_shipped(e: Any) -> Any:
    # the entry's identity and place stay; its free-form values do not
    free = {"state": NOT_SHIPPED, "metadata": NOT_SHIPPED, "extra": {}, "outputs": (), "key_writers": {},
            "captured": None, "echo_shadow": None}
    fields = {k: v for k, v in free.items() if k in e.__struct_fields__}
    flags = {"flags": (*e.flags, "not_shipped")} if "flags" in e.__struct_fields__ else {}
    return msgspec.structs.replace(e, **fields, **flags)


def _big_ints_as_text(raw: bytes) -> Any:
    # msgspec's JSON decoder reads big integers as int; a float_hook cannot see them, so numbers
    # outside 64 bits are re-read through the stdlib decoder with int parsing that keeps text
    import json

    def parse_int(s: str) -> Any:
        v = int(s)
        return v if -(1 << 63) <= v < (1 << 64) else s

    return json.loads(raw, parse_int=parse_int)


class SnapshotAssembler:
    """The receiving end: `take` one message at a time; a header gives the whole snapshot."""

    def __init__(self) -> None:
        self._dec = msgspec.msgpack.Decoder(StreamMessage)
        self._held: list[dict[str, Any]] = [{}, {}, {}]
        self._pending: list[dict[str, Any]] = [{}, {}, {}]
        self._order: list[list[str]] = [[], [], []]
        self._parts: list[tuple[Any, ...]] = [(), (), ()]
        self.snapshot: Snapshot | None = None

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def take(self, data: bytes) -> Snapshot | None:
        return self.take_message(self._dec.decode(data))

    def take_message(self, msg: StreamMessage) -> Snapshot | None:
        if not isinstance(msg, Header):
            i = next(n for n, (cls, _) in enumerate(_PARTS) if isinstance(msg, cls))
            self._pending[i].update(zip(msg.keys, msg.entries, strict=True))
            return None
        parts = []
        for i, order in enumerate((msg.cells, msg.comms, msg.feed)):
            held, pending = self._held[i], self._pending[i]
            if order is None and not pending:
                parts.append(self._parts[i])  # the same tuple: the tree reuses the whole group at a glance
                continue
            if order is not None:
                self._order[i] = order
            new = {k: pending[k] if k in pending else held[k] for k in self._order[i]}
            self._held[i], self._pending[i] = new, {}
            parts.append(tuple(new.values()))
        self._parts = parts
        snap = msg.snap
        self.snapshot = msgspec.structs.replace(snap, cells=parts[0], comms=parts[1],
                                                feed=msgspec.structs.replace(snap.feed, comms=parts[2]),
                                                integrity=msg.integrity)
        return self.snapshot
