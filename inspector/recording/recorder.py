"""What the session core calls to be recorded: one `Recorder` per session, fanning each record
out (encoded once) to the ring and, while one is open, a recording file.

The core calls `frame`, `kernel`, `timer`, `connection` as things happen and hands over a
`checkpoint` provider (the documents' saved bytes and heads, plus its own state) that the
recorder calls when the ring or the file's interval wants one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from .recording_file import RecordingWriter, encoded, frame_record
from .records import (
    KIND_CODES,
    Checkpoint,
    Connection,
    Frame,
    Kernel,
    Manifest,
    Mark,
    Meta,
    Record,
    Timer,
    encode_record,
)
from .ring import RecordingRing

FRAME = KIND_CODES[Frame]
CHECKPOINT_BUDGET = 20  # at least this many times a checkpoint's cost between two of them
CheckpointSource = Callable[[float, float], Checkpoint | None]  # (mono, wall) -> checkpoint


class Sink(Protocol):
    def append_framed(self, code: int, data: bytes, mono: float) -> None: ...


class Recorder:
    def __init__(self, meta: Meta, *, ring: RecordingRing | None = None,
                 checkpoint: CheckpointSource | None = None, checkpoint_interval: float = 30.0,
                 checkpoint_records: int = 5000) -> None:
        """A checkpoint is taken every `checkpoint_interval` seconds or `checkpoint_records`
        records, whichever comes first (the second bounds what a seek replays), and whenever
        the ring asks for one; the first two never sooner than `CHECKPOINT_BUDGET` times the
        last checkpoint's own cost after it: saving a long-history document takes longer as the
        session goes on, and checkpoints must not take more than a twentieth of the time."""
        self.meta = meta
        self.checkpoint_records = checkpoint_records
        self._since_checkpoint = 0
        self._last_mono = meta.start_mono
        self._cp_cost = 0.0  # seconds the last checkpoint took
        self._cp_done = 0.0  # perf_counter when it finished
        self.ring = ring
        self.checkpoint_source = checkpoint
        self.checkpoint_interval = checkpoint_interval
        self.file: RecordingWriter | None = None
        self._due = float("-inf")  # when the interval wants the next checkpoint (-inf: none yet)
        self._sinks: list[Sink] = [ring] if ring is not None else []
        self._in_checkpoint = False

    # -- hooks the core calls -----------------------------------------------------------------

    def frame(self, conn: int, direction: str, kind: str, payload: bytes, mono: float | None = None,
              wall: float | None = None) -> Frame:
        if mono is None or wall is None:  # the core gives both: the clock is read only when it does not
            mono, wall = self._times(mono, wall)
        rec = Frame(conn, direction, kind, mono, wall, bytes(payload), len(payload))
        self._emit_body(FRAME, mono, encode_record(rec))  # the per-frame path: no lookup by type
        return rec

    def kernel(self, msg: dict[str, Any], mono: float | None = None, wall: float | None = None,
               channel: str = "iopub") -> None:
        mono, wall = self._times(mono, wall)
        self._emit(Kernel(mono, wall, msg, channel))

    def timer(self, name: str, mono: float, due: float | None = None) -> None:
        self._emit(Timer(name, mono, time.time(), due))

    def connection(self, conn: int, event: str, channel: str | None = None, detail: str = "",
                   mono: float | None = None) -> None:
        mono, wall = self._times(mono, None)
        self._emit(Connection(conn, event, mono, wall, channel, detail))

    def manifest(self, ref: str, manifest: dict[str, Any] | None, error: str | None,
                 mono: float | None = None) -> None:
        mono, wall = self._times(mono, None)
        self._emit(Manifest(mono, wall, ref, manifest, error))

    def mark(self, text: str, data: dict[str, Any] | None = None, mono: float | None = None) -> None:
        mono, wall = self._times(mono, None)
        self._emit(Mark(mono, wall, text, data or {}))

    def update_meta(self, **fields: Any) -> None:
        """Versions learnt after the start (the handshake): recorded as a second `Meta`."""
        self.meta = msgspec.structs.replace(self.meta, **fields)
        self._emit(self.meta, self._last_mono)

    def checkpoint_now(self, mono: float | None = None) -> bool:
        if self.checkpoint_source is None or self._in_checkpoint:
            return False
        mono, wall = self._times(mono, None)
        self._in_checkpoint = True
        t0 = time.perf_counter()
        try:
            cp = self.checkpoint_source(mono, wall)
        finally:
            self._in_checkpoint = False
            self._cp_done = time.perf_counter()
            self._cp_cost = self._cp_done - t0
        if cp is None:
            return False
        self._due = mono + self.checkpoint_interval
        self._since_checkpoint = 0
        code, mono, body = encoded(cp)
        self._fan(code, mono, body)
        return True

    # -- files ---------------------------------------------------------------------------------

    def start_file(self, path: str, **writer_args: Any) -> RecordingWriter:
        """Record to `path` from now: the metadata, a checkpoint of the present, then everything."""
        if self.file is not None:
            raise ValueError(f"already recording to {self.file.path}")
        self.file = RecordingWriter(path, self.meta, **writer_args)
        self._sinks.append(self.file)
        if self.checkpoint_source is not None:
            cp = self.checkpoint_source(*self._times(None, None))
            if cp is not None:
                self.file.append(cp)
        return self.file

    def stop_file(self) -> str | None:
        if self.file is None:
            return None
        self._sinks.remove(self.file)
        self.file.close()
        path, self.file = self.file.path, None
        return path

    def save_ring(self, path: str, last: float | None = None) -> int:
        if self.ring is None:
            raise ValueError("no ring")
        return self.ring.save(path, self.meta, last, now=time.monotonic())

    def close(self) -> None:
        self.stop_file()

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _times(mono: float | None, wall: float | None) -> tuple[float, float]:
        return (time.monotonic() if mono is None else mono), (time.time() if wall is None else wall)

    def _emit(self, rec: Record, mono: float | None = None) -> None:
        self._emit_body(*encoded(rec, mono))

    def _emit_body(self, code: int, mono: float, body: bytes) -> None:
        self._last_mono = mono
        # a checkpoint goes before the record: it holds what the core applied of the records
        # before this one, which is the contract (apply a record before handing over the next)
        # (asked before every record: numbers compared, nothing called until one is due)
        if self.checkpoint_source is not None and not self._in_checkpoint:
            # the ring's requests are what keeps it bounded: they are not deferred (they come at
            # most every eighth of its bounds); the interval's and the count's wait for the budget
            if (self.ring is not None and mono >= self.ring.checkpoint_due) or (
                    (mono >= self._due or self._since_checkpoint >= self.checkpoint_records)
                    and time.perf_counter() - self._cp_done >= CHECKPOINT_BUDGET * self._cp_cost):
                self.checkpoint_now(mono)
        self._since_checkpoint += 1
        data = frame_record(code, mono, body)  # framed once for every sink (the per-frame path: no call more)
        for sink in self._sinks:
            sink.append_framed(code, data, mono)

    def _fan(self, code: int, mono: float, body: bytes) -> None:
        data = frame_record(code, mono, body)  # framed once for every sink
        for sink in self._sinks:
            sink.append_framed(code, data, mono)
