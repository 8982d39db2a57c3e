"""What each source said about each comm key, over time: the history store.

One entry per value a source held (or re-sent) for one key of one comm, with when it arrived,
who wrote it (the Automerge actor label, and the presence peer behind that actor when presence
names it) and what carried it (a frame seq or a kernel message id). The store is bounded by
bytes: when full, the oldest entries of the key holding the most bytes go first, so one
flooding key cannot erase the story of the quiet ones; what was dropped is counted.

Blame is read from these histories (who agrees with the kernel's last word, who moved last),
never from a value copied between sources.
"""

from __future__ import annotations

import collections
import heapq
import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from .divergence import json_equal

KERNEL = "kernel"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
ENTRY_OVERHEAD = 160  # bytes an entry costs beyond its encoded value (object, strings, deque slot)
FILE_FORMAT = "runtimed-inspector key history"


class Entry(msgspec.Struct, frozen=True, gc=False):
    """One value one source held for one key."""

    def __deepcopy__(self, memo: dict) -> Any:
        return self  # immutable: a copy of the session (time travel) shares it

    source: str  # topology | state | feed | echo | kernel | doc (named by the profile)
    comm_id: str
    key: str
    value: Any  # JSON-able
    t: float  # monotonic seconds
    wall: float  # seconds since the epoch
    writer: str | None = None  # Automerge actor label (documents), "kernel" for IOPub
    peer: str | None = None  # the presence peer behind `writer`, when presence names it
    carrier: str | None = None  # "frame 812" or "msg <kernel msg_id>"
    event_seq: int | None = None  # the timeline event that shows it
    size: int = 0  # bytes charged to the store


class KeyStats(msgspec.Struct):
    entries: int
    dropped: int
    bytes: int


def value_key(value: Any) -> Any:
    """A hashable stand-in for a JSON value, equal where `json_equal` says equal (1 == 1.0,
    true != 1, key order ignored); computed once per entry so detectors compare in O(1).
    Inside arrays and objects numbers compare by their JSON text (1 and 1.0 differ there)."""
    t = type(value)
    if t is bool:
        return ("bool", value)
    if t is int or t is str or value is None:
        return value
    if t is float:
        return ("nan",) if value != value else value  # json_equal: NaN equals NaN
    try:
        return ("json", msgspec.json.encode(value, order="sorted"))
    except (TypeError, msgspec.EncodeError):
        return ("repr", repr(value))


def _charge(value: Any) -> int:
    try:
        return ENTRY_OVERHEAD + len(msgspec.json.encode(value))
    except (TypeError, msgspec.EncodeError):
        return ENTRY_OVERHEAD + len(repr(value))


class _Series:
    __slots__ = ("entries", "bytes", "dropped")

    def __init__(self) -> None:
        self.entries: collections.deque[Entry] = collections.deque()
        self.bytes = 0
        self.dropped = 0

    def __deepcopy__(self, memo: dict) -> _Series:
        # entries are immutable: a copy of the session (time travel) shares them, copying only
        # the deque (at C speed, not one deepcopy call per entry)
        new = _Series()
        new.entries = collections.deque(self.entries)
        new.bytes, new.dropped = self.bytes, self.dropped
        return new


