"""The document tree item model: diffs each new snapshot into the existing rows.

A sync never resets the model. Rows are inserted, removed, moved and changed in place
(begin/endInsertRows, begin/endRemoveRows, begin/endMoveRows, dataChanged), so the view keeps
its expansion, selection and scroll position. Rows that changed are highlighted and fade out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import (
    QAbstractItemModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
)
from PySide6.QtGui import QFont, QGuiApplication

from ..snapshot import Snapshot
from . import theme as th
from .tree_nodes import HEADERS, LIVENESS_COL, NCOLS, WRITER_COL, Node, build_top

NodeRole = Qt.ItemDataRole.UserRole + 1
PathRole = Qt.ItemDataRole.UserRole + 2
StatusRole = Qt.ItemDataRole.UserRole + 3
SearchRole = Qt.ItemDataRole.UserRole + 4
_DISPLAY, _DECORATION, _FOREGROUND, _BACKGROUND, _FONT, _TOOLTIP = (int(r) for r in (
    Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.DecorationRole, Qt.ItemDataRole.ForegroundRole,
    Qt.ItemDataRole.BackgroundRole, Qt.ItemDataRole.FontRole, Qt.ItemDataRole.ToolTipRole))
_NODE, _PATH, _STATUS, _SEARCH = (int(r) for r in (NodeRole, PathRole, StatusRole, SearchRole))

_HIGHLIGHT_KINDS = ("cell", "comm", "statekey", "output", "json")
_FADE_ROLES = [Qt.ItemDataRole.BackgroundRole]
_LOADING = ("connecting", "syncing")
_ROW_FLAGS = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable  # built once: enum arithmetic is slow
_NO_FLAGS = Qt.ItemFlag.NoItemFlags

FADE_RUN_GAP = 3  # fading rows this close share one signal (the rows between repaint for nothing)
FADE_MAX_RUNS = 16  # past this many runs under one parent, one span (a sync that changed most rows)


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """Sorted row numbers as (first, last) runs: neighbours within FADE_RUN_GAP join a run; more
    than FADE_MAX_RUNS runs become the one span from the first to the last."""
    runs: list[list[int]] = []
    for r in rows:
        if runs and r - runs[-1][1] <= FADE_RUN_GAP:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    if len(runs) > FADE_MAX_RUNS:
        return [(rows[0], rows[-1])]
    return [(a, b) for a, b in runs]


class DocumentTreeModel(QAbstractItemModel):
    def __init__(self, parent: Any = None, fade_ms: int = 1600) -> None:
        super().__init__(parent)
        self._root = Node("", "root", ("", "", "", ""))
        self._root.path = ""
        self._by_path: dict[str, Node] = {}
        self._populated = False
        self._recent: dict[int, Node] = {}
        self.fade_ms = fade_ms
        self.snapshot: Snapshot | None = None
        self._fade = QTimer(self)
        self._fade.setInterval(90)
        self._fade.timeout.connect(self._fade_tick)
        self._mono = th.mono_font()
        self._bold = QFont()
        self._bold.setBold(True)

    # -- public API ---------------------------------------------------------------------------

    def set_snapshot(self, snap: Snapshot, loading: bool = False) -> None:
        """Bring the rows in line with `snap` by a minimal set of row operations. `loading`: a
        part of a bigger snapshot (the tree filling in slices): its new rows do not light up."""
        self.snapshot = snap
        top = build_top(snap, self._by_path.get)
        self._sync_children(self._root, QModelIndex(), top)
        # Rows arriving with the initial sync are the notebook loading, not changes: only once
        # a snapshot past the sync is shown do new and changed rows light up (a whole notebook
        # lit up on attach says nothing, and fading 1,000 rows costs the view).
        if snap.connection not in _LOADING and not loading:
            self._populated = True
        if self._recent and not self._fade.isActive():
            self._fade.start()

    def clear(self) -> None:
        """Drop every row (used when attaching to a different room, not on sync)."""
        if not self._root.children:
            return
        self.beginRemoveRows(QModelIndex(), 0, len(self._root.children) - 1)
        for n in self._root.children:
            self._unindex(n)
        self._root.children = []
        self.endRemoveRows()
        self._populated = False
        self._recent.clear()
        self.snapshot = None

    def node(self, index: QModelIndex | QPersistentModelIndex) -> Node | None:
        if not index.isValid():
            return None
        return index.internalPointer()

    def node_at(self, path: str) -> Node | None:
        return self._by_path.get(path)

    def index_for_path(self, path: str, column: int = 0) -> QModelIndex:
        """The row for a tree path; falls back to the nearest existing ancestor."""
        while path:
            node = self._by_path.get(path)
            if node is not None and node.parent is not None:
                return self.createIndex(node.row, column, node)
            if "/" not in path:
                break
            path = path.rsplit("/", 1)[0]
        return QModelIndex()

    def iter_nodes(self) -> Any:
        stack = list(reversed(self._root.children))
        while stack:
            n = stack.pop()
            yield n
            stack.extend(reversed(n.children))

    def index_of(self, node: Node, column: int = 0) -> QModelIndex:
        return self.createIndex(node.row, column, node)

    # -- diffing ------------------------------------------------------------------------------

    def _sync_children(self, parent: Node, pindex: QModelIndex, new: list[Node]) -> bool:
        old = parent.children
        if old and len(new) > len(old) and new[:len(old)] == old:
            # the same nodes with more after them (the tree filling in): one insertion at the end,
            # without a walk over the thousands of rows already shown (Node compares by identity)
            self._insert_run(parent, pindex, len(old), new[len(old):])
            return True
        changed = False
        new_keys = {n.key for n in new}
        # 1. removals, bottom-up in contiguous ranges
        i = len(old) - 1
        while i >= 0:
            if old[i].key in new_keys:
                i -= 1
                continue
            j = i
            while j > 0 and old[j - 1].key not in new_keys:
                j -= 1
            self.beginRemoveRows(pindex, j, i)
            for n in old[j:i + 1]:
                self._unindex(n)
            del old[j:i + 1]
            self._renumber(old, j)
            self.endRemoveRows()
            changed = True
            i = j - 1
        # 2. walk the new order: keep, move up, or insert runs
        current = {n.key: n for n in old}
        i = 0
        while i < len(new):
            nn = new[i]
            if i < len(old) and old[i].key == nn.key:
                changed |= self._merge(old[i], pindex, nn)
                i += 1
                continue
            on = current.get(nn.key)
            if on is not None:
                j = old.index(on, i)
                self.beginMoveRows(pindex, j, j, pindex, i)
                old.pop(j)
                old.insert(i, on)
                self._renumber(old, i, j + 1)
                self.endMoveRows()
                self._merge(on, pindex, nn)
                changed = True
                i += 1
                continue
            k = i
            while k < len(new) and new[k].key not in current:
                k += 1
            self._insert_run(parent, pindex, i, new[i:k])
            changed = True
            i = k
        return changed

    def _insert_run(self, parent: Node, pindex: QModelIndex, at: int, run: list[Node]) -> None:
        old = parent.children
        self.beginInsertRows(pindex, at, at + len(run) - 1)
        old[at:at] = run
        for n in run:
            n.parent = parent
            n.path = n.key if parent is self._root else f"{parent.path}/{n.key}"
            self._index(n)
            if self._populated:
                self._mark(n)
        self._renumber(old, at)
        self.endInsertRows()

    def _merge(self, old: Node, pindex: QModelIndex, new: Node) -> bool:
        if old is new:
            return False
        display_changed = not old.same_display(new)
        # only what a reader sees change lights a row up: a tooltip whose age moved on does not
        shown_changed = (old.cols != new.cols or old.status != new.status or old.writer != new.writer
                         or old.liveness != new.liveness
                         or (old.kind in ("statekey", "json") and old.value != new.value))
        old.sig, old.ref, old.value, old.obj_id = new.sig, new.ref, new.value, new.obj_id
        old.kind, old.doc_path, old.search = new.kind, new.doc_path, new.search
        if display_changed:
            old.cols, old.status, old.tooltip, old.badge = new.cols, new.status, new.tooltip, new.badge
            old.writer, old.liveness = new.writer, new.liveness
        index = self.createIndex(old.row, 0, old)
        sub_changed = self._sync_children(old, index, new.children)
        # a key whose inputs moved but whose value and shown text did not (its divergence a few
        # ms older, say) needs no signal: each one is a repaint and a pass of the filter proxy
        if display_changed or sub_changed or shown_changed:
            if self._populated and old.kind in _HIGHLIGHT_KINDS and (shown_changed or sub_changed):
                self._mark(old)
            self.dataChanged.emit(index, self.createIndex(old.row, NCOLS - 1, old))
        # the parent lights up for what is seen to change below it, not for a tooltip's age
        return shown_changed or sub_changed

    def _mark(self, node: Node) -> None:
        node.changed_at = time.monotonic()
        self._recent[id(node)] = node

    @staticmethod
    def _renumber(children: list[Node], start: int, stop: int | None = None) -> None:
        for r in range(start, len(children) if stop is None else min(stop, len(children))):
            children[r].row = r

    def _index(self, node: Node) -> None:
        self._by_path[node.path] = node
        for c in node.children:
            c.parent = node
            c.path = f"{node.path}/{c.key}"
            self._index(c)
        self._renumber(node.children, 0)

    def _unindex(self, node: Node) -> None:
        if self._by_path.get(node.path) is node:
            del self._by_path[node.path]
        self._recent.pop(id(node), None)
        node.parent = None
        for c in node.children:
            self._unindex(c)

    def _fade_tick(self) -> None:
        now = time.monotonic()
        limit = self.fade_ms / 1000
        # One dataChanged per run of neighbouring fading rows, and for the background only: the
        # view pays a search through its visible rows per signal, so one signal per row froze the
        # window for a second after a sync that changed 1,000 rows (or an attach); and one span
        # per parent repainted every row between two far-apart ones (the whole viewport when a
        # storm moves a comm at the top and one at the bottom), 15 ms a tick at 1,000 cells.
        rows: dict[int, tuple[Any, list[int]]] = {}
        for key, node in list(self._recent.items()):
            parent = node.parent
            if parent is None:
                del self._recent[key]
                continue
            if now - node.changed_at > limit:
                del self._recent[key]
                node.changed_at = 0.0
            entry = rows.get(id(parent))
            if entry is None:
                rows[id(parent)] = (parent, [node.row])
            else:
                entry[1].append(node.row)
        for parent, fading in rows.values():
            kids = parent.children
            for first, last in _runs(sorted(fading)):
                self.dataChanged.emit(self.createIndex(first, 0, kids[first]),
                                      self.createIndex(last, NCOLS - 1, kids[last]), _FADE_ROLES)
        if not self._recent:
            self._fade.stop()

    # -- QAbstractItemModel -------------------------------------------------------------------

    # index, flags and rowCount run once per row whenever the view lays a group out (5,000 calls
    # to expand 1,000 cells): kept to the fewest Python operations
    def index(self, row: int, column: int, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> QModelIndex:
        if parent.isValid():
            if parent.column() != 0:
                return QModelIndex()
            kids = parent.internalPointer().children
        else:
            kids = self._root.children
        if 0 <= row < len(kids) and 0 <= column < NCOLS:
            return self.createIndex(row, column, kids[row])
        return QModelIndex()

    def parent(self, index: QModelIndex | QPersistentModelIndex = QModelIndex()) -> QModelIndex:  # type: ignore[override]
        if not index.isValid():
            return QModelIndex()
        node: Node = index.internalPointer()
        p = node.parent
        if p is None or p is self._root:
            return QModelIndex()
        return self.createIndex(p.row, 0, p)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        if not parent.isValid():
            return len(self._root.children)
        if parent.column() != 0:
            return 0
        return len(parent.internalPointer().children)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return NCOLS

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole and 0 <= section < NCOLS:
            return HEADERS[section]
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        return _ROW_FLAGS if index.isValid() else _NO_FLAGS

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = _DISPLAY) -> Any:
        # called for every visible cell and role at each repaint: roles compare as plain ints
        # (comparing to Qt's enum members costs more than the rest of the call)
        if not index.isValid():
            return None
        node: Node = index.internalPointer()
        col = index.column()
        if role == _DISPLAY:
            if col == LIVENESS_COL:
                return node.liveness
            return node.writer if col == WRITER_COL else node.cols[col]
        if role == _DECORATION:
            if col == 0:
                if node.status:
                    return th.status_icon(node.status)
                if node.badge:
                    return th.badge_icon(*node.badge)
            return None
        if role == _FOREGROUND:
            t = th.theme()
            status = node.status
            if status == "diverged" and col in (0, 2):
                return t.diverged_fg
            if status == "pending" and col in (0, 2):
                return t.pending_fg
            if status == "info" and col == 2:
                return t.info_fg
            if col == LIVENESS_COL and node.liveness:
                return t.ok_fg if node.liveness == "live-bound" else (
                    t.diverged_fg if node.liveness == "orphaned" else t.muted_fg)
            if col in (3, WRITER_COL) or (col == 2 and not status):
                return t.muted_fg
            return None
        if role == _BACKGROUND:
            return self._background(node) if node.status or node.changed_at else None
        if role == _FONT:
            if node.kind == "group" and col == 0:
                return self._bold
            if col in (1, 3, WRITER_COL) and node.kind != "group":
                return self._mono
            return None
        if role == _TOOLTIP:
            return node.tooltip or None
        if role == _NODE:
            return node
        if role == _PATH:
            return node.path
        if role == _STATUS:
            return node.status
        if role == _SEARCH:
            return node.search
        return None

    def _background(self, node: Node) -> Any:
        t = th.theme()
        base = None
        if node.status == "diverged":
            base = t.diverged_bg
        elif node.status == "pending":
            base = t.pending_bg
        if node.changed_at:
            age = time.monotonic() - node.changed_at
            strength = 1.0 - age / (self.fade_ms / 1000)
            if strength > 0.02:
                under = base or QGuiApplication.palette().base().color()
                return th.blend(t.changed_bg, under, strength * 0.9)
        return base


class FilterProxy(QSortFilterProxyModel):
    """A proxy whose filter settings change through `_change`, announced the way this Qt wants."""

    def _change(self, apply: Callable[[], Any]) -> None:
        if hasattr(self, "endFilterChange"):  # Qt >= 6.10
            self.beginFilterChange()
            apply()
            self.endFilterChange()
        else:
            apply()
            self.invalidateFilter()


class TreeFilterProxy(FilterProxy):
    """Search text (id, model name, key, value) and the 'only divergent' switch.

    Recursive filtering keeps the ancestors of a match visible; the children of a match
    stay visible too, so a matching comm can still be expanded into its keys.
    """

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setRecursiveFilteringEnabled(True)
        self.setAutoAcceptChildRows(True)
        self._text = ""
        self._only_divergent = False
        self._liveness = ""
        # Without a filter every row is accepted: re-filtering each changed row (and, recursive,
        # its ancestors) on every dataChanged cost a Python call per row for nothing in a storm.
        self.setDynamicSortFilter(False)

    def _change(self, apply: Callable[[], Any]) -> None:
        super()._change(apply)
        self.setDynamicSortFilter(self.active)  # re-filter changed rows only while filtering

    def set_liveness(self, liveness: str) -> None:
        """Only comms of this liveness class ("" shows every row)."""
        if liveness != self._liveness:
            self._change(lambda: setattr(self, "_liveness", liveness))

    @property
    def liveness(self) -> str:
        return self._liveness

    def set_text(self, text: str) -> None:
        text = text.strip().lower()
        if text != self._text:
            self._change(lambda: setattr(self, "_text", text))

    def set_only_divergent(self, on: bool) -> None:
        if on != self._only_divergent:
            self._change(lambda: setattr(self, "_only_divergent", on))


    @property
    def text(self) -> str:
        return self._text

    @property
    def only_divergent(self) -> bool:
        return self._only_divergent

    @property
    def active(self) -> bool:
        return bool(self._text) or self._only_divergent or bool(self._liveness)

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        if not self.active:
            return True
        model = self.sourceModel()
        idx = model.index(source_row, 0, source_parent)
        node: Node | None = idx.internalPointer() if idx.isValid() else None
        if node is None:
            return False
        if self._only_divergent and (node.kind == "group" or node.status not in ("diverged", "pending")):
            return False
        if self._liveness and (node.kind != "comm" or node.liveness != self._liveness):
            return False
        if self._text and self._text not in node.search:
            return False
        return True
