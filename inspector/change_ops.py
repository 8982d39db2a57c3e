"""Which objects and keys an Automerge change touches, read from its binary form.

The Python binding exposes changes only as bytes (and `diff()` costs time proportional to the
whole document), so the reader decodes the op columns it needs — object, map key, action —
from the columnar change format to know which cells and comms a sync touched.
Format: automerge binary document format, "change" chunks (types 1 and 2).

Every count is untrusted: LEB128 values stop at 64 bits, decompression at INFLATE_MAX_RATIO
times the compressed size, and a change claiming more than MAX_OPS ops is refused (the caller then reads
the whole document), so a few hostile bytes never cost more than a few bytes' work.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from .errors import BadContent

MAGIC = b"\x85\x6f\x4a\x83"
CHUNK_CHANGE = 1
CHUNK_COMPRESSED = 2

# column specs: (id << 4) | type; bit 0x08 means deflated
COL_OBJ_ACTOR = 0x01
COL_OBJ_CTR = 0x02
COL_KEY_STR = 0x15
COL_ACTION = 0x42
MAKE_ACTIONS = {0, 2, 4, 6}  # makeMap, makeList, makeText, makeTable
MAX_OPS = 1 << 20  # ops per change decoded here; a larger change is read as "touches everything"
LEB_MAX_BYTES = 10  # 64-bit values, as automerge's own decoder
INFLATE_MAX_RATIO = 64  # more expansion: read as "touches everything" (a full read), never allocated


class ChangeFormatError(BadContent, ValueError):
    pass


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of an unsigned LEB128 at `pos`."""
    b = data[pos]
    if b < 0x80:  # one byte: most lengths, counts and indexes
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    end = pos + LEB_MAX_BYTES
    while True:
        pos += 1
        if pos >= end:
            raise ChangeFormatError("LEB128 value longer than 64 bits")
        b = data[pos]
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos + 1
        shift += 7


uleb = _uleb  # also reads the counts of a sync message (document.py)


def _sleb(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b < 0x40:
        return b, pos + 1
    result = shift = 0
    end = pos + LEB_MAX_BYTES
    while True:
        if pos >= end:
            raise ChangeFormatError("LEB128 value longer than 64 bits")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b & 0x40:
                result -= 1 << shift
            return result, pos


def _room(out: list, n: int) -> None:
    if len(out) + n > MAX_OPS:
        raise ChangeFormatError(f"a column claims more than {MAX_OPS} ops")


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj(-15)
    out = d.decompress(data, INFLATE_MAX_RATIO * len(data) + 65536)
    if d.unconsumed_tail:
        raise ChangeFormatError(f"deflated data expands more than {INFLATE_MAX_RATIO} times")
    return out


def _rle_ints(data: bytes) -> list[int | None]:
    """RLE column of LEB128 integers: runs (n>0, value), literals (n<0, values), nulls (0, count)."""
    out: list[int | None] = []
    pos, end = 0, len(data)
    while pos < end:
        n, pos = _sleb(data, pos)
        if n > 0:
            v, pos = _uleb(data, pos)
            _room(out, n)
            out.extend([v] * n)
        elif n < 0:
            _room(out, -n)
            for _ in range(-n):
                v, pos = _uleb(data, pos)
                out.append(v)
        else:
            c, pos = _uleb(data, pos)
            _room(out, c)
            out.extend([None] * c)
    return out


def _rle_strs(data: bytes) -> list[str | None]:
    out: list[str | None] = []
    pos, end = 0, len(data)
    while pos < end:
        n, pos = _sleb(data, pos)
        if n == 0:
            c, pos = _uleb(data, pos)
            _room(out, c)
            out.extend([None] * c)
            continue
        _room(out, abs(n))
        for _ in range(n if n > 0 else -n):
            ln, pos = _uleb(data, pos)
            v = data[pos : pos + ln].decode("utf-8", "replace")
            pos += ln
            out.append(v)
            if n > 0:  # a run repeats one value
                out.extend([v] * (n - 1))
                break
    return out


@dataclass(frozen=True, slots=True)
class ChangeOps:
    actor: bytes
    start_op: int
    objs: list[tuple[int, bytes] | None]  # (counter, actor) per op; None = root
    keys: list[str | None]  # map key per op (None for list/text ops)
    created: set[tuple[int, bytes]]  # objects this change creates


def decode_change(raw: bytes) -> ChangeOps:
    """The ops of one change chunk; ChangeFormatError (and nothing else) for any other bytes."""
    if raw[:4] != MAGIC:
        raise ChangeFormatError("not an automerge chunk", data=raw)
    try:
        return _decode(raw)
    except ChangeFormatError as exc:
        raise ChangeFormatError(str(exc), data=raw) from None
    except (IndexError, ValueError, zlib.error) as exc:
        raise ChangeFormatError(f"malformed change: {exc}", data=raw) from None


def _decode(raw: bytes) -> ChangeOps:
    chunk_type = raw[8]
    length, pos = _uleb(raw, 9)
    body = raw[pos : pos + length]
    if chunk_type == CHUNK_COMPRESSED:
        body = _inflate(body)
    elif chunk_type != CHUNK_CHANGE:
        raise ChangeFormatError(f"chunk type {chunk_type} is not a change")
    n, pos = _uleb(body, 0)
    pos += 32 * n  # dependency hashes
    n, pos = _uleb(body, pos)
    actor = body[pos : pos + n]
    pos += n
    _, pos = _uleb(body, pos)  # seq
    start_op, pos = _uleb(body, pos)
    _, pos = _sleb(body, pos)  # time
    n, pos = _uleb(body, pos)
    pos += n  # message
    actors = [actor]
    count, pos = _uleb(body, pos)
    for _ in range(count):
        n, pos = _uleb(body, pos)
        actors.append(body[pos : pos + n])
        pos += n
    count, pos = _uleb(body, pos)
    specs = []
    for _ in range(count):
        spec, pos = _uleb(body, pos)
        ln, pos = _uleb(body, pos)
        specs.append((spec, ln))
    cols: dict[int, bytes] = {}
    for spec, ln in specs:
        data = body[pos : pos + ln]
        pos += ln
        if spec & 0x08:
            data = _inflate(data)
            spec &= ~0x08
        cols[spec] = data
    if pos > len(body):
        raise ChangeFormatError("columns run past the end of the change")
    obj_actor = _rle_ints(cols.get(COL_OBJ_ACTOR, b""))
    obj_ctr = _rle_ints(cols.get(COL_OBJ_CTR, b""))
    keys = _rle_strs(cols.get(COL_KEY_STR, b""))
    actions = _rle_ints(cols.get(COL_ACTION, b""))
    n = max(len(obj_actor), len(obj_ctr), len(keys), len(actions))
    objs: list[tuple[int, bytes] | None] = []
    n_actors = len(actors)
    for i in range(n):
        a = obj_actor[i] if i < len(obj_actor) else None
        c = obj_ctr[i] if i < len(obj_ctr) else None
        if a is None or c is None:
            objs.append(None)
        else:
            if a >= n_actors:
                raise ChangeFormatError("object actor index out of range")
            objs.append((c, actors[a]))
    keys_out = [k if isinstance(k, str) else None for k in keys] + [None] * (n - len(keys))
    created = {(start_op + i, actor) for i, act in enumerate(actions) if act in MAKE_ACTIONS}
    return ChangeOps(actor, start_op, objs, keys_out, created)
