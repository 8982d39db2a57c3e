"""Which objects and keys an Automerge change touches, read from its binary form.

The Python binding exposes changes only as bytes (and `diff()` costs time proportional to the
whole document), so the reader decodes the op columns it needs — object, map key, action,
value, predecessors — and the dependency hashes from the columnar change format: to know which
cells and comms a sync touched, and what a put wrote (reading a key back from the document
costs time proportional to how often it was overwritten).
Format: automerge binary document format, "change" chunks (types 1 and 2).

Every count is untrusted: LEB128 values stop at 64 bits, decompression at INFLATE_MAX_RATIO
times the compressed size, and a change claiming more than MAX_OPS ops is refused (the caller then reads
the whole document), so a few hostile bytes never cost more than a few bytes' work.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import BadContent

MAGIC = b"\x85\x6f\x4a\x83"
CHUNK_CHANGE = 1
CHUNK_COMPRESSED = 2

# column specs: (id << 4) | type; bit 0x08 means deflated
COL_OBJ_ACTOR = 0x01
COL_OBJ_CTR = 0x02
COL_KEY_STR = 0x15
COL_ACTION = 0x42
COL_VAL_META = 0x56  # per op: (byte length << 4) | value type
COL_VAL_RAW = 0x57  # the values' bytes, back to back
COL_PRED_GROUP = 0x70  # per op: how many predecessors
COL_PRED_ACTOR = 0x71  # per predecessor: actor index
COL_PRED_CTR = 0x73  # per predecessor: counter (delta)
ACTION_PUT = 1
ACTION_DELETE = 3
MAKE_ACTIONS = {0, 2, 4, 6}  # makeMap, makeList, makeText, makeTable
MAX_OPS = 1 << 20  # ops per change decoded here; a larger change is read as "touches everything"
LEB_MAX_BYTES = 10  # 64-bit values, as automerge's own decoder
INFLATE_MAX_RATIO = 64  # more expansion: read as "touches everything" (a full read), never allocated


# value type code -> ScalarType name (`document.kind_name`); 10-15 are from later formats
VALUE_KINDS = ("Null", "Boolean", "Boolean", "Uint", "Int", "F64", "Str", "Bytes", "Counter", "Timestamp")


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


def encode_uleb(n: int) -> bytes:
    """An unsigned LEB128 number, as the sync messages and changes write their counts."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


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


def _room(out: list[Any], n: int) -> None:
    if len(out) + n > MAX_OPS:
        raise ChangeFormatError(f"a column claims more than {MAX_OPS} ops")


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj(-15)
    out = d.decompress(data, INFLATE_MAX_RATIO * len(data) + 65536)
    if d.unconsumed_tail:
        raise ChangeFormatError(f"deflated data expands more than {INFLATE_MAX_RATIO} times")
    return out


# A change's columns are mostly a few bytes that recur from change to change (one op, actor 0,
# the same key, one predecessor): those are decoded once. Bounded in entries and in size.
SMALL_COLUMN = 24  # bytes
SMALL_RESULT = 64  # values
MEMO_ENTRIES = 4096
_memo: dict[tuple[bytes, int], tuple[Any, ...]] = {}


def _memoized(data: bytes, kind: int, decode: Callable[[bytes], list[Any]]) -> Sequence[Any]:
    if len(data) > SMALL_COLUMN:
        return decode(data)
    key = (data, kind)
    hit = _memo.get(key)
    if hit is None:
        out = decode(data)
        if len(out) > SMALL_RESULT:  # a few bytes can claim many nulls: not kept
            return out
        if len(_memo) >= MEMO_ENTRIES:
            _memo.clear()
        hit = _memo[key] = tuple(out)
    return hit


def _rle_ints(data: bytes, signed: bool = False) -> Sequence[int | None]:
    """RLE column of LEB128 integers: runs (n>0, value), literals (n<0, values), nulls (0, count)."""
    return _memoized(data, 1 if signed else 0, _rle_sints if signed else _rle_uints)


def _rle_uints(data: bytes) -> list[int | None]:
    return _read_rle_ints(data, False)


def _rle_sints(data: bytes) -> list[int | None]:
    return _read_rle_ints(data, True)


def _read_rle_ints(data: bytes, signed: bool) -> list[int | None]:
    out: list[int | None] = []
    pos, end = 0, len(data)
    read = _sleb if signed else _uleb
    while pos < end:
        n, pos = _sleb(data, pos)
        if n > 0:
            v, pos = read(data, pos)
            _room(out, n)
            out.extend([v] * n)
        elif n < 0:
            _room(out, -n)
            for _ in range(-n):
                v, pos = read(data, pos)
                out.append(v)
        else:
            c, pos = _uleb(data, pos)
            _room(out, c)
            out.extend([None] * c)
    return out


def _rle_strs(data: bytes) -> Sequence[str | None]:
    return _memoized(data, 2, _read_rle_strs)


def _read_rle_strs(data: bytes) -> list[str | None]:
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


def _delta(data: bytes) -> list[int | None]:
    """Delta column: RLE of signed differences, each value the running sum (nulls keep it)."""
    out = list(_rle_ints(data, signed=True))
    total = 0
    for i, d in enumerate(out):
        if d is not None:
            total += d
            out[i] = total
    return out


