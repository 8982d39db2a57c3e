"""Automerge replicas and the tolerant reader that turns the notebook document into
`CellView`/`CommView` parts of a snapshot.

A replica is only ever changed by received sync messages; it never makes a local change.
The reader caches per cell and per comm and re-reads only the entries a sync touched: the
patch paths of `Document.diff` name them. When a patch cannot be attributed, it falls back
to a full re-read (never a stale view).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from automerge import core as am

from .change_ops import ACTION_PUT, ChangeFormatError, ChangeOps, decode_change, encode_uleb, uleb
from .change_ops import MAGIC as CHUNK_MAGIC
from .errors import MAX_DEPTH, BadFrame
from .protocol.messages import decode_json
from .saved_form import SavedForm
from .snapshot import CellView, CommView, OutputView

HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX_POSITION = re.compile(r"^(?:[0-9A-F]{2})+$")


class DocError(BadFrame):
    """A sync message that does not decode, that Automerge rejects, or that made Automerge
    panic. The sync state may be unusable afterwards: the session reconnects (exit code 8)."""

    def __init__(self, message: str, *, data: bytes | None = None) -> None:
        super().__init__(message)
        self.size = len(data) if data is not None else None
        self.sha256 = hashlib.sha256(data).hexdigest() if data is not None else None


T = TypeVar("T")
_NOT_OURS = (KeyboardInterrupt, SystemExit, GeneratorExit)


def guarded(what: str, fn: Callable[..., T], *args: Any, data: bytes | None = None) -> T:
    """Call into the automerge binding; anything it raises becomes a DocError.

    A Rust panic surfaces as pyo3's PanicException, a BaseException that no `except Exception`
    sees: it is caught here by name of its base, and only interpreter exits pass through."""
    try:
        return fn(*args)
    except (*_NOT_OURS, DocError):
        raise
    except BaseException as exc:  # noqa: B036 - PanicException derives from BaseException
        kind = "panicked" if type(exc).__name__ == "PanicException" else "failed"
        raise DocError(f"automerge {kind} in {what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                       data=data) from None


def parse_json_text(text: str) -> Any:
    """JSON held in a document string: depth-bounded, MessageError for anything else."""
    return decode_json(text.encode("utf-8", "surrogatepass"))


# --------------------------------------------------------------------------- actors, ids


@functools.lru_cache(maxsize=4096)  # a document has few actors and many changes
def actor_label(actor: bytes) -> str:
    """Actor ids are the UTF-8 bytes of a label from #833 on; random 16 bytes before."""
    try:
        text = actor.decode("utf-8")
    except UnicodeDecodeError:
        return actor.hex()
    if text and all(ch.isprintable() for ch in text):
        return text
    return actor.hex()


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while pos < len(data):
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
    raise ValueError("truncated LEB128")


def parse_exid(exid: bytes) -> tuple[bytes, int] | None:
    """(actor, counter) of an Automerge object/op id; None for ROOT or unknown layouts."""
    if not exid or exid == am.ROOT:
        return None
    size = len(exid)
    n = exid[1] if size > 2 else 0x80
    pos = 2 + n
    if n < 0x80 and size > pos + 1 and exid[pos] < 0x80:
        # common layout: short actor, one-byte actor index, then the counter (LEB128)
        counter = shift = 0
        for b in exid[pos + 1 :]:
            counter |= (b & 0x7F) << shift
            shift += 7
        return exid[2:pos], counter
    try:
        n, pos = _uleb(exid, 1)
        actor = exid[pos : pos + n]
        pos += n
        nums = []
        while pos < len(exid):
            v, pos = _uleb(exid, pos)
            nums.append(v)
        return actor, nums[-1] if nums else 0
    except ValueError:
        return None


def exid_hex(exid: bytes) -> str:
    parsed = parse_exid(exid)
    if parsed is None:
        return "root" if exid == am.ROOT else exid.hex()
    actor, counter = parsed
    return f"{counter}@{actor.hex()}"


def latest_writer(exids: Iterable[bytes]) -> str | None:
    """Actor label of the op with the highest Lamport counter among `exids`."""
    best: tuple[int, bytes] | None = None
    for e in exids:
        p = parse_exid(e)
        if p is not None and (best is None or (p[1], p[0]) > best):
            best = (p[1], p[0])
    return actor_label(best[1]) if best else None


# --------------------------------------------------------------------------- value reading


def kind_name(kind: Any) -> str:
    """'Map', 'Text', 'Uint', ... for an ObjType or ScalarType (the binding's enums lack .name)."""
    return str(kind).rsplit(".", 1)[-1]


@dataclass
class Typed:
    """A read value with its Automerge kind: Map, List, Text or the scalar type name."""

    kind: str
    value: Any
    exid: bytes = b""


def read_entry(doc: am.Document, obj: bytes, prop: str | int) -> Typed | None:
    got = doc.get(obj, prop)
    if got is None:
        return None
    v, exid = got
    if isinstance(v, am.ObjType):
        return Typed(kind_name(v), to_json(doc, exid), exid)
    kind, val = v
    return Typed(kind_name(kind), val, exid)


_DROP = object()


def _scalar_json(kind: am.ScalarType, val: Any) -> Any:
    if kind in (am.ScalarType.Counter, am.ScalarType.Timestamp, am.ScalarType.Bytes, am.ScalarType.Unknown):
        return _DROP
    if kind == am.ScalarType.F64 and isinstance(val, float) and (val != val or val in (float("inf"), float("-inf"))):
        return None
    return val


TOO_DEEP = f"(nested deeper than {MAX_DEPTH} levels: not read)"


def to_json(doc: am.Document, obj: bytes = am.ROOT) -> Any:
    """Map → object, List → array, Text → string, scalars → JSON (document-schema §6.1).

    Counter/Timestamp/Bytes have no JSON form: dropped in a Map, null in a List. Iterative:
    objects nested deeper than MAX_DEPTH are shown as the TOO_DEEP marker, never recursed into."""
    root: list[Any] = [None]
    stack: list[tuple[bytes, Any, Any, int]] = [(obj, root, 0, 0)]
    while stack:
        o, parent, slot, depth = stack.pop()
        ot = doc.object_type(o)
        if ot == am.ObjType.Text:
            parent[slot] = doc.text(o)
            continue
        if depth >= MAX_DEPTH:
            parent[slot] = TOO_DEEP
            continue
        if ot == am.ObjType.Map:
            out: Any = {}
            for k, (v, exid) in zip(doc.keys(o), doc.values(o), strict=False):
                if isinstance(v, am.ObjType):
                    out[k] = None
                    stack.append((exid, out, k, depth + 1))
                else:
                    val = _scalar_json(*v)
                    if val is not _DROP:
                        out[k] = val
        else:
            out = []
            for v, exid in doc.values(o):
                if isinstance(v, am.ObjType):
                    out.append(None)
                    stack.append((exid, out, len(out) - 1, depth + 1))
                else:
                    val = _scalar_json(*v)
                    out.append(None if val is _DROP else val)
        parent[slot] = out
    return root[0]


def map_entries(doc: am.Document, obj: bytes) -> dict[str, tuple[Any, bytes]]:
    """Raw (value, exid) pairs of a Map in two native calls."""
    return dict(zip(doc.keys(obj), doc.values(obj), strict=False))


