"""The documents as of any record of a recording, for time travel: from the nearest
checkpoint (its documents loaded once, then forked, which costs a fraction of a load) and a
replay of the frames after it; a seek forward from the last one continues where it stopped."""

from __future__ import annotations

import collections
from typing import Any

from .recording_file import RecordingReader
from .records import Checkpoint, Frame
from .replicas import Replicas


class Seeker:
    def __init__(self, reader: RecordingReader, cache: int = 16) -> None:
        self.reader = reader
        self.cache_size = cache
        self._cache: collections.OrderedDict[int, tuple[int, dict[str, Any]]] = collections.OrderedDict()
        self._pos: int | None = None
        self._replicas: Replicas | None = None
        self.loads = 0  # checkpoints decoded (the slow part), for the curious and the tests

    def _checkpoint_docs(self, index: int) -> tuple[int, dict[str, Any]]:
        hit = self._cache.get(index)
        if hit is None:
            cp = self.reader.record(index)
            assert isinstance(cp, Checkpoint)
            tmp = Replicas()
            hit = (cp.conn, {name: tmp.conn(cp.conn).load(name, ds.saved) for name, ds in cp.docs.items()})
            self.loads += 1
            self._cache[index] = hit
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        return hit

    def seek(self, index: int) -> Replicas:
        """The replicas as of record `index` (after it). They belong to the seeker: read them,
        do not change them; the next seek may continue from them."""
        index = max(0, min(index, len(self.reader) - 1))
        cp = self.reader.checkpoint_before(index)
        if self._replicas is not None and self._pos is not None and self._pos <= index and \
                (cp is None or cp <= self._pos):
            reps, start = self._replicas, self._pos + 1
        else:
            reps, start = Replicas(), 1
            if cp is not None:
                conn, docs = self._checkpoint_docs(cp)
                for name, doc in docs.items():
                    reps.conn(conn).adopt(name, doc.fork())
                start = cp + 1
        stale = False  # a redacted sync frame passed: the next checkpoint holds its documents
        for _, rec in self.reader.records(start, index + 1):
            if isinstance(rec, Frame):
                if rec.redacted and rec.kind == "typed":
                    stale = True
                else:
                    reps.apply(rec)
            elif isinstance(rec, Checkpoint) and stale:
                for name, ds in rec.docs.items():
                    reps.conn(rec.conn).load(name, ds.saved)
                stale = False
        self._pos, self._replicas = index, reps
        return reps
