"""The always-on flight recorder: the last minutes of a session in memory, bounded by bytes and
by age, that can be saved as a recording ("save the last N minutes").

Records are kept in segments that each start with a checkpoint, and only whole segments are
dropped, so whatever the ring still holds is replayable from its first checkpoint. The ring asks
for a checkpoint (`checkpoint_due`) once the open segment holds an eighth of either bound, so
it keeps at least `max_age` seconds (when the bytes allow) and at most `max_bytes` plus what one
oversized segment holds.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from .recording_file import CHECKPOINT, RecordingWriter, frame_record
from .records import Meta

SEGMENT_FRACTION = 8


@dataclass
class _Segment:
    start: float  # monotonic time of its first record
    # the framed records back to back, as in a file: one buffer, not one object per record,
    # so a full ring costs the garbage collector nothing
    data: bytearray = field(default_factory=bytearray)
    count: int = 0
    last: float = 0.0
    from_checkpoint: bool = False

    @property
    def size(self) -> int:
        return len(self.data)


class RecordingRing:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024, max_age: float = 600.0) -> None:
        if max_bytes <= 0 or max_age <= 0:
            raise ValueError("the ring needs a positive size and age")
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._segments: collections.deque[_Segment] = collections.deque()
        self.size = 0
        self.dropped_records = 0
        self.complete = True  # nothing dropped yet: the ring holds the session from its start
        # when the open segment wants a checkpoint to start the next: from this time on
        # (-inf: now, nothing held or its bytes are an eighth of the bound); kept as one number
        # because the recorder asks before every record
        self.checkpoint_due = float("-inf")

    def append_encoded(self, code: int, mono: float, body: bytes) -> None:
        self.append_framed(code, frame_record(code, mono, body), mono)

    def append_framed(self, code: int, data: bytes, mono: float) -> None:
        segs = self._segments
        if code == CHECKPOINT or not segs:
            segs.append(_Segment(mono, from_checkpoint=code == CHECKPOINT))
            self.checkpoint_due = mono + self.max_age / SEGMENT_FRACTION
        seg = segs[-1]
        seg.data += data
        seg.count += 1
        seg.last = mono
        self.size += len(data)
        if len(seg.data) * SEGMENT_FRACTION >= self.max_bytes:
            self.checkpoint_due = float("-inf")
        # only whole segments go, so there is something to trim only once a second one exists
        if len(segs) > 1 and (self.size > self.max_bytes or segs[1].start <= mono - self.max_age):
            self._trim(mono)

    def _trim(self, now: float) -> None:
        segs = self._segments
        while len(segs) > 1 and (self.size > self.max_bytes or segs[1].start <= now - self.max_age):
            gone = segs.popleft()
            self.size -= gone.size
            self.dropped_records += gone.count
            self.complete = False

    def __len__(self) -> int:
        return sum(s.count for s in self._segments)

    @property
    def start(self) -> float | None:
        return self._segments[0].start if self._segments else None

    def replayable(self) -> bool:
        """Whether a saved ring opens: it starts at the session's start or at a checkpoint."""
        return bool(self._segments) and (self.complete or self._segments[0].from_checkpoint)

    def save(self, path: str, meta: Meta, last: float | None = None, now: float | None = None) -> int:
        """Write the ring (or its last `last` seconds, rounded back to a checkpoint) as a recording;
        returns how many records were written. Raises ValueError when it holds nothing replayable."""
        if not self.replayable():
            raise ValueError("the ring holds nothing replayable yet (no checkpoint since it dropped records)")
        segs = list(self._segments)
        first = 0
        if last is not None:
            until = segs[-1].last if now is None else now
            for i, seg in enumerate(segs):
                if seg.start <= until - last and (seg.from_checkpoint or i == 0):
                    first = i
        written = 0
        with RecordingWriter(path, meta, fsync_interval=None) as w:
            for seg in segs[first:]:
                w._write(bytes(seg.data))
                written += seg.count
            w.records += written
        return written