# --------------------------------------------------------------------------- replicas


ALL = ("*",)  # dirty marker: everything

ObjKey = tuple[int, bytes] | None  # (counter, actor) of an object; None = root


def obj_key(exid: bytes) -> ObjKey:
    """The (counter, actor) key of an object exid, as `decode_change` names objects."""
    parsed = parse_exid(exid)
    return None if parsed is None else (parsed[1], parsed[0])


@dataclass(frozen=True, slots=True)
class PutValue:
    """A scalar a change put: (ScalarType name, value) as `doc.get` gives them, and its op id."""

    kind: str
    value: Any
    actor: bytes
    counter: int


class Dirty(set):
    """Dirty paths, and, when the replica's history is linear, what the changes last did to
    each map key: read with `put(obj, key)` while the document is still at `heads`.

    In a linear history whose op counters only grow, the last op on a key has the highest
    op id of all ops ever made on it, and nothing made after it names it: it is the value
    `doc.get` returns, without the scan over every overwritten op that `doc.get` makes."""

    __slots__ = ("heads", "_last", "_sources")

    def __init__(self, paths: Iterable[tuple[str, ...]] = ()) -> None:
        super().__init__(paths)
        self.heads: list[bytes] | None = None  # set by the replica when the values hold
        self._last: dict[ObjKey, dict[str, tuple[ChangeOps, int]]] | None = None
        self._sources: dict[tuple[str, ...], set[ObjKey]] = {}

    def current(self, doc: am.Document) -> bool:
        """True when `put` describes `doc` (the replica's history was linear up to its heads)."""
        return self.heads is not None and self._last is not None and doc.get_heads() == self.heads

    def put(self, obj: bytes, key: str) -> PutValue | None:
        """The scalar the last op on `obj`/`key` put; None when that op is no scalar put, or
        the changes did not touch the key. Only meaningful while `current(doc)`."""
        if self._last is None:
            return None
        got = self._last.get(obj_key(obj), {}).get(key)
        if got is None:
            return None
        ops, i = got
        if ops.actions[i] != ACTION_PUT:
            return None
        kind, value = ops.values[i]
        return PutValue(kind, value, ops.actor, ops.start_op + i)

    def keys_of(self, obj: bytes) -> tuple[str, ...]:
        """The map keys of `obj` the changes touched."""
        return tuple(self._last.get(obj_key(obj), ())) if self._last is not None else ()

    def sources(self, path: tuple[str, ...]) -> set[ObjKey]:
        """The objects whose ops made `path` dirty (collected with the values only)."""
        return self._sources.get(path, set())


@dataclass(frozen=True, slots=True)
class SyncSummary:
    """What one sync message says: the sender's heads, what it needs, the change chunks it carries."""

    heads: tuple[bytes, ...]
    need: tuple[bytes, ...]
    changes: tuple[bytes, ...]


def apply_changes(doc: am.Document, heads: list[bytes], changes: list[bytes]) -> None:
    """Apply raw change chunks (each `Change.raw_bytes`) to `doc`, whose heads become `heads`:
    the binding has no `apply_changes`, so they go in as the one sync message that carries them
    (type 0x42: the heads, no need, no have), received with a peer state used once."""
    if not changes:
        return
    msg = b"".join([b"\x42", encode_uleb(len(heads)), *heads, encode_uleb(0), encode_uleb(0),
                    encode_uleb(len(changes)), *(encode_uleb(len(c)) + c for c in changes)])
    doc.receive_sync_message(am.SyncState(), am.Message.decode(msg))


def parse_sync_message(body: bytes) -> SyncSummary:
    """Read the fields of an automerge sync message (types 0x42 and 0x43); counts are checked
    against the bytes left, so nothing is allocated beyond the message's own size."""
    return _sync_layout(body)[0]


def combine_sync_messages(bodies: list[bytes]) -> tuple[bytes, SyncSummary]:
    """Several sync messages of one document, read together, as the one message that has the
    same effect: the last one's heads, need and have (and, in a 0x43 message, what follows its
    changes), carrying every message's changes in order. Automerge walks the document's whole
    change graph once per message received (`filter_changes`), however few changes it brings:
    at 80,000 changes of history 7.7 ms for a message of one change, 12.9 ms for one of ten.
    Raises DocError when any of them is malformed, to our reading or to automerge's decoder
    (the caller then takes them one by one, so the error names the frame that carried it)."""
    layouts = [_sync_layout(b) for b in bodies]
    for b, (summary, _start, _end) in zip(bodies, layouts, strict=True):
        guarded("decoding a sync message", am.Message.decode, b, data=b)
        # automerge reads a change's chunk only when it applies it: one that is not a chunk
        # would fail the whole batch, named by none of its frames
        if any(c[:4] != CHUNK_MAGIC for c in summary.changes):
            raise DocError("a change in a sync message is not an automerge chunk", data=b)
    last, (summary, start, end) = bodies[-1], layouts[-1]
    changes = tuple(c for lay in layouts for c in lay[0].changes)
    combined = b"".join([last[:start], encode_uleb(len(changes)),
                         *(encode_uleb(len(c)) + c for c in changes), last[end:]])
    return combined, SyncSummary(summary.heads, summary.need, changes)


def _sync_layout(body: bytes) -> tuple[SyncSummary, int, int]:
    """The message's fields, and where its `changes` field starts (its count) and ends."""
    if not body or body[0] not in (0x42, 0x43):
        raise DocError(f"not an automerge sync message (type byte {body[:1].hex() or 'none'})", data=body)
    pos = 1
    end = len(body)

    def count(unit: int) -> int:
        nonlocal pos
        n, pos = uleb(body, pos)
        if n * unit > end - pos:
            raise DocError(f"sync message claims {n} entries in {end - pos} bytes", data=body)
        return n

    def hashes() -> tuple[bytes, ...]:
        nonlocal pos
        n = count(32)
        out = tuple(body[pos + 32 * i: pos + 32 * (i + 1)] for i in range(n))
        pos += 32 * n
        return out

    try:
        heads = hashes()
        need = hashes()
        for _ in range(count(2)):
            hashes()
            n = count(1)  # bloom filter bytes
            _check_bloom(body[pos: pos + n], body)
            pos += n
        changes = []
        start = pos
        for _ in range(count(1)):
            n = count(1)
            changes.append(body[pos: pos + n])
            pos += n
    except (IndexError, ChangeFormatError):
        raise DocError("sync message is truncated", data=body) from None
    return SyncSummary(heads, need, tuple(changes)), start, pos


def _check_bloom(bloom: bytes, body: bytes) -> None:
    """A `have` bloom filter Automerge can use: it divides by its bits per entry and indexes its
    bits by the probes, so a filter with entries and 0 bits, or too few bits, makes it panic."""
    if not bloom:
        return
    entries, pos = uleb(bloom, 0)
    bits_per_entry, pos = uleb(bloom, pos)
    probes, pos = uleb(bloom, pos)
    if entries and (bits_per_entry == 0 or probes == 0):
        raise DocError(f"sync message has a bloom filter of {entries} entries with {bits_per_entry} bits "
                       f"per entry and {probes} probes", data=body)
    if len(bloom) - pos != (entries * bits_per_entry + 7) // 8:
        raise DocError(f"sync message has a bloom filter of {len(bloom) - pos} bytes for {entries} entries "
                       f"of {bits_per_entry} bits", data=body)


