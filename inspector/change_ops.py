"""Which objects and keys an Automerge change touches, read from its binary form.

The Python binding exposes changes only as bytes (and `diff()` costs time proportional to the
whole document), so the reader decodes the op columns it needs — object, map key, action —
from the columnar change format to know which cells and comms a sync touched.
Format: automerge binary document format, "change" chunks (types 1 and 2).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

MAGIC = b"\x85\x6f\x4a\x83"
CHUNK_CHANGE = 1
CHUNK_COMPRESSED = 2

# column specs: (id << 4) | type; bit 0x08 means deflated
COL_OBJ_ACTOR = 0x01
COL_OBJ_CTR = 0x02
COL_KEY_STR = 0x15
COL_ACTION = 0x42
MAKE_ACTIONS = {0, 2, 4, 6}  # makeMap, makeList, makeText, makeTable


class ChangeFormatError(ValueError):
    pass


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def uleb(self) -> int:
        data = self.data
        pos = self.pos
        if pos < len(data) and data[pos] < 0x80:  # one-byte fast path (most values)
            self.pos = pos + 1
            return data[pos]
        result = shift = 0
        while True:
            if self.pos >= len(data):
                raise ChangeFormatError("truncated LEB128")
            b = data[self.pos]
            self.pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def sleb(self) -> int:
        data = self.data
        pos = self.pos
        if pos < len(data) and data[pos] < 0x40:  # one-byte non-negative fast path
            self.pos = pos + 1
            return data[pos]
        result = shift = 0
        while True:
            if self.pos >= len(data):
                raise ChangeFormatError("truncated LEB128")
            b = data[self.pos]
            self.pos += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if b & 0x40:
                    result -= 1 << shift
                return result

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ChangeFormatError("truncated field")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def _rle(data: bytes, read_value: str) -> list[object]:
    """RLE column: runs of (count>0, value), literals (count<0, values...), nulls (0, count)."""
    r = _Reader(data)
    out: list[object] = []
    while not r.done():
        n = r.sleb()
        if n > 0:
            v = _value(r, read_value)
            out.extend([v] * n)
        elif n < 0:
            out.extend(_value(r, read_value) for _ in range(-n))
        else:
            out.extend([None] * r.uleb())
    return out


def _value(r: _Reader, kind: str) -> object:
    if kind == "uleb":
        return r.uleb()
    if kind == "str":
        return r.take(r.uleb()).decode("utf-8", "replace")
    raise ChangeFormatError(kind)


@dataclass(frozen=True, slots=True)
class ChangeOps:
    actor: bytes
    start_op: int
    objs: list[tuple[int, bytes] | None]  # (counter, actor) per op; None = root
    keys: list[str | None]  # map key per op (None for list/text ops)
    created: set[tuple[int, bytes]]  # objects this change creates


def decode_change(raw: bytes) -> ChangeOps:
    if raw[:4] != MAGIC:
        raise ChangeFormatError("not an automerge chunk")
    r = _Reader(raw)
    r.pos = 8
    chunk_type = r.take(1)[0]
    length = r.uleb()
    body = raw[r.pos : r.pos + length]
    if chunk_type == CHUNK_COMPRESSED:
        body = zlib.decompress(body, -15)
    elif chunk_type != CHUNK_CHANGE:
        raise ChangeFormatError(f"chunk type {chunk_type} is not a change")
    b = _Reader(body)
    n_deps = b.uleb()
    b.pos += 32 * n_deps  # skip the dependency hashes
    actor = b.take(b.uleb())
    b.uleb()  # seq
    start_op = b.uleb()
    b.sleb()  # time
    b.take(b.uleb())  # message
    actors = [actor] + [b.take(b.uleb()) for _ in range(b.uleb())]
    specs = [(b.uleb(), b.uleb()) for _ in range(b.uleb())]
    cols: dict[int, bytes] = {}
    for spec, ln in specs:
        data = b.take(ln)
        if spec & 0x08:
            data = zlib.decompress(data, -15)
            spec &= ~0x08
        cols[spec] = data
    obj_actor = _rle(cols.get(COL_OBJ_ACTOR, b""), "uleb")
    obj_ctr = _rle(cols.get(COL_OBJ_CTR, b""), "uleb")
    keys = _rle(cols.get(COL_KEY_STR, b""), "str")
    actions = _rle(cols.get(COL_ACTION, b""), "uleb")
    n = max(len(obj_actor), len(obj_ctr), len(keys), len(actions))
    objs: list[tuple[int, bytes] | None] = []
    for i in range(n):
        a = obj_actor[i] if i < len(obj_actor) else None
        c = obj_ctr[i] if i < len(obj_ctr) else None
        if a is None or c is None:
            objs.append(None)
        else:
            if not isinstance(a, int) or a >= len(actors):
                raise ChangeFormatError("object actor index out of range")
            objs.append((int(c), actors[a]))  # type: ignore[arg-type]
    keys_out = [k if isinstance(k, str) else None for k in keys] + [None] * (n - len(keys))
    created = {(start_op + i, actor) for i, act in enumerate(actions) if act in MAKE_ACTIONS}
    return ChangeOps(actor, start_op, objs, keys_out, created)
