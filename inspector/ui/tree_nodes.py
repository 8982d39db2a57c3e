"""Turn a `Snapshot` into a tree of display nodes, reusing unchanged subtrees.

Pure Python (no Qt) so it is cheap to test and to profile. Every node has a stable path
(`cells/<id>`, `comms/<id>/state/<key>`, ...) that the item model diffs against the
previous tree; a node whose source object is unchanged is returned as-is so a sync that
touches one comm costs one comm, not the whole notebook.
"""

from __future__ import annotations

import collections
import json
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..snapshot import CellView, CommView, Divergence, FeedCommView, KeyDiff, OutputView, Snapshot

if TYPE_CHECKING:
    from ..liveness import CommLiveness
    from ..widget_buffers import BufferRef

NCOLS = 6
HEADERS = ("Name", "Value", "Info", "Id", "Writer", "Liveness")
WRITER_COL = 4
LIVENESS_COL = 5  # shown after Info (the window moves it there)
MAX_CHILDREN = 500  # long JSON lists are cut; the detail pane shows the whole value

_SEVERITY = {"diverged": 3, "pending": 2, "info": 1}


class Node:
    __slots__ = ("key", "kind", "cols", "status", "tooltip", "sig", "ref", "value", "obj_id", "children",
                 "parent", "row", "path", "changed_at", "search", "badge", "doc_path", "sub_status", "writer",
                 "liveness")

    def __init__(self, key: str, kind: str, cols: tuple[str, str, str, str], *, sig: Any = None,
                 ref: Any = None, value: Any = None, status: str | None = None, tooltip: str = "",
                 obj_id: str = "", badge: tuple[str, str] | None = None, doc_path: str = "",
                 children: list[Node] | None = None, writer: str = "") -> None:
        self.key = key
        self.kind = kind
        self.cols = cols
        self.status = status
        self.tooltip = tooltip
        self.sig = sig
        self.ref = ref
        self.value = value
        self.obj_id = obj_id
        self.badge = badge
        self.doc_path = doc_path
        self.children: list[Node] = children or []
        self.parent: Node | None = None
        self.row = 0
        self.path = key
        self.changed_at = 0.0
        self.search = " ".join(cols).lower()
        self.sub_status: str | None = None  # worst status among descendants (for the filter)
        self.writer = writer  # the Automerge actor that last wrote this entry ("" when unknown)
        self.liveness = ""  # comms: live-bound | replay-only | orphaned | not-yet-loaded ("" unknown)

    def same_display(self, other: Node) -> bool:
        return (self.cols == other.cols and self.status == other.status and self.tooltip == other.tooltip
                and self.badge == other.badge and self.writer == other.writer and self.liveness == other.liveness)

    def __repr__(self) -> str:
        return f"Node({self.path!r}, {self.cols!r})"


Prev = Callable[[str], "Node | None"]


def _no_prev(path: str) -> Node | None:
    return None


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def preview(value: Any, limit: int = 120) -> str:
    if isinstance(value, dict):
        return f"{{{plural(len(value), 'key')}}}"
    if isinstance(value, (list, tuple)):
        return f"[{plural(len(value), 'item')}]"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    text = text.replace("\n", "⏎")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(text: str, limit: int = 100) -> str:
    for line in text.splitlines():
        if line.strip():
            line = line.rstrip()
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def _reuse(prev: Prev, path: str, sig: Any) -> Node | None:
    node = prev(path)
    if node is not None and node.sig is not None and (node.sig is sig or node.sig == sig):
        return node
    return None


def _place(children: list[Node], base: str) -> list[Node]:
    # paths are needed before the model adopts the nodes so nested reuse lookups work
    for c in children:
        c.path = f"{base}/{c.key}"
    return children


def json_children(value: Any, base: str, prev: Prev, doc_base: str = "") -> list[Node]:
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        return []
    out: list[Node] = []
    for k, v in items[:MAX_CHILDREN]:
        k = str(k)
        out.append(json_node(k, v, f"{base}/{k}", prev, f"{doc_base}/{k}" if doc_base else k))
    if len(items) > MAX_CHILDREN:
        more = len(items) - MAX_CHILDREN
        out.append(Node("…", "more", ("…", f"{more} more (see detail pane)", "", ""), sig=more))
    return _place(out, base)


