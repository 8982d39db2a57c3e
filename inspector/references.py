"""The reference graph of a room's widgets: who points at whom, and what points at nothing.

Edges, all read from one `Snapshot`:

* `state`: an `"IPY_MODEL_<id>"` string anywhere in a comm's state (children, layout, style,
  any nested list or dict). A `jslink`/`link` pair (`source`/`target` = `["IPY_MODEL_<id>",
  "<trait>"]`) is kind `link` and keeps the trait name.
* `view`: an `application/vnd.jupyter.widget-view+json` output naming a `model_id`, in a
  cell's outputs, in an Output widget's captured outputs (v2 doc / v4 topology) or in the
  `outputs` list of its state (v4 comms document).
* `capture`: an Output widget's `capture_msg_id` (v4 topology) or state `msg_id` naming the
  execution it is capturing.

A target is resolved when the room holds it: a comm with topology and state (v2: the doc
entry), or a known execution. On v4 a target with topology but no state yet is still
unresolved (`no_state`): ipywidgets opens dependencies first, but a box filled after it was
displayed, or a view rendered before its `comm_open` landed, points forward for a moment.
That is normal inside the settle window; `ReferenceTracker` fed successive snapshots says
when each forward reference resolved and reports only the ones that stay unresolved past
the window (`Finding`): a closed child still listed by its box, a view of a model that never
arrived. Findings are facts about one view of the room, not disagreements between views.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import msgspec

from .snapshot import CellView, CommView, OutputView, Snapshot

PREFIX = "IPY_MODEL_"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
SETTLE_S = 2.0  # a forward reference resolving within this is the normal open order

# target_status values
OK, NO_STATE, NO_TOPOLOGY, MISSING, UNKNOWN = "ok", "no_state", "no_topology", "missing", "unknown"


class Reference(msgspec.Struct, frozen=True):
    holder: str  # comm id, or "cell:<cell id>"
    path: str  # where in the holder, e.g. "children/1", "outputs/0"
    kind: str  # state | link | view | capture
    target: str  # model id (without IPY_MODEL_) or execution id
    target_status: str = OK  # ok | no_state | no_topology | missing | unknown (cannot be checked)
    trait: str | None = None  # link pairs: the trait named next to the model
    first_seen: float | None = None  # when this reference was first seen unresolved (tracker)
    unresolved_for_s: float | None = None  # how long it has been (or was) unresolved

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.holder, self.path, self.target)

    @property
    def resolved(self) -> bool:
        return self.target_status in (OK, UNKNOWN)


class Finding(msgspec.Struct, frozen=True):
    """A reference unresolved past the settle window: a warning about one view."""

    kind: str  # dangling_state | dangling_link | dangling_view | unknown_execution
    holder: str
    path: str
    target: str
    target_status: str
    first_seen: float
    unresolved_for_s: float
    detail: str
    severity: str = "warning"


class Resolution(msgspec.Struct, frozen=True):
    """A forward reference that resolved: when, and after how long."""

    holder: str
    path: str
    target: str
    first_seen: float
    resolved_at: float
    unresolved_for_s: float
    within_settle: bool


class ReferenceGraph(msgspec.Struct, frozen=True):
    references: tuple[Reference, ...] = ()
    # holder -> indexes into `references`; target -> indexes ("referenced by")
    outgoing: dict[str, tuple[int, ...]] = {}
    incoming: dict[str, tuple[int, ...]] = {}
    findings: tuple[Finding, ...] = ()
    resolved: tuple[Resolution, ...] = ()  # tracker history, newest last
    taken_at: float = 0.0

    def references_from(self, holder: str) -> tuple[Reference, ...]:
        return tuple(self.references[i] for i in self.outgoing.get(holder, ()))

    def referenced_by(self, target: str) -> tuple[Reference, ...]:
        return tuple(self.references[i] for i in self.incoming.get(target, ()))

    @property
    def unresolved(self) -> tuple[Reference, ...]:
        return tuple(r for r in self.references if not r.resolved)

    def to_json(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


# --------------------------------------------------------------------------- extraction


def model_id(value: Any) -> str | None:
    """`"IPY_MODEL_<id>"` -> `<id>`; anything else -> None."""
    if isinstance(value, str) and value.startswith(PREFIX) and len(value) > len(PREFIX):
        return value[len(PREFIX):]
    return None


def _is_link_pair(value: Any) -> bool:
    # [model, trait]; a box with two children is [model, model], not a link
    return (isinstance(value, list | tuple) and len(value) == 2 and model_id(value[0]) is not None
            and isinstance(value[1], str) and model_id(value[1]) is None)


def state_references(state: Any, path: str = "") -> list[tuple[str, str, str, str | None]]:
    """(path, kind, model id, trait) for every model reference in a widget state."""
    out: list[tuple[str, str, str, str | None]] = []
    stack: list[tuple[str, Any]] = [(path, state)]
    while stack:  # iterative: a 600-widget room has ~50,000 state values per snapshot
        where, value = stack.pop()
        if isinstance(value, str):
            if value.startswith(PREFIX) and len(value) > len(PREFIX):
                out.append((where, "state", value[len(PREFIX):], None))
        elif isinstance(value, dict):  # pushed in reverse: popped in the state's own order
            stack.extend(reversed([(f"{where}/{k}" if where else str(k), v) for k, v in value.items()
                                   if isinstance(v, str | dict | list)]))
        elif isinstance(value, list | tuple):
            if _is_link_pair(value):
                out.append((where, "link", value[0][len(PREFIX):], value[1]))
            else:
                stack.extend(reversed([(f"{where}/{i}" if where else str(i), v) for i, v in enumerate(value)
                                       if isinstance(v, str | dict | list)]))
    return out


def _json_or_none(text: Any) -> Any:
    if isinstance(text, str):
        try:
            return json.loads(text)
        except ValueError:
            return None
    return text


def _view_model_id(value: Any) -> str | None:
    """A widget-view value in any of the shapes a manifest or resolved output holds it."""
    if isinstance(value, dict):
        if isinstance(value.get("model_id"), str):
            return value["model_id"]
        for k in ("json", "inline"):  # v2 `content_of` / a v4 content ref
            if k in value:
                return _view_model_id(_json_or_none(value[k]))
        return None
    if isinstance(value, str):
        parsed = _json_or_none(value)
        return _view_model_id(parsed) if isinstance(parsed, dict) else None
    return None


def output_view_target(output: OutputView | dict[str, Any]) -> str | None:
    """The model id a widget-view output displays, or None."""
    if isinstance(output, OutputView):
        for source in (output.resolved or {}, (output.manifest or {}).get("data") or {}):
            if isinstance(source, dict) and WIDGET_VIEW in source:
                mid = _view_model_id(source[WIDGET_VIEW])
                if mid:
                    return mid
        return None
    data = output.get("data") if isinstance(output, dict) else None
    return _view_model_id(data.get(WIDGET_VIEW)) if isinstance(data, dict) else None


def _is_output_widget(c: CommView) -> bool:
    name = c.model_name or (c.state.get("_model_name") if isinstance(c.state, dict) else None)
    return name == "OutputModel"


Found = tuple[tuple[str, str, str, str | None], ...]  # (path, kind, target, trait) of one holder


def _cell_refs(cell: CellView) -> Found:
    return tuple((f"outputs/{i}", "view", mid, None) for i, out in enumerate(cell.outputs)
                 if (mid := output_view_target(out)))


def _comm_refs(c: CommView) -> Found:
    state = c.state if isinstance(c.state, dict) else {}
    found: list[tuple[str, str, str, str | None]] = [
        (f"outputs/{i}", "view", mid, None) for i, out in enumerate(c.outputs) if (mid := output_view_target(out))]
    found += [(f"state/{path}", kind, mid, trait)
              for path, kind, mid, trait in state_references(state)]
    outs = state.get("outputs")
    if isinstance(outs, list):
        found += [(f"state/outputs/{i}", "view", mid, None) for i, o in enumerate(outs)
                  if isinstance(o, dict) and (mid := output_view_target(o))]
    if _is_output_widget(c):
        if c.capture_msg_id:
            found.append(("capture_msg_id", "capture", c.capture_msg_id, None))
        msg_id = state.get("msg_id")
        if isinstance(msg_id, str) and msg_id and msg_id != c.capture_msg_id:
            found.append(("state/msg_id", "capture", msg_id, None))
    return tuple(found)


Raw = tuple[str, str, str, str, str | None]  # (holder, path, kind, target, trait)


class _HolderCache:
    """References per holder, kept while the (immutable) view object is the same one: the
    readers reuse unchanged views (and the whole tuple of cells or comms when none changed),
    so a slider storm re-reads one comm, not the room."""

    def __init__(self) -> None:
        self._cells: dict[str, tuple[CellView, tuple[Raw, ...]]] = {}
        self._comms: dict[str, tuple[CommView, tuple[Raw, ...], str]] = {}
        self._cell_group: tuple[tuple[CellView, ...] | None, list[Raw]] = (None, [])
        self._comm_group: tuple[tuple[CommView, ...] | None, list[Raw], dict[str, str]] = (None, [], {})
        # the last edges with their inputs: a storm that moved no reference reuses the list
        self.last: tuple[list[Raw], dict[str, str], frozenset[str] | None, list[Edge]] | None = None

    def cell(self, cell: CellView) -> tuple[Raw, ...]:
        hit = self._cells.get(cell.id)
        if hit is None or hit[0] is not cell:
            holder = f"cell:{cell.id}"
            hit = self._cells[cell.id] = (cell, tuple((holder, *r) for r in _cell_refs(cell)))
        return hit[1]

    def _comm(self, c: CommView) -> tuple[CommView, tuple[Raw, ...], str]:
        hit = self._comms.get(c.comm_id)
        if hit is None or hit[0] is not c:
            hit = self._comms[c.comm_id] = (c, tuple((c.comm_id, *r) for r in _comm_refs(c)), _comm_status(c))
        return hit

    def cells_of(self, cells: tuple[CellView, ...]) -> list[Raw]:
        if self._cell_group[0] is not cells:
            out: list[Raw] = []
            for cell in cells:
                out.extend(self.cell(cell))
            self._cell_group = (cells, out)
        return self._cell_group[1]

    def comms_of(self, comms: tuple[CommView, ...]) -> tuple[list[Raw], dict[str, str]]:
        """The comms' references and each comm's status."""
        if self._comm_group[0] is not comms:
            out: list[Raw] = []
            status: dict[str, str] = {}
            for c in comms:
                _c, refs, st = self._comm(c)
                out.extend(refs)
                status[c.comm_id] = st
            self._comm_group = (comms, out, status)
        return self._comm_group[1], self._comm_group[2]

    def prune(self, snapshot: Snapshot) -> None:
        if len(self._cells) > len(snapshot.cells) + 64:
            keep = {c.id for c in snapshot.cells}
            self._cells = {k: v for k, v in self._cells.items() if k in keep}
        if len(self._comms) > len(snapshot.comms) + 64:
            keep = {c.comm_id for c in snapshot.comms}
            self._comms = {k: v for k, v in self._comms.items() if k in keep}


def extract(snapshot: Snapshot) -> Iterator[Raw]:
    """(holder, path, kind, target, trait) for every reference in the snapshot (`edges` with a
    cache takes them from the cache instead)."""
    for cell in snapshot.cells:
        for path, kind, target, trait in _cell_refs(cell):
            yield f"cell:{cell.id}", path, kind, target, trait
    for c in snapshot.comms:
        for path, kind, target, trait in _comm_refs(c):
            yield c.comm_id, path, kind, target, trait


# --------------------------------------------------------------------------- the graph


def _comm_status(c: CommView) -> str:
    """v4 joins topology and state; v2 doc entries hold both."""
    if any(f.startswith("no topology") for f in c.flags):
        return NO_TOPOLOGY
    if any(f.startswith("no state") for f in c.flags) or "missing state" in c.flags:
        return NO_STATE
    return OK


def known_executions(snapshot: Snapshot) -> frozenset[str] | None:
    """Execution ids the snapshot names (v4 cells); None when it names none (v2: unknowable)."""
    ids = {c.execution_id for c in snapshot.cells if c.execution_id}
    if snapshot.kernel.executing:
        ids.add(snapshot.kernel.executing)
    ids.update(snapshot.kernel.queued)
    return frozenset(ids) if ids else None


Edge = tuple[str, str, str, str, str | None, str]  # holder, path, kind, target, trait, target status


def edges(snapshot: Snapshot, executions: Collection[str] | None = None,
          cache: _HolderCache | None = None) -> list[Edge]:
    """Every reference of the snapshot with its target's status. With a cache, the same list
    as last time when neither the references, the comms' statuses nor the executions moved."""
    execs = frozenset(executions) if executions is not None else known_executions(snapshot)
    if cache is None:
        comms = {c.comm_id: _comm_status(c) for c in snapshot.comms}
        raw = list(extract(snapshot))
    else:
        comm_raw, comms = cache.comms_of(snapshot.comms)
        raw = cache.cells_of(snapshot.cells) + comm_raw
        last = cache.last
        if last is not None and last[1] == comms and last[2] == execs and last[0] == raw:
            return last[3]
    out: list[Edge] = []
    for holder, path, kind, target, trait in raw:
        if kind == "capture":
            status = UNKNOWN if execs is None else (OK if target in execs else MISSING)
        else:
            status = comms.get(target, MISSING)
        out.append((holder, path, kind, target, trait, status))
    if cache is not None:
        cache.last = (raw, comms, execs, out)
    return out


