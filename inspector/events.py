"""The event stream a session produces: frames in and out, document changes, broadcasts,
presence, connection state and divergence transitions. `watch` prints them as JSON lines
and the GUI timeline lists the same objects.
"""

from __future__ import annotations

import collections
import copy
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

# Event kinds
FRAME = "frame"
DOC_CHANGED = "doc_changed"
BROADCAST = "broadcast"
PRESENCE = "presence"
CONNECTION = "connection"
DIVERGENCE = "divergence"
RESPONSE = "response"
CONTROL = "control"  # v4 session-control frames
ERROR = "error"
LIFECYCLE = "lifecycle"  # room evicted/closed, reconnected after a gap, kernel status and restarts
KINDS = (FRAME, DOC_CHANGED, BROADCAST, PRESENCE, CONNECTION, DIVERGENCE, RESPONSE, CONTROL, ERROR, LIFECYCLE)


class FrameRecord(msgspec.Struct, frozen=True, gc=False):
    seq: int
    t: float  # monotonic seconds
    direction: str  # "in" | "out"
    frame_type: int | None  # None for untyped frames (preamble, handshake, bootstrap reply)
    type_name: str
    size: int  # payload bytes, type byte included
    doc: str | None = None  # which document a sync frame belongs to
    body: bytes = b""  # kept for the hex view (capped by the log)

    def __deepcopy__(self, memo: dict) -> Any:
        return self  # immutable: a copy of the session (time travel) shares it


_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode


class Event(msgspec.Struct, frozen=True, gc=False):
    """One event. Its data is held packed (msgpack bytes, decoded on each read of `data`): a log
    of 50,000 events then holds no objects the cyclic collector must walk, whose full passes
    otherwise stall a long storm's event loop for 100-300 ms. Data that does not come back
    equal from msgpack (a tuple, a struct, a set) is held as it is. Neither holds the event, so
    the event is no part of a reference cycle (`gc=False`)."""

    seq: int
    t: float  # monotonic seconds
    wall: float  # seconds since the epoch
    kind: str
    summary: str
    held: Any = b""  # the data: packed bytes, or the dict itself
    target: str | None = None  # tree path the event touches, e.g. "comms/<id>" or "cells/<id>"

    @property
    def data(self) -> dict[str, Any]:
        held = self.held
        if type(held) is bytes:
            return _unpack(held) if held else {}
        return held

    def __deepcopy__(self, memo: dict) -> Any:
        return self  # immutable: a copy of the session (time travel) shares it

    def to_json(self) -> dict[str, Any]:
        data = self.data
        if "body" in data:
            data = {k: v for k, v in data.items() if k != "body"}
        return msgspec.to_builtins({"seq": self.seq, "t": self.t, "wall": self.wall, "kind": self.kind,
                                    "summary": self.summary, "data": data, "target": self.target})


def pack_data(data: dict[str, Any]) -> Any:
    """What an event holds for `data`: msgpack bytes when they decode back equal, else the dict."""
    if not data:
        return b""
    try:
        packed = _pack(data)
    except (TypeError, msgspec.EncodeError, OverflowError, ValueError):
        return data
    try:
        same = _unpack(packed) == data
    except (msgspec.DecodeError, ValueError, TypeError):
        same = False
    return packed if same else data


SIZE_WALK_BUDGET = 2_000  # objects an event's size walk visits before it estimates the rest


def held_size(obj: Any, budget: int = SIZE_WALK_BUDGET) -> int:
    """What `obj` holds in this process's memory, in bytes: `sys.getsizeof` over it and what it
    contains (dicts, lists, tuples, sets, structs), walked without recursion. Past `budget`
    objects the rest is estimated from its JSON (about three bytes held per byte of JSON, as
    measured on a storm's events), so a huge event costs no more to weigh than to encode."""
    total = 0
    stack = [obj]
    seen: set[int] = set()
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        if len(seen) >= budget:
            try:
                total += 3 * sum(len(msgspec.json.encode(x)) for x in (o, *stack))
            except (TypeError, msgspec.EncodeError, OverflowError):
                total += 1024 * (1 + len(stack))
            break
        seen.add(id(o))
        if o is None or o is True or o is False or (type(o) is int and -5 <= o <= 256):
            continue  # the interpreter's own, shared by everyone
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            # keys that are the same few names in every event (interned) are held once
            stack.extend(k for k in o if type(k) is not str or len(k) > 24)
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        elif isinstance(o, msgspec.Struct):
            stack.extend(getattr(o, f) for f in o.__struct_fields__)
    return total


def _event_size(ev: Event) -> int:
    """What an event holds in memory: the struct, its summary, target and data (packed: the
    bytes; held as it is: walked)."""
    held = ev.held
    data = sys.getsizeof(held) if type(held) is bytes else held_size(held)
    return sys.getsizeof(ev) + sys.getsizeof(ev.summary) + (sys.getsizeof(ev.target) if ev.target else 0) + data


def _frame_size(rec: FrameRecord) -> int:
    # the direction, type name and document name are the same few strings in every record
    return sys.getsizeof(rec) + sys.getsizeof(rec.body) + sys.getsizeof(rec.t) + 2 * sys.getsizeof(rec.seq)