def json_node(key: str, value: Any, path: str, prev: Prev, doc_path: str = "") -> Node:
    sig = ("json", value)
    old = _reuse(prev, path, sig)
    if old is not None:
        return old
    kind = type(value).__name__
    if isinstance(value, dict):
        kind = "object"
    elif isinstance(value, (list, tuple)):
        kind = "array"
    node = Node(key, "json", (key, preview(value), kind, ""), sig=sig, value=value, ref=value,
                doc_path=doc_path or path)
    node.children = json_children(value, path, prev, node.doc_path)
    return node


# -- cells --------------------------------------------------------------------------------------

def content_text(entry: Any) -> str | None:
    """The text of one resolved content entry ({"inline": ...} or a raw value)."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        if isinstance(entry.get("inline"), str):
            return entry["inline"]
        if "value" in entry and isinstance(entry["value"], str):
            return entry["value"]
    if isinstance(entry, list) and all(isinstance(x, str) for x in entry):
        return "".join(entry)
    return None


def output_summary(out: OutputView) -> str:
    res = out.resolved or {}
    for key in ("text/plain", "text"):
        text = content_text(res.get(key))
        if text:
            return first_line(text)
    man = out.manifest or {}
    if man.get("output_type") == "error" or "ename" in man:
        return f"{man.get('ename')}: {first_line(str(man.get('evalue', '')))}"
    if res:
        return ", ".join(sorted(res)[:4])
    data = man.get("data")
    if isinstance(data, dict):
        return ", ".join(sorted(data)[:4])
    return ""


def output_node(i: int, out: OutputView, base: str, prev: Prev, doc_base: str, key_prefix: str = "") -> Node:
    path = f"{base}/{i}"
    old = _reuse(prev, path, out)
    if old is not None:
        return old
    if out.error:
        info = f"unresolved: {out.error}"
    elif out.manifest is not None or out.resolved is not None:
        info = "resolved"
    else:
        info = "unresolved"
    ref = out.ref if len(out.ref) <= 16 else out.ref[:12] + "…"
    node = Node(f"{key_prefix}{i}", "output", (out.output_type or "output", output_summary(out), info, ref),
                sig=out, ref=out, value=_builtins(out), badge=("output", "O"),
                status="info" if out.error else None, tooltip=f"ref {out.ref}" + (f"\n{out.error}" if out.error else ""),
                doc_path=f"{doc_base}/{i}")
    node.search += " " + out.ref.lower()
    return node


def cell_node(cell: CellView, prev: Prev) -> Node:
    path = f"cells/{cell.id}"
    old = _reuse(prev, path, cell)
    if old is not None:
        return old
    letter = {"code": "C", "markdown": "M", "raw": "R"}.get(cell.cell_type, "?")
    count = "[ ]" if cell.execution_count is None else f"[{cell.execution_count}]"
    n = len(cell.outputs)
    info = f"{count} · {n} output{'s' if n != 1 else ''}" if cell.cell_type == "code" else (
        f"{n} output{'s' if n != 1 else ''}" if n else "")
    tooltip = f"position {cell.position}"
    if cell.flags:
        tooltip += "\nflags: " + ", ".join(cell.flags)
    node = Node(cell.id, "cell", (cell.cell_type, first_line(cell.source), info, cell.id), sig=cell, ref=cell,
                value=_builtins(cell), badge=(cell.cell_type if letter != "?" else "group", letter),
                status="info" if cell.flags else None, tooltip=tooltip, obj_id=cell.obj_id,
                doc_path=f"cells/{cell.key or cell.id}")
    node.search += " " + cell.source.lower()[:2000]
    # outputs sit directly under the cell; keyed "outputs/<i>" so they never clash with "metadata"
    children = [output_node(i, o, f"{path}/outputs", prev, f"{node.doc_path}/outputs", "outputs/")
                for i, o in enumerate(cell.outputs)]
    if cell.metadata not in (None, {}, ""):
        meta = json_node("metadata", cell.metadata, f"{path}/metadata", prev, f"{node.doc_path}/metadata")
        meta.kind = "json"
        children.append(meta)
    node.children = _place(children, path)
    return node


# -- comms --------------------------------------------------------------------------------------

def _fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def divergence_tooltip(d: Divergence, key: KeyDiff | None = None) -> str:
    lines = [f"{d.status.upper()}: {badge_kind(d)} ({d.severity})", f"for {_fmt_ms(d.since_ms)}"]
    if d.sides:
        lines.append("compared: " + " vs ".join(d.sides))
    if d.moved:
        lines.append(f"last moved: {d.moved}")
    if d.detail:
        lines.append(d.detail)
    keys = (key,) if key is not None else d.keys[:8]
    for k in keys:
        lines.append(f"• {k.key}")
        if k.values:
            # every view the engine compared, under its own name (v4: topology, state, echo, kernel)
            for side, value in k.values.items():
                age = k.ages_ms.get(side)
                when = f"{_fmt_ms(age)} ago" if age is not None else "before the join"
                lines.append(f"    {side}: {preview(value, 80)}  ({when})")
            continue
        for side in ("doc", "feed", "kernel"):
            if side in k.present or getattr(k, side) is not None:
                age = getattr(k, f"{side}_age_ms")
                lines.append(f"    {side}: {preview(getattr(k, side), 80)}  ({_fmt_ms(age)} ago)")
    if key is None and len(d.keys) > 8:
        lines.append(f"… {len(d.keys) - 8} more keys")
    return "\n".join(lines)


def badge_kind(d: Divergence) -> str:
    """The kind to show: a pending finding names the kind it would become ("state_mismatch?")."""
    if d.kind == "pending" and "? " in d.detail:
        return d.detail.split("? ", 1)[0] + "?"
    return d.kind


def badge(d: Divergence) -> str:
    kind = badge_kind(d)
    return kind if d.status in ("info", kind) else f"{d.status}: {kind}"


def worst(divs: list[Divergence]) -> Divergence | None:
    if not divs:
        return None
    return max(divs, key=lambda d: _SEVERITY.get(d.status, 0))


def comm_node(comm_id: str, comm: CommView | None, feed: FeedCommView | None, divs: tuple[Divergence, ...],
              prev: Prev, no_feed: bool = False, liveness: CommLiveness | None = None,
              buffers: tuple[BufferRef, ...] = (), gone: str | None = None) -> Node:
    """`no_feed`: the daemon has no CommSync feed (protocol v4), so "doc only" would mean nothing;
    the views compared are the runtime state, the comms document, echoes and the kernel.
    `liveness` and `buffers`: the snapshot's integrity report for this comm."""
    path = f"comms/{comm_id}"
    sig = (comm, feed, divs, no_feed, liveness, buffers, gone)
    old = _reuse(prev, path, sig)
    if old is not None:
        return old
    d = worst(list(divs))
    model = (comm.model_name if comm else None) or (feed.model_name if feed else None) or "?"
    target = (comm.target_name if comm else None) or (feed.target_name if feed else None) or ""
    seq = "#–" if comm is None or comm.seq is None else f"#{comm.seq}"
    if d is not None:
        badge_text = badge(d)
        if len(divs) > 1:
            badge_text += f" +{len(divs) - 1}"
        status = d.status
        tooltip = "\n\n".join(divergence_tooltip(x) for x in divs)
    elif no_feed and comm is not None:
        # who last wrote the comm's state is what a v4 reader looks for (rt:kernel:…, a frontend…)
        badge_text = f"in sync · {comm.writer}" if comm.writer else "in sync"
        status = None
        tooltip = ""
    else:
        badge_text = "feed only" if comm is None else ("doc only" if feed is None else "in sync")
        status = None
        tooltip = ""
    if gone and d is None:
        # views that agree on a dead kernel's comm agree on a replay: nothing answers it
        badge_text = f"replay-only · {gone}"
        tooltip = f"the views agree, but the {gone}: this comm is state only, nothing answers it"
    if comm is not None and comm.writer:
        tooltip = (tooltip + "\n\n" if tooltip else "") + f"last written by {comm.writer}"
    value = {"doc": _builtins(comm), "feed": _builtins(feed), "divergence": [_builtins(x) for x in divs]}
    state = comm.state if comm is not None else (feed.state if feed is not None else None)
    if target:
        tooltip = (tooltip + "\n\n" if tooltip else "") + f"target {target}"
    node = Node(comm_id, "comm", (f"{seq} {model}", comm_summary(state) or target, badge_text, comm_id), sig=sig,
                ref=(comm, feed, divs), value=value, status=status, tooltip=tooltip, badge=("comm", "W"),
                obj_id=comm.obj_id if comm else "", doc_path=f"comms/{comm_id}",
                writer=(comm.writer or "") if comm is not None else "")
    node.search += " " + target.lower()
    if liveness is not None:
        node.liveness = liveness.liveness
        node.search += " " + liveness.liveness
        node.tooltip = (node.tooltip + "\n\n" if node.tooltip else "") + (
            f"{liveness.liveness}{' (provisional)' if liveness.provisional else ''}: {liveness.reason}"
            + (f" [{liveness.evidence}]" if liveness.evidence else ""))
    top_buffers = {b.path[0]: b for b in buffers if len(b.path) == 1}
    keydiv: dict[str, tuple[Divergence, KeyDiff]] = {}
    for x in sorted(divs, key=lambda x: _SEVERITY.get(x.status, 0)):
        for k in x.keys:
            keydiv[k.key] = (x, k)
    children: list[Node] = []
    if isinstance(state, dict):
        node.search += " " + " ".join(str(k).lower() for k in state)
        for k, v in state.items():
            children.append(state_key_node(comm_id, str(k), v, keydiv.get(str(k)), comm, f"{path}/state/{k}", prev,
                                           show_writer=no_feed, buffer=top_buffers.get(str(k))))
    # keys that only exist on the other side still deserve a row
    for k, (x, kd) in keydiv.items():
        if not isinstance(state, dict) or k not in state:
            children.append(state_key_node(comm_id, k, kd.doc if kd.doc is not None else kd.feed, (x, kd), comm,
                                           f"{path}/state/{k}", prev, missing=True))
    if comm is not None and comm.outputs:
        grp = Node("outputs", "group", ("outputs", f"{len(comm.outputs)} captured", "", ""), sig=None,
                   value=[_builtins(o) for o in comm.outputs], badge=("group", "≡"), doc_path=f"comms/{comm_id}/outputs")
        grp.children = _place([output_node(i, o, f"{path}/outputs", prev, grp.doc_path)
                               for i, o in enumerate(comm.outputs)], f"{path}/outputs")
        children.append(grp)
    node.children = _place(children, path)
    return node