def chunks(entry: bytes) -> list[bytes]:
    """The chunks of one `changes` entry: a v2 (0x43) message may carry several back to back
    (a whole document and the changes after it). Stops at the first bytes that are not a chunk."""
    out: list[bytes] = []
    pos = 0
    while pos + 9 < len(entry) and entry[pos: pos + 4] == CHUNK_MAGIC:
        try:
            length, body = uleb(entry, pos + 9)
        except (IndexError, ChangeFormatError):
            break
        out.append(entry[pos: body + length])
        pos = body + length
    return out


def change_hash(chunk: bytes) -> bytes | None:
    """The hash of an uncompressed change chunk (SHA-256 of its bytes from the chunk type on);
    None for document chunks and compressed changes, whose hash is not over their bytes."""
    if len(chunk) > 8 and chunk[:4] == CHUNK_MAGIC and chunk[8] == 1:
        return hashlib.sha256(chunk[8:]).digest()
    return None


MAX_PROBLEMS = 1000
# A message carrying more changes than this is read back with get_changes: decoding them all
# in Python (~20 us each) would cost more than that one call.
MAX_MESSAGE_CHANGES = 1000


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """A change a sync message carried and the replica applied, with what the callers here read
    of automerge's `Change` (hash, raw_bytes, actor_id, seq, deps, start_op, max_op) and its ops."""

    hash: bytes
    raw_bytes: bytes
    ops: ChangeOps

    @property
    def actor_id(self) -> bytes:
        return self.ops.actor

    @property
    def seq(self) -> int:
        return self.ops.seq

    @property
    def deps(self) -> tuple[bytes, ...]:
        return self.ops.deps

    @property
    def start_op(self) -> int:
        return self.ops.start_op

    @property
    def max_op(self) -> int:
        return self.ops.start_op + len(self.ops.objs) - 1


@dataclass(frozen=True, slots=True)
class SyncProblem:
    """A change the daemon sent that the replica does not hold after applying the message."""

    kind: str  # corrupt (its checksum does not match) | unapplied (Automerge kept it out)
    doc: str
    size: int
    sha256: str  # of the chunk's bytes
    change_hash: str | None
    detail: str
    t: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "doc": self.doc, "size": self.size, "sha256": self.sha256,
                "change_hash": self.change_hash, "detail": self.detail}