class EventLog:
    """Append-only log with listeners, bounded by count and by bytes (events' data and kept frame
    bodies: a few 1 MiB broadcasts must not hold hundreds of MiB); the session owns one."""

    def __init__(self, maxlen: int = 50_000, body_cap: int = 64 * 1024, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._events: collections.deque[Event] = collections.deque(maxlen=maxlen)
        self._frames: collections.deque[FrameRecord] = collections.deque(maxlen=maxlen)
        self._listeners: list[Callable[[Event], None]] = []
        self._seq = 0
        self._fseq = 0
        self.body_cap = body_cap
        self.max_bytes = max_bytes
        self.bytes_held = 0  # what the kept events and frame bodies hold, against max_bytes
        self._sizes: collections.deque[int] = collections.deque()
        self._fsizes: collections.deque[int] = collections.deque()
        self.dropped = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.frames_in = 0
        self.frames_out = 0
        # monotonic -> wall time of an event; a replay sets the recording's, so events carry
        # the recorded wall times rather than the replay's
        self.wall_of: Callable[[float], float] | None = None

    def __deepcopy__(self, memo: dict) -> EventLog:
        # events, frame records and sizes are immutable: a copy of the session (time travel)
        # shares them, copying only the deques (at C speed); listeners follow the memo
        new = EventLog.__new__(EventLog)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            new.__dict__[k] = collections.deque(v, v.maxlen) if isinstance(v, collections.deque) \
                else copy.deepcopy(v, memo)
        return new

    def copy_without_records(self, memo: dict) -> EventLog:
        """A copy with the same counters and listeners that holds no events or frame records
        (a time-travel restore point: the timeline shows the pass's own log, and a position's log
        then holds what was logged since the restore point)."""
        new = EventLog.__new__(EventLog)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            new.__dict__[k] = collections.deque(maxlen=v.maxlen) if isinstance(v, collections.deque) \
                else copy.deepcopy(v, memo)
        new.bytes_held = 0
        return new

    def subscribe(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def emit(self, kind: str, summary: str, data: dict[str, Any] | None = None,
             target: str | None = None, t: float | None = None) -> Event:
        self._seq += 1
        mono = time.monotonic() if t is None else t
        wall = time.time() if self.wall_of is None else self.wall_of(mono)
        return self._add(Event(self._seq, mono, wall, kind, summary, pack_data(data) if data else b"", target))

    def adopt(self, ev: Event) -> Event:
        """Append an event another log made (the session core's, shipped from its process),
        keeping its number so key-history rows and recordings still name it."""
        self._seq = ev.seq
        return self._add(ev)

    def _add(self, ev: Event) -> Event:
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
            self.bytes_held -= self._sizes.popleft()
        self._events.append(ev)
        size = _event_size(ev)
        self._sizes.append(size)
        self.bytes_held += size
        self._trim()
        for fn in list(self._listeners):
            fn(ev)
        return ev

    def frame(self, direction: str, frame_type: int | None, type_name: str, payload_size: int,
              body: bytes = b"", doc: str | None = None, t: float | None = None) -> FrameRecord:
        self._fseq += 1
        return self.adopt_frame(FrameRecord(self._fseq, time.monotonic() if t is None else t, direction, frame_type,
                                            type_name, payload_size, doc, bytes(body[: self.body_cap])))

    def adopt_frame(self, rec: FrameRecord) -> FrameRecord:
        """Append a frame record another log made, keeping its number (see `adopt`)."""
        self._fseq = rec.seq
        if len(self._frames) == self._frames.maxlen:
            self.bytes_held -= self._fsizes.popleft()
        self._frames.append(rec)
        size = _frame_size(rec)
        self._fsizes.append(size)
        self.bytes_held += size
        self._trim()
        if rec.direction == "in":
            self.bytes_in += rec.size
            self.frames_in += 1
        else:
            self.bytes_out += rec.size
            self.frames_out += 1
        return rec

    def _trim(self) -> None:
        # oldest first, frames and events alike; the latest event always stays
        while self.bytes_held > self.max_bytes and (len(self._events) > 1 or self._frames):
            f_t = self._frames[0].t if self._frames else None
            if self._frames and (len(self._events) <= 1 or f_t is not None and f_t <= self._events[0].t):
                self._frames.popleft()
                self.bytes_held -= self._fsizes.popleft()
            else:
                self._events.popleft()
                self.bytes_held -= self._sizes.popleft()
                self.dropped += 1

    def frame_by_seq(self, seq: int) -> FrameRecord | None:
        """The recorded frame with this sequence number, while it is still kept (for hex views)."""
        if not self._frames:
            return None
        i = seq - self._frames[0].seq  # frame seqs are contiguous in the deque
        if 0 <= i < len(self._frames):
            rec = self._frames[i]
            return rec if rec.seq == seq else None
        return None

    def frames_since(self, seq: int) -> list[FrameRecord]:
        """The kept frame records numbered above `seq`, oldest first (what is new since then)."""
        out: list[FrameRecord] = []
        for rec in reversed(self._frames):
            if rec.seq <= seq:
                break
            out.append(rec)
        out.reverse()
        return out

    @property
    def last_frame_seq(self) -> int:
        return self._fseq

    def events(self) -> list[Event]:
        return list(self._events)

    def frames(self) -> list[FrameRecord]:
        return list(self._frames)

    def __iter__(self) -> Iterator[Event]:
        return iter(list(self._events))

    def __len__(self) -> int:
        return len(self._events)
