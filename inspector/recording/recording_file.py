"""The recording file: a magic, then records appended one `write` each, each framed as

    u32 length | u32 crc32 | u8 kind | f64 monotonic time | MessagePack record (length bytes)

(big-endian; the CRC covers kind, time and record). A writer killed at any instant leaves at most
one partial record at the end; the reader stops there, keeps everything before it and says
where and why it stopped. docs/recording-format.md has the rationale and the measurements.
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct
import time
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

from .records import KIND_CODES, KIND_NAMES, Checkpoint, Meta, Record, decode_record, encode_record, mono_of

MAGIC = b"RTIREC\x00\x01"  # name, then a format version byte
HEADER = struct.Struct(">IIBd")
MAX_RECORD = 256 * 1024 * 1024  # a frame is at most 100 MiB; checkpoints of big documents fit too
CHECKPOINT = KIND_CODES[Checkpoint]


class RecordingError(Exception):
    """The file is not a recording (or not one this version reads)."""


_KIND_TIME = struct.Struct(">Bd")
_LEN_CRC = struct.Struct(">II")


def frame_record(code: int, mono: float, body: bytes) -> bytes:
    """One record as it is stored: header and body in one buffer (written with one syscall)."""
    kt = _KIND_TIME.pack(code, mono)
    return _LEN_CRC.pack(len(body), zlib.crc32(body, zlib.crc32(kt))) + kt + body


def encoded(rec: Record, mono: float | None = None) -> tuple[int, float, bytes]:
    """(kind code, time for the index, body); `mono` overrides the record's own time (a later
    `Meta` is indexed at when it was written, not at the session's start)."""
    return KIND_CODES[type(rec)], mono_of(rec) if mono is None else mono, encode_record(rec)


class RecordingWriter:
    """Appends records to a new file. Every record is handed to the OS as it is appended (one
    `os.write`, no user-space buffer), so killing the process loses nothing written; `fsync`
    runs after a checkpoint, on close and at most every `fsync_interval` seconds (None: only at
    checkpoints and close), which bounds what a power loss can take."""

    def __init__(self, path: str, meta: Meta, *, fsync_interval: float | None = 1.0,
                 overwrite: bool = False) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if overwrite else os.O_EXCL)
        self.path = path
        self._fd: int | None = os.open(path, flags, 0o600)
        self.fsync_interval = fsync_interval
        self._last_sync = time.monotonic()
        self.records = 0
        self.bytes = 0
        self._write(MAGIC)
        self.append(meta)

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise ValueError("recording is closed")
        n = os.write(self._fd, data)
        if n != len(data):  # a regular file takes it all at once; finish what a signal cut short
            view = memoryview(data)[n:]
            while view:
                view = view[os.write(self._fd, view):]
        self.bytes += len(data)

    def append(self, rec: Record) -> None:
        self.append_encoded(*encoded(rec))

    def append_encoded(self, code: int, mono: float, body: bytes) -> None:
        self.append_framed(code, frame_record(code, mono, body), mono)

    def append_framed(self, code: int, data: bytes, mono: float = 0.0) -> None:
        """Append a record already framed by `frame_record` (one encoding for every sink)."""
        self._write(data)
        self.records += 1
        if code == CHECKPOINT:
            self.sync()
        elif self.fsync_interval is not None:
            now = time.monotonic()
            if now - self._last_sync >= self.fsync_interval:
                self.sync(now)

    def sync(self, now: float | None = None) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            self._last_sync = time.monotonic() if now is None else now

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Tail:
    """Where reading stopped before the end of the file, and why."""

    offset: int  # byte offset of the first record not read
    index: int  # how many records were read before it
    reason: str

    def __str__(self) -> str:
        return f"stopped at byte {self.offset} after {self.index} records: {self.reason}"