def comm_summary(state: Any) -> str:
    """What a widget row says at a glance: its description and value, else its children."""
    if isinstance(state, str):
        return "(unparsable state)"
    if not isinstance(state, dict):
        return ""
    parts = []
    desc = state.get("description")
    if isinstance(desc, str) and desc:
        parts.append(json.dumps(desc, ensure_ascii=False))
    if "value" in state and not isinstance(state["value"], (dict, list)):
        parts.append(("= " if parts else "value ") + preview(state["value"], 60))
    elif isinstance(state.get("children"), list):
        parts.append(plural(len(state["children"]), "child").replace("childs", "children"))
    elif isinstance(state.get("outputs"), list):
        parts.append(plural(len(state["outputs"]), "output"))
    if not parts:  # a layout or a style: how much of its state is set (its own keys, not the _model ones)
        own = [k for k in state if not str(k).startswith("_")]
        set_ = [k for k in own if state[k] not in (None, "", [], {})]
        parts.append(f"{len(set_)} of {plural(len(own), 'key')} set" if len(set_) != len(own)
                     else f"{{{plural(len(own), 'key')}}}")
    return " ".join(parts)


def buffer_summary(b: BufferRef) -> str:
    """A blob reference at a glance: size, media type, short hash (what `{3 keys}` hid)."""
    size = b.size if b.size is not None else b.declared_size
    mt = b.media_type or b.served_media_type or b.declared_media_type or "?"
    dims = f" {b.width}×{b.height}" if b.width and b.height else ""
    digest = (b.sha256 or b.blob or "")[:12]
    text = f"blob {byte_size(size)} {mt}{dims} {digest}…" if digest else f"blob {byte_size(size)} {mt}{dims}"
    return text + (f" ⚠ {b.error}" if b.error else "")