class KeyHistory:
    """Per comm key, every value each source held, in arrival order; bounded by bytes.

    `append` is O(1) (eviction is batched and amortised); `series` copies one key's entries.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < ENTRY_OVERHEAD:
            raise ValueError(f"max_bytes must be at least {ENTRY_OVERHEAD}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.dropped = 0  # entries evicted to stay under max_bytes, all keys
        self.appended = 0
        self.count = 0  # entries held now (len() without a walk over every key)
        # keys appended to since `take_touched` last ran: the findings' detectors look at those
        # only, so a snapshot at 2,000 comms costs what moved, not every key of the room
        self._touched: set[tuple[str, str]] = set()
        self._series: dict[tuple[str, str], _Series] = {}
        self._last: dict[tuple[str, str, str], Entry] = {}  # (comm, key, source) -> latest entry
        # told of every entry added: the session core in its own process ships them to the
        # window's copy (set there only; a time-travel copy of a session never has one)
        self.on_add: Callable[[Entry], None] | None = None

    # -- writing ------------------------------------------------------------------------------

    def append(self, source: str, comm_id: str, key: str, value: Any, t: float | None = None, *,
               wall: float | None = None, writer: str | None = None, peer: str | None = None,
               carrier: str | None = None, event_seq: int | None = None) -> Entry:
        entry = Entry(source, comm_id, key, value, time.monotonic() if t is None else t,
                      time.time() if wall is None else wall, writer, peer, carrier, event_seq, _charge(value))
        self.add(entry)
        return entry

    def add(self, entry: Entry) -> None:
        if entry.size <= 0:
            entry = msgspec.structs.replace(entry, size=_charge(entry.value))
        ck = (entry.comm_id, entry.key)
        ser = self._series.get(ck)
        if ser is None:
            ser = self._series[ck] = _Series()
        ser.entries.append(entry)
        ser.bytes += entry.size
        self.bytes += entry.size
        self.appended += 1
        self.count += 1
        self._touched.add(ck)
        self._last[(entry.comm_id, entry.key, entry.source)] = entry
        if self.bytes > self.max_bytes:
            self._evict()
        if self.on_add is not None:
            self.on_add(entry)

    def _evict(self) -> None:
        # Down to 90 % at once so the heap is built rarely (amortised O(1) per append).
        target = self.max_bytes * 0.9
        heap = [(-s.bytes, ck) for ck, s in self._series.items() if s.entries]
        heapq.heapify(heap)
        while self.bytes > target and heap:
            neg, ck = heapq.heappop(heap)
            ser = self._series[ck]
            if -neg != ser.bytes:  # stale
                if ser.entries:
                    heapq.heappush(heap, (-ser.bytes, ck))
                continue
            old = ser.entries.popleft()
            ser.bytes -= old.size
            ser.dropped += 1
            self.bytes -= old.size
            self.dropped += 1
            self.count -= 1
            if ser.entries:
                heapq.heappush(heap, (-ser.bytes, ck))

    def clear_comm(self, comm_id: str) -> None:
        """Forget a comm entirely (not counted as dropped: the user asked)."""
        for ck in [ck for ck in self._series if ck[0] == comm_id]:
            gone = self._series.pop(ck)
            self.bytes -= gone.bytes
            self.count -= len(gone.entries)
            self._touched.discard(ck)
        for lk in [lk for lk in self._last if lk[0] == comm_id]:
            del self._last[lk]

    # -- reading ------------------------------------------------------------------------------

    def comms(self) -> list[str]:
        return sorted({cid for cid, _ in self._series})

    def take_touched(self) -> list[tuple[str, str]]:
        """The keys appended to since the last call (in no set order), and forget them."""
        out, self._touched = list(self._touched), set()
        return out

    def series_keys(self) -> list[tuple[str, str]]:
        """Every (comm, key) with a history."""
        return list(self._series)

    def keys(self, comm_id: str) -> list[str]:
        return sorted(k for cid, k in self._series if cid == comm_id)

    def series(self, comm_id: str, key: str, source: str | None = None) -> list[Entry]:
        """One key's history in arrival order (all sources, or one)."""
        ser = self._series.get((comm_id, key))
        if ser is None:
            return []
        if source is None:
            return list(ser.entries)
        return [e for e in ser.entries if e.source == source]

    def since(self, comm_id: str, key: str, seen: int) -> tuple[list[Entry], int, int]:
        """For incremental views: (entries appended after the first `seen` ever appended to this
        key, the new total, how many of the oldest are gone from the store)."""
        ser = self._series.get((comm_id, key))
        if ser is None:
            return [], 0, 0
        total = ser.dropped + len(ser.entries)
        new = min(total - seen, len(ser.entries))
        if new <= 0:
            return [], total, ser.dropped
        start = len(ser.entries) - new
        if new > len(ser.entries) // 2:
            return list(ser.entries)[start:], total, ser.dropped
        return [ser.entries[i] for i in range(start, len(ser.entries))], total, ser.dropped

    def sources(self, comm_id: str, key: str) -> list[str]:
        return sorted(s for cid, k, s in self._last if cid == comm_id and k == key)

    def stats(self, comm_id: str, key: str) -> KeyStats:
        ser = self._series.get((comm_id, key))
        if ser is None:
            return KeyStats(0, 0, 0)
        return KeyStats(len(ser.entries), ser.dropped, ser.bytes)

    def last(self, comm_id: str, key: str, source: str) -> Entry | None:
        return self._last.get((comm_id, key, source))

    def last_by_source(self, comm_id: str, key: str) -> dict[str, Entry]:
        """The latest value each source held, with its carrier (kept even when evicted)."""
        return {s: e for (cid, k, s), e in self._last.items() if cid == comm_id and k == key}

    def moved_last(self, comm_id: str, key: str, among: Iterable[str] | None = None) -> Entry | None:
        """The most recent entry among the sources' latest ones: who moved last."""
        lasts = self.last_by_source(comm_id, key)
        pick = [e for s, e in lasts.items() if among is None or s in set(among)]
        return max(pick, key=lambda e: e.t, default=None)

    def agree_with_kernel(self, comm_id: str, key: str, kernel: str = KERNEL) -> tuple[list[str], list[str]] | None:
        """(sources whose latest value is the kernel's last word, sources that differ); None when
        the kernel said nothing about this key (its view is unknown, not empty)."""
        lasts = self.last_by_source(comm_id, key)
        word = lasts.get(kernel)
        if word is None:
            return None
        agree, differ = [], []
        for s, e in sorted(lasts.items()):
            if s != kernel:
                (agree if json_equal(e.value, word.value) else differ).append(s)
        return agree, differ

    def blame(self, comm_id: str, key: str, kernel: str = KERNEL) -> dict[str, Any]:
        """What the histories say about a disagreement on one key, for the divergence engine."""
        lasts = self.last_by_source(comm_id, key)
        moved = self.moved_last(comm_id, key)
        split = self.agree_with_kernel(comm_id, key, kernel)
        out: dict[str, Any] = {
            "comm_id": comm_id, "key": key,
            "last": {s: {"value": e.value, "t": e.t, "writer": e.writer, "peer": e.peer, "carrier": e.carrier}
                     for s, e in sorted(lasts.items())},
            "moved_last": moved.source if moved is not None else None,
            "kernel_word": None, "agree_with_kernel": None, "differ_from_kernel": None,
        }
        if split is not None:
            out["kernel_word"] = lasts[kernel].value
            out["agree_with_kernel"], out["differ_from_kernel"] = split
        return out

    def __iter__(self) -> Iterator[Entry]:
        for ser in self._series.values():
            yield from ser.entries

    def __len__(self) -> int:
        return self.count

    def summary(self) -> dict[str, Any]:
        return {"entries": len(self), "bytes": self.bytes, "max_bytes": self.max_bytes,
                "dropped": self.dropped, "keys": len(self._series)}

    # -- files --------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """A JSON file `history FILE` reads back (entries in arrival order per key)."""
        doc = {"format": FILE_FORMAT, "version": 1, "dropped": self.dropped,
               "entries": [msgspec.to_builtins(e) for e in self]}
        Path(path).write_text(json.dumps(doc))

    @classmethod
    def load(cls, path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> KeyHistory:
        """Read a saved history; raises ValueError with a one-line reason when it is not one."""
        try:
            raw = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not JSON: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != FILE_FORMAT:
            raise ValueError(f"{path} is not a {FILE_FORMAT} file")
        store = cls(max_bytes)
        entries, dropped = raw.get("entries") or [], raw.get("dropped") or 0
        if not isinstance(entries, list) or not isinstance(dropped, int):
            raise ValueError(f"{path}: 'entries' must be a list and 'dropped' an integer")
        try:
            for item in entries:
                store.add(msgspec.convert(item, Entry))
        except msgspec.ValidationError as exc:
            raise ValueError(f"{path}: bad entry: {exc}") from None
        store.dropped += dropped
        return store
