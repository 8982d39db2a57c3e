"""Time travel over a recording: one pass of the recording through the session core (in slices,
so a window stays interactive while it runs), keeping copies of the whole replay along the way;
a seek starts from the nearest copy at or before the point and replays only the records after it.

A restore point is the replay driver with its session core, deep-copied, sharing the immutable
records (key-history entries: their `__deepcopy__` returns themselves) and the recording
reader, without its documents: for each document it keeps the heads and the changes (raw
bytes) that arrived since the previous restore point. A few restore points, the anchors, also
hold a fork of each document. A seek forks the nearest anchor (or a document an earlier seek
built, kept for the next seeks near it) and applies the changes of the restore points up to its
own: loading a saved document costs ~7 us a change of its whole history (120-190 ms at 18,000
changes) and holding one ~1.2 KB a change, so neither can be done for every restore point,
while applying the changes since an anchor costs what those changes cost.

Anchors are taken every `anchor_changes` changes, and wherever a document first appears (a
connection's new replicas); past `max_anchors`, every other one that is not such a first one
drops its forks and the spacing doubles, so they stay evenly spread and a seek applies at most
about twice the spacing's worth of changes.

Restore points are taken once at least `every_s` seconds of replay work were spent since the
previous one, so a seek replays at most about that much work (plus the changes it applies),
whatever the recording's length. Their number is bounded (`max_copies`): past it, every other
one is dropped (its changes handed to the next one) and the spacing doubles, so they stay
evenly spread over the recording.
A restore point holds no event records: the timeline shows the pass's own events, so the log
of a position holds what was logged since its restore point (its counters are whole).

The result of a seek is the session core as a replay from the start would leave it: the same
snapshot, divergences and counters, and the same events since its restore point
(`tests/test_time_travel.py` compares them at backward, forward and repeated points).
"""

from __future__ import annotations

import bisect
import collections
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

from automerge import core as am

from . import events as ev
from .document import apply_changes
from .replay_driver import Replay, copy_replay
from .session_core import SessionCore

__all__ = ["TimeTravel"]

KEEP_AFTER = 100  # changes applied in a seek past which its document is kept (a fork costs about that)


@dataclass
class _Copy:
    index: int  # the next record the copied replay applies
    replay: Replay  # without documents or event records (see `copy_replay`)
    heads: dict[int, list[bytes]]  # each replica's document's heads
    # each replica's changes since the previous restore point; a replica missing here holds a
    # document that was not there at the previous one (the copy is then its anchor)
    changes: dict[int, list[bytes]]
    anchor: dict[int, am.Document] | None = None  # forks of the documents, at anchors only
    first: bool = False  # a document starts here: the anchor is never dropped