def byte_size(n: int | None) -> str:
    if n is None:
        return "? B"
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / (1024 * 1024):.1f} MiB"


def state_key_node(comm_id: str, key: str, value: Any, div: tuple[Divergence, KeyDiff] | None,
                   comm: CommView | None, path: str, prev: Prev, missing: bool = False,
                   show_writer: bool = False, buffer: BufferRef | None = None) -> Node:
    sig = ("key", value, div, missing, comm.key_writers.get(key) if comm else None, show_writer, buffer)
    old = _reuse(prev, path, sig)
    if old is not None:
        return old
    status = tooltip = None
    info = ""
    if div is not None:
        d, kd = div
        status = d.status
        tooltip = divergence_tooltip(d, kd)
        info = badge(d)
    if missing:
        info = (info + " · " if info else "") + "missing in doc"
    writer = comm.key_writers.get(key) if comm else None
    if writer:
        tooltip = (tooltip + "\n" if tooltip else "") + f"written by {writer}"
        if show_writer and not info and comm is not None and writer != comm.writer:
            info = writer  # a key someone else wrote than the comm's last writer stands out
    # keyed "state/<key>": an Output widget has a state key literally named "outputs"
    shown = buffer_summary(buffer) if buffer is not None else preview(value)
    node = Node(f"state/{key}", "statekey", (key, shown, info, ""), sig=sig, ref=(comm_id, key, div), value=value,
                status=status, tooltip=tooltip or "", badge=None, doc_path=f"comms/{comm_id}/state → {key}",
                writer=writer or "")
    node.search += " " + comm_id.lower()
    node.children = json_children(value, path, prev, node.doc_path)
    return node