_F64 = struct.Struct("<d")


def _values(meta: Sequence[int | None], raw: bytes) -> list[tuple[str, Any]]:
    """(ScalarType name, Python value) per op, as the binding gives them; the value bytes
    must be exactly what the metadata says, or the change is not read."""
    out: list[tuple[str, Any]] = []
    pos, end = 0, len(raw)
    for m in meta:
        if not m:  # null (a make, a delete) or no metadata
            out.append(("Null", None))
            continue
        kind, ln = m & 0x0F, m >> 4
        if ln > end - pos:
            raise ChangeFormatError("a value runs past its column")
        chunk = raw[pos : pos + ln]
        pos += ln
        if kind == 6:
            out.append(("Str", chunk.decode("utf-8")))
        elif kind in (3, 4, 8, 9):
            v, used = (_uleb if kind == 3 else _sleb)(chunk, 0) if ln else (0, -1)
            if used != ln:
                raise ChangeFormatError("an integer value does not fill its bytes")
            out.append((VALUE_KINDS[kind], v))
        elif kind in (0, 1, 2):
            if ln:
                raise ChangeFormatError("a null or boolean value has bytes")
            out.append((VALUE_KINDS[kind], None if kind == 0 else kind == 2))
        elif kind == 5:
            if ln != 8:
                raise ChangeFormatError(f"a float value of {ln} bytes")
            out.append(("F64", _F64.unpack(chunk)[0]))
        elif kind == 7:
            out.append(("Bytes", chunk))
        else:  # a type of a later format: its bytes as they are
            out.append(("Unknown", chunk))
    if pos != end:
        raise ChangeFormatError("the value column has bytes no op uses")
    return out


@dataclass(frozen=True, slots=True)
class ChangeOps:
    actor: bytes
    start_op: int
    objs: list[tuple[int, bytes] | None]  # (counter, actor) per op; None = root
    keys: list[str | None]  # map key per op (None for list/text ops)
    created: set[tuple[int, bytes]]  # objects this change creates
    actions: list[int | None]  # per op: 0 makeMap, 1 put, 2 makeList, 3 delete, 4 makeText, 5 increment, ...
    values: list[tuple[str, Any]]  # per op: (ScalarType name, value); ("Null", None) for makes and deletes
    preds: list[tuple[tuple[int, bytes], ...]]  # per op: the (counter, actor) ops it overwrites
    deps: tuple[bytes, ...]  # hashes of the changes this one follows
    seq: int = 0  # the actor's sequence number of this change (1, 2, ...)


def decode_change(raw: bytes) -> ChangeOps:
    """The ops of one change chunk; ChangeFormatError (and nothing else) for any other bytes."""
    if raw[:4] != MAGIC:
        raise ChangeFormatError("not an automerge chunk", data=raw)
    try:
        return _decode(raw)
    except ChangeFormatError as exc:
        raise ChangeFormatError(str(exc), data=raw) from None
    except (IndexError, ValueError, zlib.error, struct.error) as exc:
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
    if 32 * n > len(body) - pos:
        raise ChangeFormatError(f"change claims {n} dependencies in {len(body) - pos} bytes")
    deps = tuple(body[pos + 32 * i : pos + 32 * (i + 1)] for i in range(n))
    pos += 32 * n
    n, pos = _uleb(body, pos)
    actor = body[pos : pos + n]
    pos += n
    seq, pos = _uleb(body, pos)
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
    meta = _rle_ints(cols.get(COL_VAL_META, b""))
    groups = _rle_ints(cols.get(COL_PRED_GROUP, b""))
    n = max(len(obj_actor), len(obj_ctr), len(keys), len(actions), len(meta), len(groups))
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
    actions_out = list(actions) + [None] * (n - len(actions))
    values = _values(meta, cols.get(COL_VAL_RAW, b""))
    values += [("Null", None)] * (n - len(values))
    preds = _preds(groups, cols, actors, n)
    created = {(start_op + i, actor) for i, act in enumerate(actions) if act in MAKE_ACTIONS}
    return ChangeOps(actor, start_op, objs, keys_out, created, actions_out, values, preds, deps, seq)


def _preds(groups: Sequence[int | None], cols: dict[int, bytes], actors: list[bytes],
           n: int) -> list[tuple[tuple[int, bytes], ...]]:
    """Predecessors per op from the group (count per op), actor and counter columns."""
    pred_actor = _rle_ints(cols.get(COL_PRED_ACTOR, b""))
    pred_ctr = _delta(cols.get(COL_PRED_CTR, b""))
    if len(pred_actor) != len(pred_ctr) or sum(g or 0 for g in groups) != len(pred_actor):
        raise ChangeFormatError("the predecessor columns disagree on how many there are")
    out: list[tuple[tuple[int, bytes], ...]] = []
    pos = 0
    n_actors = len(actors)
    for g in groups:
        if not g:
            out.append(())
            continue
        group = []
        for a, c in zip(pred_actor[pos : pos + g], pred_ctr[pos : pos + g], strict=True):
            if a is None or c is None or a >= n_actors:
                raise ChangeFormatError("a predecessor without a valid actor or counter")
            group.append((c, actors[a]))
        pos += g
        out.append(tuple(group))
    out += [()] * (n - len(out))
    return out
