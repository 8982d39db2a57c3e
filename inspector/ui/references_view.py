"""The detail pane's References tab: what the selected comm or cell points at, what points at
it ("referenced by"), and for every unresolved reference how long it has been unresolved.

Activating a row (double-click, Enter) jumps to the other end in the tree; Back returns to
where the jump started. The rows come from the snapshot's integrity report (one report for
the CLI's JSON and the window)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ..references import Reference, ReferenceGraph
from . import theme as th
from .rows_model import RowsTableModel

OUT, IN = "references", "referenced by"
STATUS_TEXT = {"ok": "resolved", "no_state": "no state yet", "no_topology": "no topology", "missing": "missing",
               "unknown": "cannot be checked"}


@dataclass(frozen=True)
class RefRow:
    direction: str  # references | referenced by
    path: str  # where in the holder
    kind: str  # state | link | view | capture
    other: str  # the other end: target (references) or holder (referenced by)
    status: str
    unresolved_for_s: float | None
    finding: bool  # unresolved past the settle window
    resolved_after_s: float | None  # a forward reference that resolved, after how long
    nav: str | None  # the tree path of the other end (None: an execution, not in the tree)


def holder_of(kind: str, key: str) -> str | None:
    """The reference-graph holder of a tree node: a comm id, or `cell:<id>`."""
    return key if kind == "comm" else (f"cell:{key}" if kind == "cell" else None)


def tree_path(holder_or_target: str, kind: str = "state") -> str | None:
    if kind == "capture":
        return None  # an execution id: no row of its own
    if holder_or_target.startswith("cell:"):
        return f"cells/{holder_or_target[5:]}"
    return f"comms/{holder_or_target}"


def rows_for(graph: ReferenceGraph, holder: str, path_prefix: str = "",
             names: dict[str, str] | None = None) -> list[RefRow]:
    """Outgoing references of `holder` (only those under `path_prefix`), then incoming ones;
    `names` (comm id -> model name) labels the other end."""
    names = names or {}
    findings = {(f.holder, f.path, f.target) for f in graph.findings}
    resolved = {(r.holder, r.path, r.target): r.unresolved_for_s for r in graph.resolved}

    def row(r: Reference, direction: str) -> RefRow:
        other = r.target if direction == OUT else r.holder
        label = f"{names[other]} {other}" if other in names else other
        return RefRow(direction, r.path, r.kind + (f" ({r.trait})" if r.trait else ""), label, r.target_status,
                      r.unresolved_for_s if not r.resolved else None, r.key in findings,
                      resolved.get(r.key) if r.resolved else None,
                      tree_path(other, r.kind if direction == OUT else "state"))

    out = [row(r, OUT) for r in graph.references_from(holder) if r.path.startswith(path_prefix)]
    target = holder[5:] if holder.startswith("cell:") else holder
    inc = [row(r, IN) for r in graph.referenced_by(target)] if not path_prefix else []
    return out + inc


def _secs(s: float | None) -> str:
    if s is None:
        return ""
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


class ReferenceTableModel(RowsTableModel):
    HEADERS = ("Direction", "Path", "Kind", "Other end", "Status", "Unresolved for")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rows: list[RefRow] = []

    def set_rows(self, rows: list[RefRow]) -> None:
        if rows == self.rows:
            return
        if len(rows) == len(self.rows) and all(a.other == b.other and a.path == b.path
                                               for a, b in zip(rows, self.rows, strict=True)):
            self.rows = rows  # same references, new ages: keep the selection
            if rows:
                self.dataChanged.emit(self.index(0, 0), self.index(len(rows) - 1, len(self.HEADERS) - 1))
            return
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.rows):
            return None
        r = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            status = STATUS_TEXT.get(r.status, r.status)
            if r.resolved_after_s is not None:
                status += f" after {_secs(r.resolved_after_s)}"
            elif r.finding:
                status += " (finding)"
            return (r.direction, r.path, r.kind, r.other, status, _secs(r.unresolved_for_s))[col]
        if role == Qt.ItemDataRole.ToolTipRole:
            if r.finding:
                return f"unresolved past the settle window for {_secs(r.unresolved_for_s)}: a warning"
            if r.unresolved_for_s is not None:
                return "unresolved, still inside the settle window: a forward reference (normal order)"
            return "double-click or Enter: go to the other end" if r.nav else "an execution: not a tree row"
        if role == Qt.ItemDataRole.ForegroundRole and col in (4, 5):
            t = th.theme()
            if r.finding:
                return t.diverged_fg
            if r.unresolved_for_s is not None:
                return t.pending_fg
            return t.ok_fg if col == 4 else None
        return None


class ReferencesView(QWidget):
    """References of the shown node, both ways; `navigate(tree path)` asks the window to go there."""

    navigate = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = ReferenceTableModel(self)
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.setFont(th.mono_font())
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.activated.connect(self._activated)
        self.summary = QLabel(self)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setWordWrap(True)
        self.back = QPushButton("◀ Back", self)
        self.back.setToolTip("return to where the last jump started")
        self.back.setEnabled(False)
        self.back.clicked.connect(self.go_back)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.summary, 1)
        top.addWidget(self.back)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 4, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.table, 1)
        self.history: list[str] = []
        self.here: str | None = None  # the tree path shown

    def show_rows(self, here: str | None, rows: list[RefRow]) -> None:
        self.here = here
        self.model.set_rows(rows)
        t = th.theme()
        n_out = sum(1 for r in rows if r.direction == OUT)
        n_in = len(rows) - n_out
        unresolved = [r for r in rows if r.direction == OUT and r.unresolved_for_s is not None]
        findings = sum(1 for r in unresolved if r.finding)
        parts = [f"{n_out} reference{'s' if n_out != 1 else ''}", f"referenced by {n_in}"]
        if findings:
            parts.append(f"<b style='color:{t.diverged_fg.name()}'>{findings} unresolved past the settle window</b>")
        if len(unresolved) > findings:
            parts.append(f"<span style='color:{t.pending_fg.name()}'>{len(unresolved) - findings} forward "
                         f"(settling)</span>")
        self.summary.setText(" · ".join(parts))

    def _activated(self, index: QModelIndex) -> None:
        if index.isValid():
            self.follow(index.row())

    def follow(self, row: int) -> bool:
        """Jump to the other end of row `row`; Back returns here."""
        r = self.model.rows[row] if 0 <= row < len(self.model.rows) else None
        if r is None or r.nav is None:
            return False
        if self.here is not None:
            self.history.append(self.here)
        self.back.setEnabled(True)
        self.navigate.emit(r.nav)
        return True

    def go_back(self) -> None:
        if not self.history:
            return
        path = self.history.pop()
        self.back.setEnabled(bool(self.history))
        self.navigate.emit(path)
