"""The story of one key: its history table, the key plot, the latency histograms and the
history findings, for a live session or a loaded history.

The pane reads a `KeyHistory` incrementally (`KeyHistory.since`) on a timer, so a storm costs one
row insert and one redraw per tick. A row's timeline event is one double-click away
(`jump_to_event`); `show_event(seq)` selects the row of a timeline event (the way back).
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QListWidget,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..history_findings import KeyWatch, Thresholds
from ..key_history import Entry, KeyHistory
from .key_plot import KeyPlot
from .latency_plot import LatencyPlot
from .rows_model import RowsTableModel

COLUMNS = ("+s", "Time", "Source", "Value", "Writer", "Peer", "Carrier", "Event")
EntryRole = Qt.ItemDataRole.UserRole + 1
_Index = QModelIndex | QPersistentModelIndex


def _short(v: Any, n: int = 60) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= n else text[: n - 1] + "…"


class HistoryTableModel(RowsTableModel):
    """Rows are `Entry`s of one key, in arrival order; appended in batches, trimmed at the head
    when the store drops old entries."""

    HEADERS = COLUMNS

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rows: list[Entry] = []
        self.t0: float | None = None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not (0 <= index.row() < len(self.rows)):
            return None
        e = self.rows[index.row()]
        if role == EntryRole:
            return e
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return f"{e.t - (self.t0 or e.t):.3f}"
            if col == 1:
                return _dt.datetime.fromtimestamp(e.wall).strftime("%H:%M:%S.%f")[:-3]
            if col == 2:
                return e.source
            if col == 3:
                return _short(e.value)
            if col == 4:
                return e.writer or "—"
            if col == 5:
                return e.peer or "—"
            if col == 6:
                return e.carrier or "—"
            if col == 7:
                return "" if e.event_seq is None else str(e.event_seq)
        if role == Qt.ItemDataRole.ToolTipRole and col == 3:
            return json.dumps(e.value, indent=1, default=str)[:4000]
        return None

    def reset(self, rows: list[Entry]) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.t0 = rows[0].t if rows else None
        self.endResetModel()

    def append(self, rows: list[Entry]) -> None:
        if not rows:
            return
        if self.t0 is None:
            self.t0 = rows[0].t
        n = len(self.rows)
        self.beginInsertRows(QModelIndex(), n, n + len(rows) - 1)
        self.rows.extend(rows)
        self.endInsertRows()

    def trim_head(self, keep: int) -> None:
        """Drop rows from the top until `keep` remain (the store evicted them)."""
        extra = len(self.rows) - keep
        if extra > 0:
            self.beginRemoveRows(QModelIndex(), 0, extra - 1)
            del self.rows[:extra]
            self.endRemoveRows()

    def row_of_event(self, seq: int) -> int | None:
        for i, e in enumerate(self.rows):
            if e.event_seq == seq:
                return i
        return None


class HistoryPane(QWidget):
    jump_to_event = Signal(int)  # a timeline event seq

    def __init__(self, history: KeyHistory | None = None, parent: Any = None, refresh_ms: int = 100,
                 thresholds: Thresholds | None = None) -> None:
        super().__init__(parent)
        self.history = history if history is not None else KeyHistory()
        self.thresholds = thresholds or Thresholds()
        self.comm_id: str | None = None
        self.key: str | None = None
        self._seen = 0
        self.model = HistoryTableModel(self)
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)  # no per-row sizing
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.doubleClicked.connect(self._on_double_click)
        self.title = QLabel("no key selected", self)
        self.dropped = QLabel("", self)
        self.plot = KeyPlot(self)
        self.latency = LatencyPlot(self)
        self.findings = QListWidget(self)
        tabs = QTabWidget(self)
        tabs.addTab(self.plot, "Key over time")
        tabs.addTab(self.latency, "Latency per hop")
        tabs.addTab(self.findings, "Findings")
        self.tabs = tabs
        tabs.currentChanged.connect(self._on_tab)
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(tabs)
        split.addWidget(self.table)
        split.setSizes([300, 260])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.title)
        lay.addWidget(split, 1)
        lay.addWidget(self.dropped)
        self._timer = QTimer(self)
        self._timer.setInterval(refresh_ms)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        # owned by the pane (not QTimer.singleShot with a callable): it cannot fire after the
        # pane is gone
        self._plot_timer = QTimer(self)
        self._plot_timer.setSingleShot(True)
        self._plot_timer.timeout.connect(self.plot.redraw)
        self.watch: KeyWatch | None = None
        self._to_analyse: list[Entry] = []  # entries the watch has not been fed yet
        self._analysed_at = 0.0
        self.analyse_budget_s = 0.006  # detector work per tick
        self.figures_every_s = 0.5

    # -- input ------------------------------------------------------------------------------

    def set_key(self, comm_id: str, key: str) -> None:
        self.comm_id, self.key = comm_id, key
        rows, self._seen, _dropped = self.history.since(comm_id, key, 0)
        self.model.reset(rows)
        self.plot.clear_key()
        self.plot.append(rows)
        self.plot.redraw()
        self._set_title()
        self.watch = KeyWatch(comm_id, key, self.thresholds)
        self._to_analyse = list(rows)
        self._analysed_at = 0.0
        self._update_figures()

    def set_divergences(self, intervals: list[tuple[float, float | None]]) -> None:
        self.plot.set_divergences(intervals)

    def show_event(self, seq: int) -> bool:
        """Select the row a timeline event carried (the way back from the timeline)."""
        row = self.model.row_of_event(seq)
        if row is None:
            return False
        idx = self.model.index(row, 0)
        self.table.selectRow(row)
        self.table.scrollTo(idx)
        return True

    # -- refresh ----------------------------------------------------------------------------

    def refresh(self) -> None:
        if self.comm_id is None or self.key is None:
            return
        new, total, dropped = self.history.since(self.comm_id, self.key, self._seen)
        if total != self._seen:
            self._seen = total
            self.model.append(new)
            self.model.trim_head(total - dropped)
            known = len(self.plot.series)
            # the plot is drawn half a tick after the table: two small repaints, not one big one
            self.plot.append(new, schedule=False)
            if not self._plot_timer.isActive():
                self._plot_timer.start(max(1, self._timer.interval() // 2))
            if len(self.plot.series) != known:
                self._set_title()
            self._to_analyse.extend(new)
        if self._to_analyse and self.watch is not None:
            # bounded work per tick: a 100,000-value key is analysed over many ticks, the window
            # stays responsive meanwhile (and says it is still analysing)
            budget = time.monotonic() + self.analyse_budget_s
            done = 0
            while done < len(self._to_analyse) and time.monotonic() < budget:
                self.watch.feed(self._to_analyse[done:done + 500])
                done += 500
            del self._to_analyse[:done]
            now = time.monotonic()
            if not self._to_analyse or now - self._analysed_at >= self.figures_every_s:
                self._analysed_at = now
                self._update_figures()

    def _on_tab(self, _index: int) -> None:
        self._update_figures()

    def _set_title(self) -> None:
        self.title.setText(f"comm {self.comm_id} · key {self.key!r} &nbsp; {self.plot.legend_html()}")

    @property
    def analysed(self) -> bool:
        """The findings and latency shown cover every entry the pane holds."""
        return not self._to_analyse

    def _update_figures(self) -> None:
        if self.comm_id is None or self.key is None or self.watch is None:
            return
        stats = self.history.stats(self.comm_id, self.key)
        total = self.history.summary()
        behind = f" · analysing, {len(self._to_analyse)} to go" if self._to_analyse else ""
        self.dropped.setText(f"{stats.entries} value(s) kept · {stats.dropped} older dropped for this key · "
                             f"{total['dropped']} dropped in all (history limit {total['max_bytes'] / 2**20:.0f} MiB)"
                             + behind)
        # the hidden tabs are brought up to date when shown (tab change): no work for what no one sees
        if self.latency.isVisible() or not self.isVisible():
            self.latency.set_block(self.watch.latency())
        findings = self.watch.findings()
        self.tabs.setTabText(2, f"Findings ({len(findings)})")
        if self.findings.isVisible() or not self.isVisible():
            self.findings.clear()
            for f in findings:
                self.findings.addItem(f"{f.kind} [{f.severity}] {f.source}: {f.detail}")

    def _on_double_click(self, index: QModelIndex) -> None:
        e = self.model.data(index, EntryRole)
        if isinstance(e, Entry) and e.event_seq is not None:
            self.jump_to_event.emit(e.event_seq)