class DocReplica:
    """One Automerge document kept in sync with the daemon through one sync state.

    Besides applying messages it keeps what the daemon *advertised* (the heads in its last sync
    message) and every change it sent that the replica does not hold (`problems`, `unapplied`),
    so convergence is judged against the daemon's heads, and a change Automerge silently kept
    out (corrupt, or waiting on a dependency that never comes) is reported, not lost."""

    def __init__(self, name: str, frame_type: int, depth: int = 2) -> None:
        self.name = name
        self.frame_type = frame_type
        self._doc = am.Document()
        # Linear: every change so far follows all earlier ones (it names the heads before it)
        # with higher op counters. Then the last put of a key is its value (`Dirty.put`).
        self.linear = True
        self._linear_heads: list[bytes] = []
        self._max_op = 0
        self.state = am.SyncState()
        self.messages_in = 0
        self.messages_out = 0
        self.last_reply_empty = True
        self.actors: set[str] = set()
        self._changes_seen = 0
        self._actor_heads: list[bytes] = []
        self.paths = ObjectPaths(depth)  # dirty paths name up to `depth` levels
        self.advertised_heads: tuple[str, ...] | None = None  # None until a message parses
        self.advertised_need: tuple[str, ...] = ()
        self.unapplied: dict[str, SyncProblem] = {}  # change hash -> still missing after its message
        self.problems: list[SyncProblem] = []  # new since take_problems()
        self._known: set[bytes] | None = None  # every change hash held, built on first need
        # actor -> (highest seq held, that change's hash), over every change the replica holds; None
        # when not known (a loaded document). What tells a carried change held from new (`_applied_from`).
        self._seqs: dict[bytes, tuple[int, bytes]] | None = {}
        self.applied_read = {"message": 0, "automerge": 0}  # how the applied changes were learnt
        self.saved_form = SavedForm()  # what a checkpoint holds (`saved`)

    @property
    def doc(self) -> am.Document:
        return self._doc

    @doc.setter
    def doc(self, doc: am.Document) -> None:
        # a document loaded from saved bytes: its history is not followed change by change
        self._doc = doc
        self.linear = False
        self._seqs = None
        self.saved_form.forget()

    def release(self) -> None:
        """Let go of the document (time travel: a seek's replica that is done with, whose
        cycles the collector may never reach); the replica is not used again."""
        self._doc = None  # type: ignore[assignment]

    def adopt_identical(self, doc: am.Document) -> None:
        """Hold `doc`, the very document this replica held when it was copied (loaded again
        from its saved bytes: time travel), so what is known of its history stays true."""
        self._doc = doc

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(h.hex() for h in self.doc.get_heads())

    @property
    def converged(self) -> bool:
        """True when the replica holds exactly the heads the daemon advertised last."""
        return self.advertised_heads is not None and set(self.advertised_heads) == set(self.heads)

    def saved(self) -> bytes:
        """The document as `Document.load` takes it: what a checkpoint holds, without a full
        save on the caller's time each time (`SavedForm`)."""
        return self.saved_form.form(self.doc, lambda: guarded(f"{self.name}: saving the document", self.doc.save))

    def take_problems(self) -> list[SyncProblem]:
        out, self.problems = self.problems, []
        return out

    def receive(self, body: bytes, want_dirty: bool = True) -> tuple[bytes | None, set[tuple[str, ...]]]:
        """Apply one sync message; return (reply or None, dirty paths). Raises DocError only."""
        summary = parse_sync_message(body)
        msg = guarded(f"{self.name}: decoding a sync message", am.Message.decode, body, data=body)
        before = self.doc.get_heads()
        # unknown until this message's changes are read: a failure from here on leaves it unknown
        seqs, self._seqs = self._seqs, None
        self.saved_form.moving()
        guarded(f"{self.name}: applying a sync message", self.doc.receive_sync_message, self.state, msg,
                data=body)
        self.messages_in += 1
        self.advertised_heads = tuple(h.hex() for h in summary.heads)
        self.advertised_need = tuple(h.hex() for h in summary.need)
        after = self.doc.get_heads()
        dirty: set[tuple[str, ...]] = set()
        applied: list[Any] = []
        if before == after:
            self._seqs = seqs
            self.saved_form.moved(())
        else:
            # a join (nothing held before) is read back whole: decoding it here would cost more
            found = self._applied_from(summary, before, after, seqs) if seqs is not None and before else None
            read = True
            if found is not None:
                applied = found
                self.applied_read["message"] += 1
            elif before or self._known is not None or self.unapplied or self.linear:
                applied = guarded(f"{self.name}: reading new changes", self.doc.get_changes, before)
                self.applied_read["automerge"] += 1
            else:
                read = seqs = None  # not read: which changes the replica holds is no longer known
            # when read: every change since `before`, in an order that respects their deps
            self.saved_form.moved([bytes(ch.raw_bytes) for ch in applied] if read else None)
            if seqs is not None:
                for ch in applied:
                    last = seqs.get(ch.actor_id)
                    if last is None or ch.seq > last[0]:
                        seqs[ch.actor_id] = (ch.seq, ch.hash)
                self._seqs = seqs
            if read and self._actor_heads == before:
                # change_actors is current to `before` and these are all the changes since
                for ch in applied:
                    self.actors.add(actor_label(ch.actor_id))
                self._changes_seen += len(applied)
                self._actor_heads = after
            if self.linear:
                guarded(f"{self.name}: following the history", self._follow, before, after, applied, data=body)
            if want_dirty and before:
                fallbacks = self.paths.fallbacks
                dirty = guarded(f"{self.name}: placing the new changes", self.paths.dirty_from, applied, self.doc,
                                self.linear, data=body)
                if self.paths.fallbacks != fallbacks:
                    self.linear = False  # a change that could not be read or placed: values unknown
                elif self.linear and isinstance(dirty, Dirty):
                    dirty.heads = after
            else:
                dirty = {ALL}
            if ALL in dirty:
                # indexed when an incremental read first needs it: a join's full syncs stay cheap
                self.paths.invalidate()
        self._check_changes(summary, applied, before != after)
        reply = self.generate(data=body)
        return reply, dirty

    def _applied_from(self, summary: SyncSummary, before: list[bytes], after: list[bytes],
                      seqs: dict[bytes, tuple[int, bytes]]) -> list[AppliedChange] | None:
        """The changes this message applied, in an order that respects their deps, read from the
        message itself (`get_changes(before)` costs time that grows with the history). None when
        the message does not account exactly for the new heads: the caller asks automerge.

        Exact because: a carried change is new when its seq is above its actor's highest held
        (a held one is in `before`'s heads or its actor's latest, anything else falls back); the
        new ones whose deps are all held or new form, with the history, a closed set; and the
        heads of that set are the document's. Two closed sets with the same heads are equal."""
        held = set(before)  # certainly held: the heads, and each actor's latest change
        held.update(h for _, h in seqs.values())
        new: dict[bytes, AppliedChange] = {}
        n = 0
        for entry in summary.changes:
            for chunk in chunks(entry):
                n += 1
                h = change_hash(chunk)
                if n > MAX_MESSAGE_CHANGES or h is None or chunk[4:8] != h[:4]:
                    return None  # a large sync, a compressed change, a document, a corrupt chunk
                if h in held or h in new:
                    continue
                try:
                    ops = decode_change(chunk)
                except ChangeFormatError:
                    return None
                last = seqs.get(ops.actor)
                if last is not None and ops.seq <= last[0]:
                    return None  # an older change resent, or a second change with that seq
                new[h] = AppliedChange(h, chunk, ops)
        if not new:
            return None
        # topological order (Kahn); a change waiting on one neither held nor new stays out, as
        # automerge keeps it queued
        waiting: dict[bytes, int] = {}
        children: dict[bytes, list[bytes]] = {}
        ready: list[bytes] = []
        for h, ch in new.items():
            k = 0
            for d in set(ch.ops.deps):
                if d not in held:
                    k += 1
                    children.setdefault(d, []).append(h)
            if k:
                waiting[h] = k
            else:
                ready.append(h)
        order: list[AppliedChange] = []
        i = 0
        while i < len(ready):
            order.append(new[ready[i]])
            for c in children.get(ready[i], ()):
                waiting[c] -= 1
                if not waiting[c]:
                    ready.append(c)
            i += 1
        deps = {d for ch in order for d in ch.ops.deps}
        heads = {h for h in before if h not in deps}
        heads.update(ch.hash for ch in order if ch.hash not in deps)
        return order if heads == set(after) else None

    def _follow(self, before: list[bytes], after: list[bytes], applied: list[Any]) -> None:
        """Keep `linear` true only while each applied change names all the heads before it (it
        follows every change so far) and starts above every op counter so far; they come in
        causal order (get_changes' or `_applied_from`'s). Automerge also names the actor's own
        previous change, an ancestor of those heads: more deps than heads is still one line."""
        heads = set(before)
        if before != self._linear_heads:
            self.linear = False  # the document moved other than by the changes followed here
            return
        max_op = self._max_op
        for ch in applied:
            if not heads <= set(ch.deps) or ch.start_op <= max_op:
                self.linear = False  # concurrent branches (or reused counters): doc.get decides
                return
            heads = {ch.hash}
            max_op = max(max_op, ch.max_op)
        if heads != set(after):
            self.linear = False
            return
        self._linear_heads, self._max_op = after, max_op

    def _check_changes(self, summary: SyncSummary, applied: list[Any], moved: bool) -> None:
        for entry in summary.changes:
            rest = len(entry) - sum(len(c) for c in chunks(entry))
            if rest:  # automerge skips what is not a chunk without a word: say it
                junk = entry[len(entry) - rest:]
                problem = SyncProblem("corrupt", self.name, rest, hashlib.sha256(junk).hexdigest(), None,
                                      "bytes in the message's changes that are not an automerge chunk",
                                      time.monotonic())
                self.problems.append(problem)
        if self.converged:
            # Holding the daemon's heads is holding every change it could send (their ancestors).
            self.unapplied.clear()
            if self._known is not None:
                self._known.update(ch.hash for ch in applied)
            return
        applied_hashes = {ch.hash for ch in applied}
        if self._known is not None:
            self._known |= applied_hashes
        for h in applied_hashes & {bytes.fromhex(k) for k in self.unapplied}:
            self.unapplied.pop(h.hex(), None)  # its dependency arrived
        now = time.monotonic()
        for chunk in (c for entry in summary.changes for c in chunks(entry)):
            h = change_hash(chunk)
            if h is None or h in applied_hashes:
                continue
            if h.hex() in self.unapplied:
                continue
            if chunk[4:8] != h[:4]:
                kind, detail = "corrupt", "its checksum does not match its bytes"
            else:
                if self._known is None:  # once: which changes does the replica hold already?
                    self._known = {ch.hash for ch in guarded(f"{self.name}: reading changes",
                                                             self.doc.get_changes, [])}
                if h in self._known:
                    continue  # a resend of a change already held
                kind, detail = "unapplied", ("Automerge did not apply it (a dependency it names is missing, "
                                             "or the change is invalid)")
            problem = SyncProblem(kind, self.name, len(chunk), hashlib.sha256(chunk).hexdigest(), h.hex(),
                                  detail, now)
            self.unapplied[h.hex()] = problem
            self.problems.append(problem)
        if len(self.problems) > MAX_PROBLEMS:  # nobody took them: keep the latest, bounded
            del self.problems[:-MAX_PROBLEMS]

    def generate(self, data: bytes | None = None) -> bytes | None:
        """The next sync message to send; `data`: the message just received, named in a DocError."""
        reply = guarded(f"{self.name}: generating a sync reply", self.doc.generate_sync_message, self.state,
                        data=data)
        self.last_reply_empty = reply is None
        if reply is None:
            return None
        self.messages_out += 1
        return guarded(f"{self.name}: encoding a sync reply", reply.encode)

    def change_actors(self) -> tuple[int, tuple[str, ...]]:
        """(number of changes, actor labels that wrote them); reads only changes new since last time."""
        heads = self.doc.get_heads()
        if heads != self._actor_heads:
            for ch in guarded(f"{self.name}: reading changes", self.doc.get_changes, self._actor_heads):
                self.actors.add(actor_label(ch.actor_id))
                self._changes_seen += 1
            self._actor_heads = heads
        return self._changes_seen, tuple(sorted(self.actors))


