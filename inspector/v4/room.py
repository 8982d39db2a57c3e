"""The five Automerge documents of a v4 room and the snapshot built from them.

runtimed 2.9.0 (runtimed-v4 §10) splits a room across documents, each synced on its own
frame type with its own sync state: the notebook doc (cells, no outputs, no comms), the
RuntimeStateDoc (kernel, queue, executions with inline output manifests, comm topology), the
CommsDoc (widget state as native values), the PoolDoc and the CommentsDoc. The readers here
re-read only the entries a sync touched (the dirty paths of `DocReplica.receive`) and join
them into the same `Snapshot` the v2 profile produces.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from automerge import core as am

from ..document import (
    ALL,
    EXACT_KINDS,
    Dirty,
    DocReplica,
    NotebookReader,
    PutValue,
    exid_hex,
    map_entries,
    obj_key,
    parse_exid,
    read_seq,
    to_json,
)
from ..document import actor_label as _actor_label
from ..protocol.framing import FrameType
from ..snapshot import (
    CellView,
    CommView,
    DaemonView,
    Divergence,
    DocumentSummary,
    FeedView,
    KernelView,
    OutputView,
    Snapshot,
)
from .manifests import BlobGetter, output_view

NOTEBOOK, RUNTIME_STATE, POOL_STATE, COMMS, COMMENTS = "notebook", "runtime_state", "pool_state", "comms", "comments"
DOC_FRAMES: dict[int, str] = {FrameType.AUTOMERGE_SYNC: NOTEBOOK, FrameType.RUNTIME_STATE_SYNC: RUNTIME_STATE,
                              FrameType.POOL_STATE_SYNC: POOL_STATE, FrameType.COMMS_SYNC: COMMS,
                              FrameType.COMMENTS_SYNC: COMMENTS}
FRAME_OF: dict[str, int] = {v: k for k, v in DOC_FRAMES.items()}
TOPOLOGY_KEYS = {"target_name", "model_module", "model_name", "seq", "outputs", "capture_msg_id", "state"}
# RuntimeStateDoc keys shown elsewhere in the tree (cells' outputs, comms): kept out of its raw tree
RUNTIME_TREE_SKIP = {"executions", "comms"}


_LABELS: dict[bytes, str] = {}


def _op_id(exid: bytes) -> tuple[int, bytes] | None:
    """(counter, actor) of an op id. Common layout read inline (one byte of actor length,
    actor, counter): a 600-comm room has ~20,000 of them at join, so no generic LEB walk and
    no label decode per op (labels are cached by actor)."""
    size = len(exid)
    n = exid[1] if size > 2 else 0x80
    if n < 0x80 and size > 2 + n:
        actor = exid[2 : 2 + n]
        rest = size - 2 - n  # a one-byte actor index, then a counter of one or two bytes
        if rest == 2 and exid[-2] < 0x80 and exid[-1] < 0x80:
            return exid[-1], actor
        if rest == 3 and exid[-3] < 0x80 and exid[-2] >= 0x80 and exid[-1] < 0x80:
            return (exid[-2] & 0x7F) | (exid[-1] << 7), actor
        counter = ctr = shift = 0
        for b in exid[2 + n :]:  # the last LEB128 number is the counter
            ctr |= (b & 0x7F) << shift
            if b & 0x80:
                shift += 7
            else:
                counter, ctr, shift = ctr, 0, 0
    else:
        p = parse_exid(exid)
        if p is None:
            return None
        actor, counter = p
    return counter, actor


def _label(actor: bytes) -> str:
    label = _LABELS.get(actor)
    if label is None:
        label = _LABELS[actor] = _actor_label(actor)
    return label


def obj_hex(exid: bytes) -> str:
    """`exid_hex` without the generic LEB walk (`counter@actorhex`)."""
    n = exid[1] if len(exid) > 2 else 0x80
    if n < 0x80 and len(exid) > 2 + n and exid[-1] < 0x80 and all(b < 0x80 for b in exid[2 + n : -1]):
        return f"{exid[-1]}@{exid[2 : 2 + n].hex()}"
    return exid_hex(exid)


def writer_of(exid: bytes) -> str | None:
    p = _op_id(exid)
    return _label(p[1]) if p else None


def latest_writer(exids: Iterable[bytes]) -> str | None:
    """`document.latest_writer` (highest Lamport counter, then actor), with the inline id read."""
    best: tuple[int, bytes] | None = None
    for e in exids:
        p = _op_id(e)
        if p is not None and (best is None or p > best):
            best = p
    return _label(best[1]) if best else None


def _scalar(entry: tuple[Any, bytes] | None) -> Any:
    if entry is None or isinstance(entry[0], am.ObjType):
        return None
    return entry[0][1]


def _value(doc: am.Document, entry: tuple[Any, bytes] | None) -> Any:
    if entry is None:
        return None
    v, exid = entry
    if isinstance(v, am.ObjType):
        return to_json(doc, exid)
    val = v[1]
    return val.hex() if isinstance(val, bytes) else val


# --------------------------------------------------------------------------- RuntimeStateDoc


@dataclass(frozen=True)
class Execution:
    execution_id: str
    cell_id: str | None
    status: str | None
    execution_count: int | None
    success: bool | None
    seq: int | None
    outputs: tuple[OutputView, ...]
    submitted_by: str | None
    writer: str | None


@dataclass(frozen=True)
class Topology:
    comm_id: str
    seq: int | None
    seq_type: str | None
    target_name: str | None
    model_module: str | None
    model_name: str | None
    outputs: tuple[OutputView, ...]
    output_ids: tuple[str, ...]
    capture_msg_id: str | None
    writer: str | None
    obj_id: str
    flags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RuntimeStateReader:
    blobs: BlobGetter | None = None
    executions: dict[str, Execution] = field(default_factory=dict)
    comms: dict[str, Topology] = field(default_factory=dict)
    kernel: dict[str, Any] = field(default_factory=dict)
    queue: dict[str, Any] = field(default_factory=dict)
    tree: dict[str, Any] = field(default_factory=dict)  # every other root key, as JSON
    schema_version: int | None = None

    def refresh(self, doc: am.Document, dirty: set[tuple[str, ...]]) -> set[str]:
        """Re-read what `dirty` names; return changed tree paths (`executions/<id>`, `comms/<id>`, ...)."""
        if not dirty:
            return set()
        root = map_entries(doc, am.ROOT)
        if ALL in dirty:
            changed = {f"executions/{k}" for k in self.executions} | {f"comms/{k}" for k in self.comms}
            self.executions.clear()
            self.comms.clear()
            self.tree.clear()
            for key in set(root) | {"executions", "comms", "kernel", "queue"}:
                changed |= self._read_root(doc, root, key)
            return changed
        changed: set[str] = set()
        done: set[str] = set()
        for path in dirty:
            top = path[0]
            if top in ("executions", "comms") and len(path) == 2 and top not in done:
                changed |= self._read_one(doc, root, top, path[1])
            elif top not in done:
                done.add(top)
                changed |= self._read_root(doc, root, top)
        return changed

    def _read_root(self, doc: am.Document, root: dict[str, tuple[Any, bytes]], key: str) -> set[str]:
        entry = root.get(key)
        if key in ("executions", "comms"):
            table = self.executions if key == "executions" else self.comms
            changed = {f"{key}/{k}" for k in table}
            table.clear()
            if entry is not None and entry[0] == am.ObjType.Map:
                for sub in doc.keys(entry[1]):
                    changed |= self._read_one(doc, root, key, sub)
            return changed | {key}
        val = _value(doc, entry)
        if key == "kernel":
            self.kernel = val if isinstance(val, dict) else {}
        elif key == "queue":
            self.queue = val if isinstance(val, dict) else {}
        elif key == "schema_version":
            self.schema_version = val if isinstance(val, int) else None
        if entry is None:
            self.tree.pop(key, None)
        else:
            self.tree[key] = val
        return {f"runtime/{key}"}

    def _read_one(self, doc: am.Document, root: dict[str, tuple[Any, bytes]], top: str, key: str) -> set[str]:
        table_entry = root.get(top)
        got = doc.get(table_entry[1], key) if table_entry is not None and table_entry[0] == am.ObjType.Map else None
        table: dict[str, Any] = self.executions if top == "executions" else self.comms
        path = f"{top}/{key}"
        if got is None or got[0] != am.ObjType.Map:
            table.pop(key, None)
            return {path, top}
        if top == "executions":
            self.executions[key] = self._execution(doc, got[1], key)
        else:
            self.comms[key] = self._topology(doc, got[1], key)
        return {path}

    def _execution(self, doc: am.Document, obj: bytes, eid: str) -> Execution:
        ent = map_entries(doc, obj)
        outputs: list[tuple[int, str, OutputView]] = []
        oe = ent.get("outputs")
        if oe is not None and oe[0] == am.ObjType.Map:
            for oid, (v, oexid) in zip(doc.keys(oe[1]), doc.values(oe[1]), strict=False):
                if v != am.ObjType.Map:
                    outputs.append((1 << 62, oid, OutputView(ref=oid, error="output entry is not a Map")))
                    continue
                oent = map_entries(doc, oexid)
                seq = _scalar(oent.get("seq"))
                manifest = _value(doc, oent.get("manifest"))
                outputs.append((seq if isinstance(seq, int) else 1 << 62, oid, output_view(manifest, self.blobs, oid)))
        outputs.sort(key=lambda t: (t[0], t[1]))
        ec = _scalar(ent.get("execution_count"))
        succ = _scalar(ent.get("success"))
        seq = _scalar(ent.get("seq"))
        return Execution(
            execution_id=eid,
            cell_id=_scalar(ent.get("cell_id")),
            status=_scalar(ent.get("status")),
            execution_count=ec if isinstance(ec, int) and not isinstance(ec, bool) else None,
            success=succ if isinstance(succ, bool) else None,
            seq=seq if isinstance(seq, int) else None,
            outputs=tuple(o for _, _, o in outputs),
            submitted_by=_scalar(ent.get("submitted_by_actor_label")),
            writer=latest_writer(e[1] for e in ent.values()),
        )

    def _topology(self, doc: am.Document, obj: bytes, cid: str) -> Topology:
        ent = map_entries(doc, obj)
        flags: list[str] = []
        seq, seq_type = read_seq(ent, flags, expect_uint=False)  # v4 writes Int by design
        outputs: list[OutputView] = []
        oe = ent.get("outputs")
        if oe is not None and oe[0] == am.ObjType.List:
            for v, oexid in doc.values(oe[1]):
                manifest = to_json(doc, oexid) if isinstance(v, am.ObjType) else v[1]
                outputs.append(output_view(manifest, self.blobs))
        elif oe is not None:
            flags.append("outputs is not a List")
        st = ent.get("state")
        if st is not None and st[0] == am.ObjType.Map and doc.length(st[1]):
            flags.append("topology state is not empty (state lives in the comms document)")

        def opt(name: str) -> str | None:
            v = _scalar(ent.get(name))
            if name not in ent:
                flags.append(f"missing {name}")
            return v if isinstance(v, str) else None

        extra = {k: _value(doc, e) for k, e in ent.items() if k not in TOPOLOGY_KEYS}
        return Topology(
            comm_id=cid, seq=seq, seq_type=seq_type, target_name=opt("target_name"),
            model_module=opt("model_module"), model_name=opt("model_name"), outputs=tuple(outputs),
            output_ids=tuple(o.ref for o in outputs), capture_msg_id=_scalar(ent.get("capture_msg_id")),
            writer=latest_writer(e[1] for e in ent.values()), obj_id=obj_hex(obj), flags=tuple(flags), extra=extra,
        )


# --------------------------------------------------------------------------- CommsDoc


@dataclass(frozen=True)
class CommState:
    comm_id: str
    state: dict[str, Any]
    key_writers: dict[str, str]
    writer: str | None
    obj_id: str


@dataclass
class CommsDocReader:
    comms: dict[str, CommState] = field(default_factory=dict)
    schema_version: int | None = None
    flags: list[str] = field(default_factory=list)
    _objs: dict[str, bytes] = field(default_factory=dict)  # comm id -> its state Map's exid

    def refresh(self, doc: am.Document, dirty: set[tuple[str, ...]]) -> set[str]:
        if not dirty:
            return set()
        root = map_entries(doc, am.ROOT)
        comms = root.get("comms")
        if ALL in dirty or any(len(p) < 2 and p[0] == "comms" for p in dirty):
            changed = {f"comms/{k}" for k in self.comms} | {"comms"}
            self.comms.clear()
            self._objs.clear()
            sv = _scalar(root.get("schema_version"))
            self.schema_version = sv if isinstance(sv, int) else None
            if comms is not None and comms[0] == am.ObjType.Map:
                for cid, (v, exid) in zip(doc.keys(comms[1]), doc.values(comms[1]), strict=False):
                    if v == am.ObjType.Map:
                        self.comms[cid] = self._state(doc, exid, cid)
                        self._objs[cid] = exid
                        changed.add(f"comms/{cid}")
            return changed
        fast = dirty if isinstance(dirty, Dirty) and dirty.current(doc) else None
        by_comm: dict[str, list[tuple[str, ...]]] = {}
        for path in dirty:
            if path[0] == "comms" and len(path) >= 2:
                by_comm.setdefault(path[1], []).append(path)
        changed = set()
        for cid, paths in by_comm.items():
            if fast is not None and self._put_only(fast, cid, paths):
                changed.add(f"comms/{cid}")
                continue
            got = doc.get(comms[1], cid) if comms is not None and comms[0] == am.ObjType.Map else None
            if got is None or got[0] != am.ObjType.Map:
                self.comms.pop(cid, None)
                self._objs.pop(cid, None)
                changed |= {f"comms/{cid}", "comms"}
            else:
                self.comms[cid] = self._state(doc, got[1], cid)
                self._objs[cid] = got[1]
                changed.add(f"comms/{cid}")
        return changed

    def _put_only(self, fast: Dirty, cid: str, paths: list[tuple[str, ...]]) -> bool:
        """Update comm `cid` from the changes alone when all they did under it is put scalars
        on keys its state Map already has (a slider storm); False: read it from the document.

        `doc.values` of the state Map scans every op ever made on its keys; the changes' own
        last puts are the values it would find (`Dirty`)."""
        old, obj = self.comms.get(cid), self._objs.get(cid)
        if old is None or obj is None:
            return False
        own = obj_key(obj)
        if any(fast.sources(p) != {own} for p in paths):
            return False  # ops on the comms map itself or on objects nested in the state
        state, writers = dict(old.state), dict(old.key_writers)
        latest: PutValue | None = None
        for key in fast.keys_of(obj):
            put = fast.put(obj, key)
            if put is None or put.kind not in EXACT_KINDS or key not in state:
                return False  # a delete, an object, a new key (its place in the order), ...
            state[key] = put.value
            writers[key] = _label(put.actor)
            if latest is None or put.counter > latest.counter:
                latest = put
        if latest is None:
            return False
        # every put here outnumbers all earlier ops, so its writer is the comm's latest one
        self.comms[cid] = CommState(cid, state, writers, _label(latest.actor), old.obj_id)
        return True

    @staticmethod
    def _state(doc: am.Document, obj: bytes, cid: str) -> CommState:
        state: dict[str, Any] = {}
        writers: dict[str, str] = {}
        latest: tuple[int, bytes] | None = None
        for k, (v, exid) in zip(doc.keys(obj), doc.values(obj), strict=False):
            if isinstance(v, am.ObjType):
                state[k] = to_json(doc, exid)
            else:
                val = v[1]
                state[k] = val.hex() if isinstance(val, bytes) else val
            op = _op_id(exid)  # one parse per key gives both its writer and the latest writer
            if op is not None:
                writers[k] = _label(op[1])
                if latest is None or op > latest:
                    latest = op
        return CommState(cid, state, writers, _label(latest[1]) if latest else None, obj_hex(obj))


# --------------------------------------------------------------------------- the room


def kernel_view(kernel: dict[str, Any], queue: dict[str, Any]) -> KernelView:
    lifecycle = kernel.get("lifecycle") if isinstance(kernel.get("lifecycle"), str) else None
    activity = kernel.get("activity") if isinstance(kernel.get("activity"), str) else None
    status: str | None
    if lifecycle == "Running":
        status = (activity or "idle").lower()
    elif lifecycle in ("Launching", "Connecting"):
        status = "starting"
    elif lifecycle is not None:
        status = lifecycle.lower()
    else:
        status = None
    queued = queue.get("queued_execution_ids")
    executing = queue.get("executing_execution_id")
    return KernelView(status=status, source="runtime_state", lifecycle=lifecycle, activity=activity,
                      executing=executing if isinstance(executing, str) else None,
                      queued=tuple(q for q in queued if isinstance(q, str)) if isinstance(queued, list) else (),
                      error_reason=kernel.get("error_reason") or None)


NO_FEED = FeedView(received_comm_sync=False, comms=(), baseline="none")


class V4Room:
    """Five replicas (one sync state each) and their readers; never makes a local change."""

    def __init__(self, notebook_id: str = "", blobs: BlobGetter | None = None,
                 replicas: dict[int, DocReplica] | None = None) -> None:
        self.notebook_id = notebook_id
        # A session may own the replicas (it answers sync); the room then only reads them.
        self.replicas: dict[int, DocReplica] = replicas if replicas is not None else {}
        for ft, name in DOC_FRAMES.items():
            self.replicas.setdefault(ft, DocReplica(name, ft))
        self.notebook = NotebookReader()
        self.runtime = RuntimeStateReader(blobs=blobs)
        self.comms = CommsDocReader()
        self._trees: dict[int, Any] = {}
        self._tree_dirty: set[int] = set(DOC_FRAMES)
        self._cell_cache: dict[str, tuple[CellView, Execution | None, CellView]] = {}
        self._comm_cache: dict[str, tuple[Topology | None, CommState | None, CommView]] = {}
        self.changed_at: dict[int, float] = {}
        # Joined views, rebuilt only when their inputs changed: a slider storm touches one
        # comm's state and must not re-walk 1,000 cells or re-sort 600 comms per frame.
        self._cells_view: tuple[CellView, ...] | None = None
        self._comms_view: tuple[CommView, ...] | None = None
        self._comm_order: list[str] | None = None
        self._summaries: dict[int, DocumentSummary] = {}

    @property
    def blobs(self) -> BlobGetter | None:
        return self.runtime.blobs

    @blobs.setter
    def blobs(self, getter: BlobGetter | None) -> None:
        """A blob source arrived (or went): re-read the documents that hold manifests."""
        self.runtime.blobs = getter
        self.runtime.refresh(self.replicas[FrameType.RUNTIME_STATE_SYNC].doc, {ALL})
        self._cell_cache.clear()
        self._comm_cache.clear()
        self._cells_view = self._comms_view = self._comm_order = None

    def replica(self, name: str) -> DocReplica:
        return self.replicas[FRAME_OF[name]]

    def receive(self, frame_type: int, body: bytes) -> tuple[bytes | None, set[str]]:
        """Apply one sync message of a document frame; return (reply body or None, changed tree paths)."""
        reply, dirty = self.replicas[frame_type].receive(body)
        return reply, self.apply(frame_type, dirty)

    def apply(self, frame_type: int, dirty: set[tuple[str, ...]]) -> set[str]:
        """Re-read what a sync of one document changed; return the changed tree paths.

        Paths: `cells/<id>` (notebook), `executions/<id>` and `comms/<id>` (runtime state),
        `state/comms/<id>` (comms document), `runtime/<key>`, or the document name.
        """
        if not dirty:
            return set()
        doc = self.replicas[frame_type].doc
        self.changed_at[frame_type] = time.monotonic()
        self._tree_dirty.add(frame_type)
        self._summaries.pop(frame_type, None)
        if frame_type == FrameType.AUTOMERGE_SYNC:
            changed = self.notebook.refresh(doc, dirty)
            if any(p.startswith("cells") for p in changed):
                self._cells_view = None
            return changed
        if frame_type == FrameType.RUNTIME_STATE_SYNC:
            changed = self.runtime.refresh(doc, dirty)
            if any(p.startswith("executions") for p in changed):
                self._cells_view = None
            if any(p.startswith("comms") for p in changed):
                self._comms_view = self._comm_order = None  # topology: membership or seq may move
            return changed
        if frame_type == FrameType.COMMS_SYNC:
            changed = self.comms.refresh(doc, dirty)
            if changed:
                self._comms_view = None
                if "comms" in changed or any(p[6:] not in self._comm_cache for p in changed if p.startswith("comms/")):
                    self._comm_order = None  # a comm came or went
            return {f"state/{p}" for p in changed}
        return {DOC_FRAMES.get(frame_type, f"0x{frame_type:02x}")}

    # -- views ---------------------------------------------------------------------------------

    def cells(self) -> tuple[CellView, ...]:
        if self._cells_view is None:
            self._cells_view = self._build_cells()
        return self._cells_view

    def _build_cells(self) -> tuple[CellView, ...]:
        out = []
        seen = set()
        for cell in self.notebook.ordered_cells():
            seen.add(cell.key)
            ex = self.runtime.executions.get(cell.execution_id) if cell.execution_id else None
            hit = self._cell_cache.get(cell.key)
            if hit is not None and hit[0] is cell and hit[1] is ex:
                out.append(hit[2])
                continue
            flags = list(cell.flags)
            if cell.execution_id and ex is None:
                flags.append(f"execution {cell.execution_id} not in the runtime state")
            view = msgspec.structs.replace(
                cell,
                outputs=ex.outputs if ex is not None else (),
                execution_count=ex.execution_count if ex is not None and ex.execution_count is not None
                else cell.execution_count,
                flags=tuple(flags),
            )
            self._cell_cache[cell.key] = (cell, ex, view)
            out.append(view)
        for gone in set(self._cell_cache) - seen:
            del self._cell_cache[gone]
        return tuple(out)

    def comm_views(self) -> tuple[CommView, ...]:
        """Topology in seq order joined with state; comms known to one document only come last."""
        if self._comms_view is None:
            self._comms_view = self._build_comm_views()
        return self._comms_view

    def _build_comm_views(self) -> tuple[CommView, ...]:
        topo, states = self.runtime.comms, self.comms.comms
        if self._comm_order is None:
            ids = sorted(topo, key=lambda c: (topo[c].seq is None, topo[c].seq or 0, c))
            ids += sorted(c for c in states if c not in topo)
            self._comm_order = ids
        ids = self._comm_order
        out = []
        for cid in ids:
            t, s = topo.get(cid), states.get(cid)
            hit = self._comm_cache.get(cid)
            if hit is not None and hit[0] is t and hit[1] is s:
                out.append(hit[2])
                continue
            view = self._join(cid, t, s)
            self._comm_cache[cid] = (t, s, view)
            out.append(view)
        if len(self._comm_cache) != len(ids):
            for gone in set(self._comm_cache) - set(ids):
                del self._comm_cache[gone]
        return tuple(out)

    @staticmethod
    def _join(cid: str, t: Topology | None, s: CommState | None) -> CommView:
        flags = list(t.flags) if t else []
        if t is None:
            flags.append("no topology in the runtime state (orphan state)")
        if s is None:
            flags.append("no state in the comms document (orphan topology)")
        extra = dict(t.extra) if t else {}
        state = s.state if s else None
        if t is not None and s is not None and isinstance(state, dict):
            mn = state.get("_model_name")
            if isinstance(mn, str) and t.model_name and mn != t.model_name:
                flags.append(f"state _model_name {mn!r} differs from topology {t.model_name!r}")
        return CommView(
            comm_id=cid,
            seq=t.seq if t else None,
            target_name=t.target_name if t else None,
            model_module=t.model_module if t else (state or {}).get("_model_module"),
            model_name=t.model_name if t else (state or {}).get("_model_name"),
            state=state,
            state_error=None if s is not None else "no state in the comms document",
            outputs=t.outputs if t else (),
            flags=tuple(flags),
            extra=extra,
            writer=(s.writer if s else None) or (t.writer if t else None),  # state writes are the news
            key_writers=dict(s.key_writers) if s else {},
            seq_type=t.seq_type if t else None,
            capture_msg_id=t.capture_msg_id if t else None,
            obj_id=t.obj_id if t else (s.obj_id if s else ""),
        )

    def kernel(self) -> KernelView:
        return kernel_view(self.runtime.kernel, self.runtime.queue)

    def tree(self, frame_type: int) -> Any:
        if frame_type in self._tree_dirty or frame_type not in self._trees:
            if frame_type == FrameType.RUNTIME_STATE_SYNC:
                tree = {k: v for k, v in self.runtime.tree.items() if k not in RUNTIME_TREE_SKIP}
            elif frame_type in (FrameType.AUTOMERGE_SYNC, FrameType.COMMS_SYNC):
                tree = None  # shown as cells / comms
            else:
                tree = to_json(self.replicas[frame_type].doc)
            self._trees[frame_type] = tree
            self._tree_dirty.discard(frame_type)
        return self._trees[frame_type]

    def documents(self) -> tuple[DocumentSummary, ...]:
        out = []
        for ft, rep in self.replicas.items():
            summary = self._summaries.get(ft)
            if summary is None:
                changes, actors = rep.change_actors()
                summary = self._summaries[ft] = DocumentSummary(
                    name=rep.name, frame_type=ft, heads=rep.heads, changes=changes, actors=actors, tree=self.tree(ft))
            out.append(summary)
        return tuple(out)

    def is_populated(self) -> bool:
        """Every document the daemon serves has arrived (the PoolDoc and CommentsDoc included)."""
        return all(rep.doc.get_heads() for rep in self.replicas.values())

    def snapshot(self, daemon: DaemonView, divergence: Iterable[Divergence] = (), sources: tuple[str, ...] = (),
                 warnings: Iterable[str] = (), connection: str = "live") -> Snapshot:
        nb = self.notebook
        return Snapshot(
            daemon=daemon,
            notebook_id=nb.notebook_id or self.notebook_id,
            schema_version=nb.schema_version,
            heads=self.replicas[FrameType.AUTOMERGE_SYNC].heads,
            cells=self.cells(),
            metadata=nb.metadata,
            comms=self.comm_views(),
            feed=NO_FEED,
            kernel=self.kernel(),
            divergence=tuple(divergence),
            sources=sources,
            documents=self.documents(),
            warnings=tuple(nb.warnings) + tuple(warnings),
            connection=connection,
            taken_at=time.time(),
            extra_root=dict(nb.extra_root),
        )


def load_room(saved: dict[str, bytes], notebook_id: str = "", blobs: BlobGetter | None = None) -> V4Room:
    """A room from saved documents (`{"notebook": bytes, ...}`), e.g. `.automerge` files on disk."""
    room = V4Room(notebook_id, blobs)
    for name, data in saved.items():
        ft = FRAME_OF[name]
        rep = room.replicas[ft]
        rep.doc = am.Document.load(data)
        room.apply(ft, {ALL})
    return room
