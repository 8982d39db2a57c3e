"""The scrubber over a recording: a slider over its events and the timeline of those events,
kept in step (moving one selects the other), announcing the chosen event's seq.

The timeline is a list view over a model that formats a row only when it is shown, so a
recording of hundreds of thousands of events opens at once; `extend` adds the events the
recording's pass replays after the window opened."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListView, QSlider, QVBoxLayout, QWidget

SEQ_ROLE = Qt.ItemDataRole.UserRole


class EventListModel(QAbstractListModel):
    """One row per event (seq, time since the start, kind, summary), formatted on demand."""

    def __init__(self, events: list[Any], start_mono: float, parent: Any = None) -> None:
        super().__init__(parent)
        self.events = events
        self.start_mono = start_mono

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.events)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.events):
            return None
        e = self.events[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{e.seq:>6}  {e.t - self.start_mono:8.3f} s  {e.kind:<12} {e.summary}"
        if role == SEQ_ROLE:
            return e.seq
        return None

    def extend(self, new: list[Any]) -> None:
        if not new:
            return
        n = len(self.events)
        self.beginInsertRows(QModelIndex(), n, n + len(new) - 1)
        self.events.extend(new)
        self.endInsertRows()


class EventListView(QListView):
    """A list view with the row-number API of a list widget."""

    def currentRow(self) -> int:
        return self.currentIndex().row()

    def setCurrentRow(self, row: int) -> None:
        self.setCurrentIndex(self.model().index(row, 0))


class Scrubber(QWidget):
    """`seqChanged(seq)` whenever the slider or the timeline selection moves to another event."""

    seqChanged = Signal(int)

    def __init__(self, events: Iterable[Any], start_mono: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = EventListModel([], start_mono, self)
        self.events = self.model.events  # the replayed log: seq, t, kind, summary
        self._seqs: list[int] = []
        self.start_mono = start_mono
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setObjectName("scrubber")
        self.label = QLabel(self)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.timeline = EventListView(self)
        self.timeline.setObjectName("timeline")
        self.timeline.setUniformItemSizes(True)
        self.timeline.setModel(self.model)
        top = QHBoxLayout()
        top.addWidget(QLabel("Event", self))
        top.addWidget(self.slider, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.label)
        lay.addWidget(self.timeline, 1)
        self._moving = False
        self.slider.valueChanged.connect(self._from_slider)
        self.timeline.selectionModel().currentRowChanged.connect(lambda cur, _prev: self._from_timeline(cur.row()))
        self.extend(list(events))

    def extend(self, new: list[Any]) -> None:
        """Append events (in seq order) as the recording's pass reaches them."""
        if not new:
            return
        self.model.extend(new)
        self._seqs.extend(e.seq for e in new)
        self._moving = True  # a longer range is not a move
        try:
            self.slider.setRange(0, max(0, len(self.events) - 1))
            self.slider.setPageStep(max(1, len(self.events) // 20))
        finally:
            self._moving = False

    @property
    def seq(self) -> int:
        return self.events[self.slider.value()].seq if self.events else 0

    def select_seq(self, seq: int) -> None:
        """Move both to the last event at or before `seq`."""
        row = max(0, bisect.bisect_right(self._seqs, seq) - 1)
        self.slider.setValue(row)
        self._from_slider(row)

    def _from_slider(self, row: int) -> None:
        if self._moving or not self.events:
            return
        self._moving = True
        try:
            index = self.model.index(row, 0)
            self.timeline.setCurrentIndex(index)
            self.timeline.scrollTo(index)
            self._announce(row)
        finally:
            self._moving = False

    def _from_timeline(self, row: int) -> None:
        if self._moving or row < 0:
            return
        self._moving = True
        try:
            self.slider.setValue(row)
            self._announce(row)
        finally:
            self._moving = False

    def _announce(self, row: int) -> None:
        e = self.events[row]
        self.label.setText(f"event {e.seq} of {self.events[-1].seq} · {e.t - self.start_mono:.3f} s · {e.summary}")
        self.seqChanged.emit(e.seq)
