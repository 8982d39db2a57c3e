"""Time travel over a recording: one pass of the recording through the session core (in slices,
so a window stays interactive while it runs), keeping copies of the whole replay along the way;
a seek starts from the nearest copy at or before the point and replays only the records after it.

A restore point is the replay driver with its session core, deep-copied, sharing the immutable
records (key-history entries: their `__deepcopy__` returns themselves) and the recording
reader, and holding each document as its saved bytes (a fork costs about 1 KB a change of
history: 21 MB at 18,000 changes, so hundreds of forks would not fit). A seek loads the
document of its restore point once (kept for the next seeks near it), forks it and replays.
A restore point holds no event records: the timeline shows the pass's own events, so the log
of a position holds what was logged since its restore point (its counters are whole).

Restore points are taken once at least `every_s` seconds of replay work were spent since the
previous one, so a seek replays at most about that much work (plus the load it starts from),
whatever the recording's length. Their number is bounded (`max_copies`): past it, every other
one is dropped and the spacing doubles, so they stay evenly spread over the recording.

The result of a seek is the session core as a replay from the start would leave it: the same
snapshot, divergences and counters, and the same events since its restore point
(`tests/test_time_travel.py` compares them at backward, forward and repeated points).
"""

from __future__ import annotations

import bisect
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

from automerge import core as am

from . import events as ev
from .replay_driver import Replay, copy_replay
from .session_core import SessionCore

__all__ = ["TimeTravel"]


@dataclass
class _Copy:
    index: int  # the next record the copied replay applies
    replay: Replay  # without documents or event records (see `copy_replay`)
    saved: dict[int, bytes]  # each replica's document, `Document.save()` (compact: a fork is ~1 KB a change)


def _take(rp: Replay) -> _Copy:
    saved = {ft: rep.doc.save() for ft, rep in rp.core.replicas.items()}
    return _Copy(rp.index, copy_replay(rp, docs=False, records=False), saved)


class TimeTravel:
    """The recording at `path`, replayed once (`advance` / `finish`) and then seekable."""

    def __init__(self, path: str, *, every_s: float = 0.03, max_copies: int = 1024, loaded_docs: int = 24,
                 divergence: bool = True) -> None:
        self.replay = Replay(path, divergence=divergence)
        self.meta = self.replay.meta
        self.every_s = every_s
        self.max_copies = max_copies
        # table[j]: the last event seq once the records before index j + 1 were applied
        self.table: list[int] = [0] * self.replay.index
        self.events: list[ev.Event] = []  # the timeline: every event but frames, in seq order
        self._copies: list[_Copy] = [_take(self.replay)]
        self._since_copy = 0.0
        self._last_seen = 0
        self._cursor: Replay | None = None
        self.loaded_docs = loaded_docs
        self._docs: collections.OrderedDict[tuple[int, int], am.Document] = collections.OrderedDict()
        self.copy_seconds = 0.0  # spent copying, for the benchmark and the status line
        self.pass_seconds = 0.0  # spent replaying in the pass

    # -- the pass ------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.replay.done

    @property
    def progress(self) -> float:
        return self.replay.index / max(1, len(self.replay))

    @property
    def records(self) -> int:
        """How many records the pass has applied (a seek past them waits for the pass)."""
        return self.replay.index

    def advance(self, budget_s: float = 0.01, on_step: Callable[[int], None] | None = None) -> bool:
        """Replay records for about `budget_s` seconds; True once the whole recording is in."""
        rp = self.replay
        start = time.perf_counter()
        end = start + budget_s
        while not rp.done:
            t0 = time.perf_counter()
            rp.apply(rp.reader.record(rp.index))
            rp.index += 1
            self.table.append(rp.core.log._seq)
            self._collect_events()
            t1 = time.perf_counter()
            self._since_copy += t1 - t0
            if on_step is not None:
                on_step(rp.index)
            if self._since_copy >= self.every_s:
                self._take_copy()
            if time.perf_counter() >= end:
                break
        self.pass_seconds += time.perf_counter() - start
        return rp.done

    def finish(self) -> None:
        while not self.advance(1.0):
            pass

    def _collect_events(self) -> None:
        log = self.replay.core.log
        if log._seq == self._last_seen:
            return
        held = log._events  # seqs are contiguous in it: the newest n are the last n
        n = min(log._seq - self._last_seen, len(held))
        self._last_seen = log._seq
        self.events.extend(e for e in (held[-i] for i in range(n, 0, -1)) if e.kind != ev.FRAME)

    def _take_copy(self) -> None:
        t0 = time.perf_counter()
        self._copies.append(_take(self.replay))
        if len(self._copies) > self.max_copies:
            # keep the first one (the recording's start) and every other one after it
            self._copies = self._copies[:1] + self._copies[2::2]
            self.every_s *= 2
        self.copy_seconds += time.perf_counter() - t0
        self._since_copy = 0.0

    def close(self) -> None:
        """Drop the restore points and loaded documents (the window closed)."""
        self._copies.clear()
        self._docs.clear()
        self._cursor = None

    # -- seeking -------------------------------------------------------------------------------

    def index_of_seq(self, seq: int) -> int:
        """The record index a replay to event `seq` stops before, as `Replay.run(At(seq=N))`
        stops: right after the record that logged N when N was its last event, else before that
        record (so the room is never one with a later event in it); past the end: the end."""
        table = self.table  # table[j]: the last seq once the records before index j + 1 were applied
        j = bisect.bisect_left(table, seq)
        if j >= len(table):
            return len(table)
        return j + 1 if table[j] == seq else j

    def seek(self, stop: int) -> SessionCore:
        """The core with the records before index `stop` applied (clamped to what the pass has
        applied), from the nearest copy at or before it.

        Always from a copy, never on from the previous seek: a snapshot taken of a core is part
        of its history (the integrity report dates a comm's shape and a reference from the first
        snapshot that showed it), so continuing a core that was shown would make the room at a
        point depend on where one looked before. The pass never takes a snapshot, so its copies
        give what one replay from the start to the point gives."""
        stop = max(0, min(stop, self.replay.index))
        cur = self._cursor
        if cur is not None and cur.index == stop:
            return cur.core  # the same point again
        k = bisect.bisect_right([c.index for c in self._copies], stop) - 1
        cur = self._cursor = self._restore(self._copies[max(0, k)])
        return cur.run_to(stop)

    def _restore(self, c: _Copy) -> Replay:
        cur = copy_replay(c.replay, docs=False)
        for ft, rep in cur.core.replicas.items():
            rep.adopt_identical(self._loaded(c, ft).fork())
        return cur

    def _loaded(self, c: _Copy, ft: int) -> am.Document:
        """The document of restore point `c`, loaded once and kept for the next seeks near it
        (a load costs ~100 ms at 18,000 changes, a fork of the loaded one ~10 ms)."""
        key = (c.index, ft)
        doc = self._docs.get(key)
        if doc is None:
            doc = self._docs[key] = am.Document.load(c.saved[ft])
            while len(self._docs) > self.loaded_docs:
                self._docs.popitem(last=False)
        else:
            self._docs.move_to_end(key)
        return doc

    def seek_seq(self, seq: int) -> SessionCore:
        return self.seek(self.index_of_seq(seq))

    def wall_of(self, mono: float) -> float:
        return self.replay.wall_of(mono)

    @property
    def copies(self) -> int:
        return len(self._copies)