class ObjectPaths:
    """Object id -> the top levels of its path ("cells", "<id>"[, "<field>"]), kept current from
    the changes themselves (objects a change creates are registered from their make op)."""

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self._paths: dict[tuple[int, bytes], tuple[str, ...]] = {}
        self.stale = False  # a full read happened: index from the document before the next use
        self.fallbacks = 0  # incremental reads that had to fall back to a full read
        self._build: list[tuple[bytes, tuple[str, ...], bool]] | None = None  # objects still to visit (warm)

    def __len__(self) -> int:
        return len(self._paths)

    def invalidate(self) -> None:
        self._paths.clear()
        self.stale = True
        self._build = None

    def warm(self, doc: am.Document, budget_s: float | None = None) -> bool:
        """Index now (idle time) rather than on the next incremental read. With a budget, in
        slices of about that many seconds (a 10,000-cell room takes ~0.5 s to index, which the
        window must not spend in one go): True once the index is whole. A read that needs the
        index before the slices are done goes on with them as far as its objects (`_find`)."""
        if not self.stale:
            return True
        if budget_s is None:
            self.rebuild(doc)
            return True
        if self._build is None:
            self._start_build()
        stack = self._build
        end = time.perf_counter() + budget_s
        while stack:
            self._visit(doc, stack.pop(), stack)
            if time.perf_counter() >= end:
                break
        if stack:
            return False
        self.stale = False
        self._build = None
        return True

    def _start_build(self) -> None:
        self._paths.clear()
        self._build = [(am.ROOT, (), True)]

    def rebuild(self, doc: am.Document) -> None:
        self.stale = False
        self._build = None
        self._paths.clear()
        stack: list[tuple[bytes, tuple[str, ...], bool]] = [(am.ROOT, (), True)]
        while stack:
            self._visit(doc, stack.pop(), stack)

    def _visit(self, doc: am.Document, entry: tuple[bytes, tuple[str, ...], bool],
               stack: list[tuple[bytes, tuple[str, ...], bool]]) -> None:
        """Index the children of one object; push the ones that have children of their own."""
        obj, path, is_map = entry
        if is_map:
            items: Iterable[tuple[str | None, tuple[Any, bytes]]] = zip(doc.keys(obj), doc.values(obj), strict=False)
        else:
            items = ((None, v) for v in doc.values(obj))
        for k, (v, exid) in items:
            if not isinstance(v, am.ObjType):
                continue
            child = path + (k,) if (k is not None and len(path) < self.depth) else path
            parsed = parse_exid(exid)
            if parsed is not None:
                self._paths[(parsed[1], parsed[0])] = child
            if v != am.ObjType.Text:
                stack.append((exid, child, v == am.ObjType.Map))

    def _find(self, doc: am.Document, obj: ObjKey) -> tuple[str, ...] | None:
        """Go on with the warm-up's slices until `obj` is placed (or the index is whole): a read
        during the warm-up costs what is left to reach its objects, not a rebuild from scratch."""
        stack = self._build
        paths = self._paths
        while stack and obj not in paths:
            self._visit(doc, stack.pop(), stack)
        if not stack:
            self.stale = False
            self._build = None
        return paths.get(obj)

    def dirty(self, doc: am.Document, before: list[bytes]) -> set[tuple[str, ...]]:
        """Paths the changes since `before` touched; {ALL} when one cannot be placed."""
        return self.dirty_from(guarded("reading new changes", doc.get_changes, before), doc)

    def dirty_from(self, changes: Iterable[Any], doc: am.Document | None = None,
                   values: bool = False) -> set[tuple[str, ...]]:
        """Paths `changes` touched; {ALL} when one cannot be placed (or the index is stale).

        `values`: also note the last op on each map key and the objects behind each path
        (a `Dirty`, for `Dirty.put`); the replica asks for them while its history is linear."""
        out = Dirty()
        if self.stale:
            if doc is None:
                return {ALL}
            # indexed as the warm-up's slices do, from the document as it is now (the new
            # changes' make ops agree): what they placed is placed for good, and an object not
            # reached yet is looked for by going on with them (`_find`), so a read costs what it
            # takes to reach its objects, not a whole rebuild
            if self._build is None:
                self._start_build()
        last: dict[ObjKey, dict[str, tuple[ChangeOps, int]]] = {}
        sources = out._sources
        try:
            for ch in changes:
                ops = ch.ops if isinstance(ch, AppliedChange) else decode_change(ch.raw_bytes)
                for i, (obj, key) in enumerate(zip(ops.objs, ops.keys, strict=False)):
                    if obj is None:
                        parent: tuple[str, ...] | None = ()
                    else:
                        parent = self._paths.get(obj)
                        if parent is None and self._build is not None and doc is not None:
                            parent = self._find(doc, obj)
                        if parent is None:
                            self.fallbacks += 1
                            return {ALL}
                    path = parent + (key,) if (key is not None and len(parent) < self.depth) else parent
                    if not path:
                        self.fallbacks += 1
                        return {ALL}
                    out.add(path)
                    op_id = (ops.start_op + i, ops.actor)
                    if op_id in ops.created:
                        self._paths[op_id] = path
                    if values:
                        src = sources.get(path)
                        if src is None:
                            sources[path] = {obj}
                        else:
                            src.add(obj)
                        if key is not None:
                            per_obj = last.get(obj)
                            if per_obj is None:
                                last[obj] = {key: (ops, i)}
                            else:
                                per_obj[key] = (ops, i)
        except (ChangeFormatError, ValueError, IndexError):
            self.fallbacks += 1
            return {ALL}
        if values:
            out._last = last
        return out


# --------------------------------------------------------------------------- notebook reader

OutputResolver = Callable[[str], OutputView]


def _plain_output_ref(ref: str) -> OutputView:
    if HEX64.match(ref):
        return OutputView(ref=ref, error="blob server not consulted")
    try:
        raw = parse_json_text(ref)
    except ValueError as exc:
        return OutputView(ref="raw", error=f"neither a manifest hash nor JSON: {exc}")
    ot = raw.get("output_type") if isinstance(raw, dict) else None
    return OutputView(ref="raw", manifest=raw if isinstance(raw, dict) else None, output_type=ot,
                      error=None if isinstance(raw, dict) else "raw output is not an object")


def parse_execution_count(value: Any, flags: list[str]) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        flags.append("execution_count stored as a number")
        return value
    if not isinstance(value, str):
        if value is not None:
            flags.append(f"execution_count has kind {type(value).__name__}")
        return None
    try:
        parsed = parse_json_text(value)
    except ValueError:
        flags.append(f"execution_count {value!r} does not parse")
        return None
    if parsed is None or (isinstance(parsed, int) and not isinstance(parsed, bool)):
        return parsed
    flags.append(f"execution_count {value!r} is not an integer")
    return None


# ScalarTypes whose decoded value is the very Python value the binding gives (Bytes come as a
# list of ints, Timestamps as datetimes, Counters with their increments summed: read those back)
EXACT_KINDS = frozenset({"Str", "Int", "Uint", "F64", "Boolean", "Null"})