def build_graph(snapshot: Snapshot, *, executions: Collection[str] | None = None,
                first_seen: Mapping[tuple[str, str, str], float] | None = None,
                now: float | None = None, settle_s: float = SETTLE_S,
                found: list[Edge] | None = None) -> ReferenceGraph:
    """The graph of one snapshot. `executions`: every execution id the room knows (v4: the
    RuntimeStateDoc's `executions` keys); without it, the cells' execution ids. `first_seen`:
    when each unresolved reference (its `key`) was first seen; with it, references unresolved
    longer than `settle_s` become findings (the tracker passes it). `found`: `edges()` already
    computed for this snapshot."""
    now = snapshot.taken_at if now is None else now
    refs: list[Reference] = []
    findings: list[Finding] = []
    for holder, path, kind, target, trait, status in (found if found is not None else edges(snapshot, executions)):
        seen = first_seen.get((holder, path, target)) if first_seen is not None and status not in (OK, UNKNOWN) \
            else None
        age = max(0.0, now - seen) if seen is not None else None
        ref = Reference(holder, path, kind, target, status, trait, seen, age)
        refs.append(ref)
        if age is not None and seen is not None and age > settle_s:
            findings.append(Finding(kind=_finding_kind(kind), holder=holder, path=path, target=target,
                                    target_status=status, first_seen=seen, unresolved_for_s=age,
                                    detail=_detail(ref, age)))
    outgoing: dict[str, list[int]] = {}
    incoming: dict[str, list[int]] = {}
    for i, r in enumerate(refs):
        outgoing.setdefault(r.holder, []).append(i)
        incoming.setdefault(r.target, []).append(i)
    return ReferenceGraph(references=tuple(refs), outgoing={k: tuple(v) for k, v in outgoing.items()},
                          incoming={k: tuple(v) for k, v in incoming.items()}, findings=tuple(findings),
                          taken_at=now)