class RecordingReader:
    """Opens a recording, indexes it (offsets, kinds and times, CRC-checked) without decoding the
    records, and decodes them on demand. A truncated or garbled tail is not an error: `tail`
    says where the readable part ends."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < len(MAGIC):
                raise RecordingError(f"{path}: not a recording (empty or shorter than the header)")
            self._map: mmap.mmap | bytes = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        if self._map[: len(MAGIC) - 1] != MAGIC[:-1]:
            self.close()
            raise RecordingError(f"{path}: not a recording (no {MAGIC[:6].decode()} header)")
        if self._map[len(MAGIC) - 1] != MAGIC[-1]:
            version = self._map[len(MAGIC) - 1]
            self.close()
            raise RecordingError(f"{path}: recording format version {version}; this inspector reads version "
                                 f"{MAGIC[-1]}")
        self.size = size
        self.offsets = array("Q")
        self.kinds = bytearray()
        self.monos = array("d")
        self.tail: Tail | None = None
        self._scan()
        if not self.offsets or self.kinds[0] != KIND_CODES[Meta]:
            self.close()
            raise RecordingError(f"{path}: no session metadata at the start"
                                 + (f" ({self.tail.reason})" if self.tail else ""))
        # the last `Meta` wins: versions learnt at the handshake are recorded after the start
        meta = self.record(self.kinds.rindex(KIND_CODES[Meta]))
        assert isinstance(meta, Meta)
        self.meta: Meta = meta
        self.checkpoints = [i for i, k in enumerate(self.kinds) if k == CHECKPOINT]

    def _scan(self) -> None:
        data, pos, end = self._map, len(MAGIC), self.size
        hsize, unpack, crc32 = HEADER.size, HEADER.unpack_from, zlib.crc32
        offsets, kinds, monos = self.offsets, self.kinds, self.monos
        while pos < end:
            if end - pos < hsize:
                self.tail = Tail(pos, len(offsets), f"a record header cut short ({end - pos} of {hsize} bytes)")
                return
            length, crc, code, mono = unpack(data, pos)
            if code not in KIND_NAMES or length > MAX_RECORD:
                self.tail = Tail(pos, len(offsets), f"garbled record header (kind {code}, length {length})")
                return
            body_end = pos + hsize + length
            if body_end > end:
                self.tail = Tail(pos, len(offsets), f"a record cut short ({end - pos - hsize} of {length} bytes)")
                return
            if crc32(data[pos + hsize : body_end], crc32(data[pos + 8 : pos + hsize])) != crc:
                self.tail = Tail(pos, len(offsets), "checksum mismatch (garbled record)")
                return
            offsets.append(pos)
            kinds.append(code)
            monos.append(mono)
            pos = body_end

    def __len__(self) -> int:
        return len(self.offsets)

    def kind(self, index: int) -> str:
        return KIND_NAMES[self.kinds[index]]

    def record(self, index: int) -> Record:
        pos = self.offsets[index]
        (length,) = struct.unpack_from(">I", self._map, pos)
        start = pos + HEADER.size
        return decode_record(self._map[start : start + length])

    def __iter__(self) -> Iterator[Record]:
        for i in range(len(self.offsets)):
            yield self.record(i)

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, Record]]:
        """(index, record) for start <= index < stop."""
        stop = len(self.offsets) if stop is None else min(stop, len(self.offsets))
        for i in range(max(start, 0), stop):
            yield i, self.record(i)

    def index_at(self, mono: float) -> int:
        """The last record at or before monotonic time `mono` (0 when it is before the start)."""
        return max(bisect.bisect_right(self.monos, mono) - 1, 0)

    def checkpoint_before(self, index: int) -> int | None:
        """Index of the last checkpoint at or before `index`."""
        i = bisect.bisect_right(self.checkpoints, index) - 1
        return self.checkpoints[i] if i >= 0 else None

    def seek(self, index: int) -> tuple[Checkpoint | None, Iterator[tuple[int, Record]]]:
        """What a driver needs to stand at record `index`: the nearest checkpoint at or before it
        (None: start from the beginning) and the records after that checkpoint up to `index`."""
        cp = self.checkpoint_before(index)
        if cp is None:
            return None, self.records(1, index + 1)
        rec = self.record(cp)
        assert isinstance(rec, Checkpoint)
        return rec, self.records(cp + 1, index + 1)

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