# -- whole snapshot -----------------------------------------------------------------------------

def divergences_by_comm(snap: Snapshot) -> dict[str, tuple[Divergence, ...]]:
    out: dict[str, list[Divergence]] = {}
    for d in snap.divergence:
        out.setdefault(d.comm_id, []).append(d)
    return {k: tuple(v) for k, v in out.items()}


def _cells_group(snap: Snapshot, prev: Prev) -> Node:
    cells: list[Node] = []
    seen_cells: set[str] = set()
    todo: tuple[CellView, ...] = snap.cells
    old = prev("cells")
    if old is not None and isinstance(old.sig, tuple) and len(old.sig) == 2 and old.sig[0] == "cells":
        had = old.sig[1]
        # the same cells with more after them (the tree filling in, cells appended): the shown
        # nodes stay as they are and only the new ones are built, so a step costs its slice
        if 0 < len(had) <= len(snap.cells) and snap.cells[:len(had)] == had and len(old.children) == len(had):
            cells = list(old.children)
            seen_cells = {n.key for n in cells}
            todo = snap.cells[len(had):]
    start = len(cells)
    for c in todo:
        node = cell_node(c, prev)
        if node.key in seen_cells:  # a broken document can repeat an id; show every copy
            node.key = f"{node.key}#{len(cells)}"
        seen_cells.add(node.key)
        cells.append(node)
    cg = Node("cells", "group", ("Cells", plural(len(cells), "cell"), _cell_counts(snap.cells), ""), badge=("group", "≡"),
              value=[c.id for c in snap.cells], sig=("cells", snap.cells), doc_path="cells")
    _place(cells[start:], "cells")
    cg.children = cells

    return cg


def _kernel_gone(snap: Snapshot) -> str | None:
    """Why the room's comms have no live kernel behind them (None: a kernel runs, or none reported)."""
    from ..liveness import kernel_alive

    if snap.lifecycle.room == "gone":
        return "room is gone"
    status = snap.kernel.status
    return f"kernel is {status}" if status is not None and not kernel_alive(status) else None


def _comms_group(snap: Snapshot, prev: Prev) -> Node:
    divs = divergences_by_comm(snap)
    integrity = snap.integrity
    live = {c.comm_id: c for c in integrity.liveness.comms} if integrity is not None else {}
    bufs: dict[str, list[Any]] = {}
    for b in integrity.buffers if integrity is not None else ():
        bufs.setdefault(b.comm_id, []).append(b)
    feed = {f.comm_id: f for f in snap.feed.comms}
    no_feed = snap.feed.baseline == "none"
    gone = _kernel_gone(snap)
    comm_nodes = []
    seen = set()
    for c in snap.comms:
        seen.add(c.comm_id)
        comm_nodes.append(comm_node(c.comm_id, c, feed.get(c.comm_id), divs.get(c.comm_id, ()), prev, no_feed,
                                    live.get(c.comm_id), tuple(bufs.get(c.comm_id, ())), gone))
    for f in snap.feed.comms:  # in the feed but not in the document: still listed, after the doc's
        if f.comm_id not in seen:
            seen.add(f.comm_id)
            comm_nodes.append(comm_node(f.comm_id, None, f, divs.get(f.comm_id, ()), prev))
    for cid, ds in divs.items():
        if cid not in seen:
            seen.add(cid)
            comm_nodes.append(comm_node(cid, None, None, ds, prev, no_feed))
    nd = sum(1 for d in snap.divergence if d.status == "diverged")
    np_ = sum(1 for d in snap.divergence if d.status == "pending")
    ginfo = ", ".join(x for x in (f"{nd} diverged" if nd else "", f"{np_} pending" if np_ else "") if x)
    feed_label = {"comm_sync": "feed from comm_sync", "empty": "feed from broadcasts only", "pending": "feed pending",
                  "none": "no feed"}.get(snap.feed.baseline, f"feed {snap.feed.baseline}")
    mg = Node("comms", "group", ("Comms", f"{plural(len(comm_nodes), 'comm')} · {feed_label}", ginfo, ""),
              badge=("group", "≡"), sig=_comms_sig(snap),
              value=[n.key for n in comm_nodes], status="diverged" if nd else ("pending" if np_ else None), doc_path="comms")
    mg.children = _place(comm_nodes, "comms")

    return mg