CELL_KEYS = {"id", "cell_type", "position", "source", "execution_count", "outputs", "metadata",
             "resolved_assets", "execution_id", "attachments"}
COMM_KEYS = {"target_name", "model_module", "model_name", "state", "outputs", "seq", "capture_msg_id"}


@dataclass
class NotebookReader:
    """Cached, incremental reader of the notebook document (schema v1/v2/v3/v5 tolerant)."""

    resolve: OutputResolver = _plain_output_ref
    cells: dict[str, CellView] = field(default_factory=dict)
    comms: dict[str, CommView] = field(default_factory=dict)
    metadata: Any = field(default_factory=dict)
    schema_version: int | None = None
    notebook_id: str | None = None
    extra_root: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    has_comms_map: bool = False
    cells_layout: str = "missing"  # map | list | missing | invalid
    _order: tuple[CellView, ...] | None = None
    _order_index: dict[str, int] = field(default_factory=dict)
    _order_patch: dict[str, CellView] = field(default_factory=dict)
    _comm_order: tuple[CommView, ...] | None = None
    _comm_index: dict[str, int] = field(default_factory=dict)
    _comm_patch: dict[str, CommView] = field(default_factory=dict)
    # Output refs each cell/comm holds, to re-resolve when a manifest arrives
    _refs: dict[str, set[str]] = field(default_factory=dict)
    # Automerge object of each entry ("cells/<id>" -> exid), for reads of single fields
    _entry_objs: dict[str, bytes] = field(default_factory=dict)

    # -- entry point -------------------------------------------------------------------------

    def refresh(self, doc: am.Document, dirty: set[tuple[str, ...]]) -> set[str]:
        """Re-read what `dirty` names; return the tree paths that changed ("cells/<id>", ...).

        A panic of the binding while reading raises DocError (the document cannot be trusted)."""
        return guarded("reading the notebook document", self._refresh, doc, dirty)

    def _refresh(self, doc: am.Document, dirty: set[tuple[str, ...]]) -> set[str]:
        changed: set[str] = set()
        if not dirty:
            return changed
        if ALL in dirty:
            return self._read_all(doc)
        root = map_entries(doc, am.ROOT)
        fast = dirty if isinstance(dirty, Dirty) and dirty.current(doc) else None
        roots_done: set[str] = set()
        # entry key -> fields touched (None: the entry itself, read it whole)
        entries: dict[tuple[str, str], set[str] | None] = {}
        for path in dirty:
            top = path[0]
            if len(path) >= 2 and ((top == "cells" and self.cells_layout == "map")
                                   or (top == "comms" and self.has_comms_map)):
                k = (top, path[1])
                if len(path) == 2 or (k in entries and entries[k] is None):
                    entries[k] = None
                else:
                    entries.setdefault(k, set()).add(path[2])  # type: ignore[union-attr]
            elif top not in roots_done:
                roots_done.add(top)
                changed |= self._read_root_key(doc, root, top)
        for (top, key), fields in entries.items():
            if top in roots_done:
                continue  # the whole map was re-read
            if top == "cells":
                changed |= self._refresh_cell(doc, root, key, fields, fast)
            else:
                changed |= self._refresh_comm(doc, root, key, fields, fast)
        return changed

    # -- single fields (a sync that touched only `source`, `state`, ...) ----------------------------

    def _refresh_cell(self, doc: am.Document, root: dict[str, tuple[Any, bytes]], key: str,
                      fields: set[str] | None, fast: Dirty | None = None) -> set[str]:
        old, obj = self.cells.get(key), self._entry_objs.get(f"cells/{key}")
        if (fields and old is not None and obj is not None and fields <= {"source", "execution_count"}
                and not any(f.startswith("source") for f in old.flags)):
            updates: dict[str, Any] = {}
            if "source" in fields:
                got = doc.get(obj, "source")
                if got is None or got[0] != am.ObjType.Text:
                    return self._read_cell(doc, root, key)
                updates["source"] = doc.text(got[1])
            if "execution_count" in fields:
                put = fast.put(obj, "execution_count") if fast is not None else None
                if put is not None and put.kind in EXACT_KINDS:
                    value = put.value  # what doc.get would return, without its scan of the key's history
                else:
                    got = doc.get(obj, "execution_count")
                    if got is None or isinstance(got[0], am.ObjType):
                        return self._read_cell(doc, root, key)
                    value = got[0][1]
                flags = [f for f in old.flags if not f.startswith("execution_count")]
                updates["execution_count"] = parse_execution_count(value, flags)
                updates["flags"] = tuple(flags)
            new = msgspec.structs.replace(old, **updates)
            self.cells[key] = new
            if self._order is not None:
                self._order_patch[key] = new
            return {f"cells/{key}"}
        return self._read_cell(doc, root, key)

    def _refresh_comm(self, doc: am.Document, root: dict[str, tuple[Any, bytes]], key: str,
                      fields: set[str] | None, fast: Dirty | None = None) -> set[str]:
        old, obj = self.comms.get(key), self._entry_objs.get(f"comms/{key}")
        if (fields and old is not None and obj is not None and fields <= {"state"}
                and old.state_error is None and not any("state" in f for f in old.flags)):
            put = fast.put(obj, "state") if fast is not None else None
            if put is not None and put.kind == "Str":
                text, writer = put.value, actor_label(put.actor)  # doc.get's value, without its scan
            else:
                got = doc.get(obj, "state")
                if got is None or isinstance(got[0], am.ObjType) or got[0][0] != am.ScalarType.Str:
                    return self._read_comm(doc, root, key)
                text = got[0][1]
                parsed = parse_exid(got[1])
                writer = actor_label(parsed[0]) if parsed else old.writer
            try:
                state, error = parse_json_text(text), None
            except ValueError as exc:
                state, error = text, f"state is not valid JSON: {exc}"
            new = msgspec.structs.replace(old, state=state, state_error=error, writer=writer)
            self.comms[key] = new
            if self._comm_order is not None:
                self._comm_patch[key] = new
            return {f"comms/{key}"}
        return self._read_comm(doc, root, key)

    def invalidate_refs(self, doc: am.Document, refs: set[str]) -> set[str]:
        """Re-build the entries that show any of `refs` (a manifest just resolved)."""
        touched = {path for path, held in self._refs.items() if held & refs}
        if not touched:
            return set()
        root = map_entries(doc, am.ROOT)
        changed: set[str] = set()
        for path in touched:
            kind, _, key = path.partition("/")
            changed |= self._read_cell(doc, root, key) if kind == "cells" else self._read_comm(doc, root, key)
        return changed

    # -- whole-document reads ------------------------------------------------------------------

    def _read_all(self, doc: am.Document) -> set[str]:
        old_cells, old_comms = set(self.cells), set(self.comms)
        self.cells.clear()
        self.comms.clear()
        self._refs.clear()
        self.extra_root.clear()
        root = map_entries(doc, am.ROOT)
        changed = {"root"}
        for key in set(root) | {"cells", "comms", "metadata", "schema_version", "notebook_id"}:
            changed |= self._read_root_key(doc, root, key)
        changed |= {f"cells/{k}" for k in old_cells} | {f"comms/{k}" for k in old_comms}
        return changed

    def _read_root_key(self, doc: am.Document, root: dict[str, tuple[Any, bytes]], key: str) -> set[str]:
        entry = root.get(key)
        if key == "cells":
            return self._read_cells(doc, entry)
        if key == "comms":
            return self._read_comms(doc, entry)
        if key == "metadata":
            if entry is None:
                self.metadata = {}
            elif isinstance(entry[0], am.ObjType):
                self.metadata = to_json(doc, entry[1])
            else:
                self.metadata = {}
                self._warn(f"root metadata is a {kind_name(entry[0][0])}, not a Map")
            return {"metadata"}
        if key == "schema_version":
            self.schema_version = None
            if entry is not None and not isinstance(entry[0], am.ObjType):
                kind, val = entry[0]
                if kind in (am.ScalarType.Uint, am.ScalarType.Int):
                    self.schema_version = int(val)
            elif entry is not None:
                self._warn("schema_version is an object")
            return {"root"}
        if key == "notebook_id":
            self.notebook_id = None
            if entry is not None and not isinstance(entry[0], am.ObjType):
                self.notebook_id = str(entry[0][1])
            elif entry is not None and entry[0] == am.ObjType.Text:
                self.notebook_id = doc.text(entry[1])
            return {"root"}
        # unknown root keys are kept and shown
        if entry is None:
            self.extra_root.pop(key, None)
        else:
            v, exid = entry
            self.extra_root[key] = to_json(doc, exid) if isinstance(v, am.ObjType) else _json_safe(v[1])
        return {"root"}

    def _read_cells(self, doc: am.Document, entry: tuple[Any, bytes] | None) -> set[str]:
        changed = {f"cells/{k}" for k in self.cells} | {"cells"}
        self.cells.clear()
        self._refs = {k: v for k, v in self._refs.items() if not k.startswith("cells/")}
        self._order = None
        if entry is None:
            self.cells_layout = "missing"
            return changed
        v, obj = entry
        if v == am.ObjType.Map:
            self.cells_layout = "map"
            root = {"cells": entry}
            for key in doc.keys(obj):
                changed |= self._read_cell(doc, root, key)
        elif v == am.ObjType.List:
            self.cells_layout = "list"  # schema v1: index order
            for idx in range(doc.length(obj)):
                got = doc.get(obj, idx)
                if got is None or got[0] != am.ObjType.Map:
                    continue
                view = self._cell_from_map(doc, got[1], f"{idx}", list_index=idx)
                if view is not None:
                    self.cells[view.key] = view
                    changed.add(f"cells/{view.key}")
        else:
            self.cells_layout = "invalid"
            self._warn("root cells is neither a Map nor a List")
        return changed

    def _read_comms(self, doc: am.Document, entry: tuple[Any, bytes] | None) -> set[str]:
        changed = {f"comms/{k}" for k in self.comms} | {"comms"}
        self.comms.clear()
        self._refs = {k: v for k, v in self._refs.items() if not k.startswith("comms/")}
        self._comm_order = None
        self.has_comms_map = entry is not None and entry[0] == am.ObjType.Map
        if entry is None:
            return changed
        if not self.has_comms_map:
            self._warn("root comms is not a Map")
            return changed
        root = {"comms": entry}
        for key in doc.keys(entry[1]):
            changed |= self._read_comm(doc, root, key)
        return changed

    # -- one cell -----------------------------------------------------------------------------

    def _read_cell(self, doc: am.Document, root: dict[str, tuple[Any, bytes]], key: str) -> set[str]:
        old = self.cells.get(key)
        changed = self._read_cell_inner(doc, root, key)
        new = self.cells.get(key)
        if old is not None and new is not None and (old.position, old.id) == (new.position, new.id) \
                and self._order is not None:
            # same place in the order: swap the entry instead of re-sorting every cell
            self._order_patch[key] = new
        else:
            self._order = None
        return changed

    def _read_cell_inner(self, doc: am.Document, root: dict[str, tuple[Any, bytes]], key: str) -> set[str]:
        path = f"cells/{key}"
        cells = root.get("cells")
        got = doc.get(cells[1], key) if cells is not None and cells[0] == am.ObjType.Map else None
        self._refs.pop(path, None)
        if got is None or got[0] != am.ObjType.Map:
            self.cells.pop(key, None)
            if got is not None:
                self._warn(f"cell {key!r} is not a Map")
            return {path, "cells"}
        view = self._cell_from_map(doc, got[1], key)
        if view is None:
            self.cells.pop(key, None)
        else:
            self.cells[key] = view
            self._entry_objs[path] = got[1]
        return {path}

    def _cell_from_map(self, doc: am.Document, obj: bytes, key: str, list_index: int | None = None) -> CellView | None:
        ent = map_entries(doc, obj)
        flags: list[str] = []

        def scalar_str(name: str, default: str) -> str:
            e = ent.get(name)
            if e is None:
                return default
            v, exid = e
            if isinstance(v, am.ObjType):
                if v == am.ObjType.Text:
                    flags.append(f"{name} is Text, expected Str")
                    return doc.text(exid)
                flags.append(f"{name} is a {kind_name(v)}")
                return default
            if v[0] != am.ScalarType.Str:
                flags.append(f"{name} is {kind_name(v[0])}, expected Str")
                return str(v[1]) if v[1] is not None else default
            return v[1]

        if "id" not in ent:
            self._warn(f"cell under key {key!r} has no id: skipped (as the daemon does)")
            return None
        cell_id = scalar_str("id", key)
        if list_index is None and cell_id != key:
            flags.append(f"id {cell_id!r} differs from its map key {key!r}")
        position = scalar_str("position", "80") if list_index is None else f"{list_index:04d}"
        if list_index is None and "position" not in ent:
            flags.append("no position (default 80)")
        elif list_index is None and not HEX_POSITION.match(position):
            flags.append(f"position {position!r} is not uppercase hex")
        src = ent.get("source")
        source = ""
        if src is not None:
            v, exid = src
            if v == am.ObjType.Text:
                source = doc.text(exid)
            elif not isinstance(v, am.ObjType) and v[0] == am.ScalarType.Str:
                source = v[1]
                flags.append("source is Str, expected Text")
            else:
                flags.append("source has an unexpected kind")
        ec_entry = ent.get("execution_count")
        ec_raw: Any = "null"
        if ec_entry is not None and not isinstance(ec_entry[0], am.ObjType):
            ec_raw = ec_entry[0][1]
        execution_count = parse_execution_count(ec_raw, flags)
        refs: list[str] = []
        out_entry = ent.get("outputs")
        if out_entry is not None:
            if out_entry[0] == am.ObjType.List:
                for v, exid in doc.values(out_entry[1]):
                    if isinstance(v, am.ObjType):
                        refs.append(json.dumps(to_json(doc, exid)) if v != am.ObjType.Text else doc.text(exid))
                        flags.append("an outputs entry is an object, expected Str")
                    else:
                        refs.append(str(v[1]))
            else:
                flags.append("outputs is not a List")
        md_entry = ent.get("metadata")
        metadata: Any = {}
        if md_entry is not None:
            v, exid = md_entry
            if isinstance(v, am.ObjType):
                metadata = to_json(doc, exid)
            elif v[0] == am.ScalarType.Str:
                flags.append("legacy metadata (JSON string)")
                try:
                    metadata = parse_json_text(v[1])
                except ValueError:
                    flags.append("legacy metadata does not parse: {} used")
                    metadata = {}
        exec_id = None
        ee = ent.get("execution_id")
        if ee is not None and not isinstance(ee[0], am.ObjType) and ee[0][0] == am.ScalarType.Str:
            exec_id = ee[0][1]
        extra = {k: (to_json(doc, e[1]) if isinstance(e[0], am.ObjType) else _json_safe(e[0][1]))
                 for k, e in ent.items() if k not in CELL_KEYS}
        for k in ("resolved_assets", "attachments"):
            if k in ent and isinstance(ent[k][0], am.ObjType):
                val = to_json(doc, ent[k][1])
                if val:
                    extra[k] = val
        path = f"cells/{cell_id if list_index is None else key}"
        if refs:
            self._refs[path] = set(refs)
        return CellView(
            id=cell_id,
            cell_type=scalar_str("cell_type", ""),
            position=position,
            source=source,
            execution_count=execution_count,
            outputs=tuple(self.resolve(r) for r in refs),
            metadata=metadata,
            key=key,
            flags=tuple(flags),
            extra=extra,
            execution_id=exec_id,
            obj_id=exid_hex(obj),
        )

    # -- one comm -------------------------------------------------------------------------------

    def _read_comm(self, doc: am.Document, root: dict[str, tuple[Any, bytes]], key: str) -> set[str]:
        old = self.comms.get(key)
        changed = self._read_comm_inner(doc, root, key)
        new = self.comms.get(key)
        if old is not None and new is not None and old.seq == new.seq and self._comm_order is not None:
            self._comm_patch[key] = new
        else:
            self._comm_order = None
        return changed

    def _read_comm_inner(self, doc: am.Document, root: dict[str, tuple[Any, bytes]], key: str) -> set[str]:
        path = f"comms/{key}"
        comms = root.get("comms")
        got = doc.get(comms[1], key) if comms is not None and comms[0] == am.ObjType.Map else None
        self._refs.pop(path, None)
        if got is None:
            self.comms.pop(key, None)
            return {path, "comms"}
        if got[0] != am.ObjType.Map:
            self.comms[key] = CommView(comm_id=key, seq=None, target_name=None, model_module=None,
                                       model_name=None, state=None, state_error=None, outputs=(),
                                       flags=("entry is not a Map",), obj_id=exid_hex(got[1]))
            return {path}
        self.comms[key] = read_comm_entry(doc, got[1], key, self.resolve, self._refs)
        self._entry_objs[path] = got[1]
        return {path}

    # -- ordered views ----------------------------------------------------------------------------

    def ordered_cells(self) -> tuple[CellView, ...]:
        if self._order is None:
            self._order = tuple(sorted(self.cells.values(), key=lambda c: (c.position, c.id)))
            self._order_index = {c.key: i for i, c in enumerate(self._order)}
            self._order_patch.clear()
        elif self._order_patch:
            items = list(self._order)
            for key, view in self._order_patch.items():
                items[self._order_index[key]] = view
            self._order = tuple(items)
            self._order_patch.clear()
        return self._order

    def ordered_comms(self) -> tuple[CommView, ...]:
        if self._comm_order is None:
            self._comm_order = tuple(sorted(
                self.comms.values(), key=lambda c: (c.seq is None, c.seq if c.seq is not None else 0, c.comm_id)))
            self._comm_index = {c.comm_id: i for i, c in enumerate(self._comm_order)}
            self._comm_patch.clear()
        elif self._comm_patch:
            items = list(self._comm_order)
            for key, view in self._comm_patch.items():
                items[self._comm_index[key]] = view
            self._comm_order = tuple(items)
            self._comm_patch.clear()
        return self._comm_order

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)