class TimeTravel:
    """The recording at `path`, replayed once (`advance` / `finish`) and then seekable."""

    def __init__(self, path: str, *, every_s: float = 0.03, max_copies: int = 1024, loaded_docs: int = 4,
                 anchor_changes: int = 256, max_anchors: int = 24, divergence: bool = True) -> None:
        self.replay = Replay(path, divergence=divergence)
        self.meta = self.replay.meta
        self.every_s = every_s
        self.max_copies = max_copies
        self.anchor_changes = anchor_changes
        self.max_anchors = max_anchors
        # table[j]: the last event seq once the records before index j + 1 were applied
        self.table: list[int] = [0] * self.replay.index
        self.events: list[ev.Event] = []  # the timeline: every event but frames, in seq order
        self._copies: list[_Copy] = []
        self._pass_docs: dict[int, am.Document] = {}  # the pass's documents at the last restore point
        self._since_anchor = 0  # changes since the last anchor
        self._since_copy = 0.0
        self._last_seen = 0
        self._cursor: Replay | None = None
        self._frozen_cursor: Replay | None = None  # the seek's core a freeze took in, if any
        self.loaded_docs = loaded_docs
        # documents earlier seeks built, by (restore point's index, replica): the next seeks near
        # them start there instead of at the anchor
        self._docs: collections.OrderedDict[tuple[int, int], am.Document] = collections.OrderedDict()
        self.copy_seconds = 0.0  # spent copying, for the benchmark and the status line
        self.pass_seconds = 0.0  # spent replaying in the pass
        self._take_copy()

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
        rp = self.replay
        heads: dict[int, list[bytes]] = {}
        changes: dict[int, list[bytes]] = {}
        first = False
        prev = self._copies[-1] if self._copies else None
        for ft, rep in rp.core.replicas.items():
            doc = rep.doc
            heads[ft] = h = doc.get_heads()
            if prev is not None and self._pass_docs.get(ft) is doc:
                changes[ft] = [bytes(c.raw_bytes) for c in doc.get_changes(prev.heads[ft])] if h != prev.heads[ft] else []
                self._since_anchor += len(changes[ft])
            else:
                first = True  # a document the previous restore point did not have
        self._pass_docs = {ft: rep.doc for ft, rep in rp.core.replicas.items()}
        c = _Copy(rp.index, copy_replay(rp, docs=False, records=False), heads, changes, first=first)
        if first or self._since_anchor >= self.anchor_changes:
            c.anchor = {ft: rep.doc.fork() for ft, rep in rp.core.replicas.items()}
            self._since_anchor = 0
        self._copies.append(c)
        if sum(1 for x in self._copies if x.anchor is not None and not x.first) > self.max_anchors:
            # every other anchor drops its forks (a document's first never does)
            for x in [x for x in self._copies if x.anchor is not None and not x.first][::2]:
                x.anchor = None
            self.anchor_changes *= 2
        if len(self._copies) > self.max_copies:
            self._thin()
        # restore points live until thinned and make no garbage: out of the collector's full
        # walks, which otherwise come each time the heap grew by a quarter and take longer each
        # time (0.4 s at the end of a 30-minute recording, every one of them collecting nothing).
        gc.freeze()
        # a seek's core held now is frozen with the rest: when the next seek drops it, its
        # documents (most of its memory) are let go by hand, as the collector never will
        self._frozen_cursor = self._cursor
        self.copy_seconds += time.perf_counter() - t0
        self._since_copy = 0.0

    def _thin(self) -> None:
        """Keep the first restore point, the anchors and every other one of the rest; a dropped
        one's changes go to the next one kept, which applies them on the way to its own."""
        kept: list[_Copy] = []
        carry: dict[int, list[bytes]] = {}
        plain = 0
        for i, c in enumerate(self._copies):
            if i > 0 and c.anchor is None:
                plain += 1
                if plain % 2 and i < len(self._copies) - 1:
                    for ft, ch in c.changes.items():
                        carry[ft] = carry.get(ft, []) + ch
                    continue
            for ft, ch in carry.items():
                if ft in c.changes:  # else the document starts here: what came before is another one's
                    c.changes[ft] = ch + c.changes[ft]
            carry = {}
            kept.append(c)
        self._copies = kept
        self.every_s *= 2
        # the dropped ones were frozen with the rest: back in the collector's reach, collected
        # now (once per doubling), before everything kept is frozen again
        gc.unfreeze()
        gc.collect()

    def close(self) -> None:
        """Drop the restore points and loaded documents (the window closed)."""
        self._copies.clear()
        self._docs.clear()
        self._cursor = self._frozen_cursor = None
        # what the copies held was frozen: collected now, and what stays is frozen again (as
        # the application froze what it imported)
        gc.unfreeze()
        gc.collect()
        gc.freeze()

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
        if stop == self.replay.index and self.replay.done:
            # the end is the pass's own core, which takes no copies any more: nothing to restore
            # (what the window shows when the pass ends, which was a whole seek in one turn)
            return self.replay.core
        cur = self._cursor
        if cur is not None and cur.index == stop:
            return cur.core  # the same point again
        k = bisect.bisect_right([c.index for c in self._copies], stop) - 1
        self._drop_cursor()
        cur = self._cursor = self._restore(max(0, k))
        return cur.run_to(stop)

    def _drop_cursor(self) -> None:
        old, self._cursor = self._cursor, None
        if old is not None and old is self._frozen_cursor:
            self._frozen_cursor = None
            for rep in old.core.replicas.values():
                rep.release()

    def _restore(self, k: int) -> Replay:
        cur = copy_replay(self._copies[k].replay, docs=False)
        for ft, rep in cur.core.replicas.items():
            rep.adopt_identical(self._doc_at(k, ft))
        return cur

    def _doc_at(self, k: int, ft: int) -> am.Document:
        """A document of its own holding what replica `ft` held at restore point `k`: the
        nearest anchor or kept document at or before it, forked, and the changes since."""
        copies = self._copies
        for j in range(k, -1, -1):
            c = copies[j]
            kept = self._docs.get((c.index, ft))
            if kept is not None:
                self._docs.move_to_end((c.index, ft))
                base = kept
                break
            if c.anchor is not None and ft in c.anchor:
                base = c.anchor[ft]
                break
        else:  # the restore point where a document first appears is an anchor, never dropped
            raise AssertionError(f"no anchor for document {ft} at or before restore point {k}")
        doc = base.fork()
        changes = [ch for c in copies[j + 1: k + 1] for ch in c.changes[ft]]
        apply_changes(doc, copies[k].heads[ft], changes)
        if len(changes) >= KEEP_AFTER:
            # what this cost is worth a fork: the next seek near here starts from it
            self._docs[(copies[k].index, ft)] = doc
            while len(self._docs) > self.loaded_docs:
                self._docs.popitem(last=False)
            doc = doc.fork()
        return doc

    def seek_seq(self, seq: int) -> SessionCore:
        return self.seek(self.index_of_seq(seq))

    def wall_of(self, mono: float) -> float:
        return self.replay.wall_of(mono)

    @property
    def copies(self) -> int:
        return len(self._copies)