def _finding_kind(kind: str) -> str:
    return {"capture": "unknown_execution", "view": "dangling_view", "link": "dangling_link"}.get(kind, "dangling_state")


_WHY = {
    MISSING: "is not in the room",
    NO_STATE: "has topology but no state in the comms document",
    NO_TOPOLOGY: "has state but no topology in the runtime state",
}


def _detail(ref: Reference, age: float) -> str:
    what = "execution" if ref.kind == "capture" else "model"
    trait = f" (trait {ref.trait!r})" if ref.trait else ""
    return (f"{ref.holder} {ref.path}{trait} names {what} {ref.target}, which "
            f"{_WHY.get(ref.target_status, 'is unknown')}, for {age:.1f} s")


# --------------------------------------------------------------------------- incremental tracking


class ReferenceTracker:
    """Fed successive snapshots (with their times), remembers when each unresolved reference
    was first seen, records when forward references resolved, and keeps findings for the ones
    still unresolved past the settle window."""

    def __init__(self, settle_s: float = SETTLE_S, history: int = 200) -> None:
        self.settle_s = settle_s
        self.history = history
        self.first_seen: dict[tuple[str, str, str], float] = {}
        self.resolutions: list[Resolution] = []
        self._cache = _HolderCache()
        self._found: list[Edge] | None = None  # the edges the last graph was built from
        self._graph: ReferenceGraph | None = None

    def update(self, snapshot: Snapshot, now: float | None = None,
               executions: Collection[str] | None = None) -> ReferenceGraph:
        now = snapshot.taken_at if now is None else now
        found = edges(snapshot, executions, self._cache)
        self._cache.prune(snapshot)
        if found is self._found and not self.first_seen and self._graph is not None:
            # nothing moved and nothing is pending (no age to advance): the graph of last time
            self._graph = msgspec.structs.replace(self._graph, taken_at=now)
            return self._graph
        present: set[tuple[str, str, str]] = set()
        for holder, path, _kind, target, _trait, status in found:
            key = (holder, path, target)
            present.add(key)
            if status in (OK, UNKNOWN):
                seen = self.first_seen.pop(key, None)
                if seen is not None:
                    age = max(0.0, now - seen)
                    self.resolutions.append(Resolution(holder, path, target, seen, now, age, age <= self.settle_s))
            else:
                self.first_seen.setdefault(key, now)
        # a reference that went away with its holder is neither resolved nor pending
        for key in set(self.first_seen) - present:
            del self.first_seen[key]
        del self.resolutions[:-self.history]
        graph = build_graph(snapshot, first_seen=self.first_seen, now=now, settle_s=self.settle_s, found=found)
        self._found = found
        self._graph = msgspec.structs.replace(graph, resolved=tuple(self.resolutions))
        return self._graph