def read_seq(ent: dict[str, tuple[Any, bytes]], flags: list[str], expect_uint: bool) -> tuple[int | None, str | None]:
    """A comm's `seq` (Uint under #808, Int in later upstream docs); deviations go to `flags`."""
    se = ent.get("seq")
    if se is None:
        flags.append("missing seq")
        return None, None
    if isinstance(se[0], am.ObjType):
        flags.append("seq is an object")
        return None, None
    kind = se[0][0]
    seq_type = kind_name(kind)
    if kind not in (am.ScalarType.Uint, am.ScalarType.Int):
        flags.append(f"seq has kind {seq_type}")
        return None, seq_type
    if expect_uint and kind == am.ScalarType.Int:
        flags.append("seq stored as Int, not Uint")
    return int(se[0][1]), seq_type


def read_comm_entry(doc: am.Document, obj: bytes, comm_id: str, resolve: OutputResolver,
                    refs_out: dict[str, set[str]] | None = None) -> CommView:
    """One `comms/<id>` entry with the #808 tolerances (document-schema §10.3)."""
    ent = map_entries(doc, obj)
    flags: list[str] = []

    def opt_str(name: str) -> str | None:
        e = ent.get(name)
        if e is None:
            flags.append(f"missing {name}")
            return None
        v, exid = e
        if v == am.ObjType.Text:
            return doc.text(exid) or None
        if isinstance(v, am.ObjType) or v[0] != am.ScalarType.Str:
            flags.append(f"{name} has kind {kind_name(v if isinstance(v, am.ObjType) else v[0])}")
            return None
        return v[1] or None

    target = opt_str("target_name")
    mm = opt_str("model_module")
    mn = opt_str("model_name")
    seq, seq_type = read_seq(ent, flags, expect_uint=True)
    state: Any = None
    state_error = None
    st = ent.get("state")
    if st is None:
        flags.append("missing state")
    else:
        v, exid = st
        if v == am.ObjType.Map:
            state = to_json(doc, exid)
        elif v == am.ObjType.Text or (not isinstance(v, am.ObjType) and v[0] == am.ScalarType.Str):
            text = doc.text(exid) if v == am.ObjType.Text else v[1]
            try:
                state = parse_json_text(text)
            except ValueError as exc:
                state, state_error = text, f"state is not valid JSON: {exc}"
        else:
            state_error = "state has an unexpected kind"
    refs: list[str] = []
    oe = ent.get("outputs")
    if oe is not None and oe[0] == am.ObjType.List:
        for v, exid in doc.values(oe[1]):
            if isinstance(v, am.ObjType):
                refs.append(json.dumps(to_json(doc, exid)))
            else:
                refs.append(str(v[1]))
    elif oe is not None:
        flags.append("outputs is not a List")
    extra = {k: (to_json(doc, e[1]) if isinstance(e[0], am.ObjType) else _json_safe(e[0][1]))
             for k, e in ent.items() if k not in COMM_KEYS}
    capture = None
    ce = ent.get("capture_msg_id")
    if ce is not None and not isinstance(ce[0], am.ObjType):
        capture = str(ce[0][1])
    if refs and refs_out is not None:
        refs_out[f"comms/{comm_id}"] = set(refs)
    return CommView(
        comm_id=comm_id,
        seq=seq,
        target_name=target,
        model_module=mm,
        model_name=mn,
        state=state,
        state_error=state_error,
        outputs=tuple(resolve(r) for r in refs),
        flags=tuple(flags),
        extra=extra,
        writer=latest_writer(e[1] for e in ent.values()),
        seq_type=seq_type,
        capture_msg_id=capture,
        obj_id=exid_hex(obj),
    )


def _json_safe(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v