def build_top(snap: Snapshot, prev: Prev = _no_prev) -> list[Node]:
    # whole groups are reused when their inputs are the same objects (or equal): a storm on
    # one comm must not cost a pass over 1,000 cells
    cg = _reuse(prev, "cells", ("cells", snap.cells))
    if cg is None:
        cg = _cells_group(snap, prev)
    mg = _reuse(prev, "comms", _comms_sig(snap))
    if mg is None:
        mg = _comms_group(snap, prev)
    meta = _reuse(prev, "metadata", ("meta", snap.metadata))
    if meta is None:
        meta = Node("metadata", "group", ("Metadata", preview(snap.metadata), "", ""), sig=("meta", snap.metadata),
                    value=snap.metadata, ref=snap.metadata, badge=("group", "≡"), doc_path="metadata")
        meta.children = json_children(snap.metadata, "metadata", prev, "metadata")

    k = snap.kernel
    kstate = k.lifecycle or k.status or "unknown"
    # a runtime-state kernel (v4) always has a queue: say when it is empty rather than nothing
    has_queue = k.source == "runtime_state"
    queue = f"{len(k.queued)} queued" if k.queued else ("queue empty" if has_queue else "")
    kinfo = " · ".join(x for x in (k.activity, f"executing {k.executing[:8]}" if k.executing else "", queue) if x)
    kern = _reuse(prev, "kernel", ("kernel", k))
    if kern is None:
        kv = _builtins(k)
        kern = Node("kernel", "group", ("Kernel", kstate, kinfo, ""), sig=("kernel", k), value=kv, ref=k,
                    badge=("kernel", "K"), status="info" if k.error_reason else None, tooltip=k.error_reason or "")
        kern.children = json_children({x: y for x, y in kv.items()
                                       if y not in (None, [], ()) or (x == "queued" and has_queue)}, "kernel", prev)

    top = [cg, mg, meta, kern]
    if snap.documents:
        docs = _reuse(prev, "documents", ("docs", snap.documents))
        if docs is None:
            docs = Node("documents", "group", ("Documents", f"{len(snap.documents)} synced", "", ""),
                        sig=("docs", snap.documents), value=[_builtins(d) for d in snap.documents], badge=("group", "≡"))
            kids = []
            for d in snap.documents:
                dn = Node(d.name, "doc", (d.name, f"{plural(d.changes, 'change')} · {plural(len(d.heads), 'head')}",
                                          plural(len(d.actors), "actor"), ", ".join(h[:8] for h in d.heads)),
                          value=_builtins(d), ref=d, badge=("doc", "D"), doc_path=d.name)
                if d.tree is not None:
                    dn.children = json_children(d.tree, f"documents/{d.name}", prev)
                kids.append(dn)
            docs.children = _place(kids, "documents")
        top.append(docs)
    for n in top:
        n.path = n.key  # top-level paths are bare keys: "cells", "comms", ...
    return top


def _comms_sig(snap: Snapshot) -> tuple[Any, ...]:
    integrity = snap.integrity
    extra = (integrity.liveness.comms, integrity.buffers) if integrity is not None else None
    return ("comms", snap.comms, snap.feed.comms, snap.feed.baseline, snap.divergence, extra)


def _cell_counts(cells: tuple[CellView, ...]) -> str:
    counts = collections.Counter(map(operator.attrgetter("cell_type"), cells))  # at C speed: 10,000 cells
    return " · ".join(f"{n} {t}" for t, n in sorted(counts.items()))


def _builtins(obj: Any) -> Any:
    if obj is None:
        return None
    import msgspec

    return msgspec.to_builtins(obj)
