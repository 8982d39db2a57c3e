"""The scrubber over a recording: a slider over its events above the window's own timeline of
those events (the same view a live session shows: kind filters, search, the event's data),
kept in step (moving one selects the other), announcing the chosen event's seq.

The timeline formats a row only when it is shown, so a recording of hundreds of thousands of
events opens at once; `extend` adds the events the recording's pass replays after the window
opened."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import QModelIndex, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from .timeline import TimelineView


class Scrubber(QWidget):
    """`seqChanged(seq)` whenever the slider or the timeline selection moves to another event."""

    seqChanged = Signal(int)

    def __init__(self, events: Iterable[Any], start_mono: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.events: list[Any] = []  # the replayed log without frames: seq, t, kind, summary
        self._seqs: list[int] = []
        self.start_mono = start_mono
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setObjectName("scrubber")
        self.label = QLabel(self)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.timeline = TimelineView(self, max_rows=None)  # a recording shows every event
        self.timeline.setObjectName("timeline")
        self.timeline.follow.setChecked(False)  # rows the pass adds must not move the view
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
        self.timeline.table.selectionModel().currentRowChanged.connect(self._from_table)
        self.extend(list(events))

    def extend(self, new: list[Any]) -> None:
        """Append events (in seq order) as the recording's pass reaches them."""
        if not new:
            return
        self.events.extend(new)
        self._seqs.extend(e.seq for e in new)
        self.timeline.model.extend(new)
        self._moving = True  # a longer range is not a move
        try:
            self.slider.setRange(0, max(0, len(self.events) - 1))
            self.slider.setPageStep(max(1, len(self.events) // 20))
        finally:
            self._moving = False

    @property
    def seq(self) -> int:
        return self.events[self.slider.value()].seq if self.events else 0

    def current_row(self) -> int:
        """The event the timeline has selected (an index into `events`), or -1."""
        idx = self.timeline.table.currentIndex()
        return self.timeline.proxy.mapToSource(idx).row() if idx.isValid() else -1

    def select_row(self, row: int) -> None:
        """Select event `events[row]` in the timeline (hidden by its filters: nothing selected)."""
        src = self.timeline.model.index(row, 0)
        idx = self.timeline.proxy.mapFromSource(src)
        table = self.timeline.table
        if idx.isValid():
            table.setCurrentIndex(idx)
            table.scrollTo(idx)
        else:
            table.selectionModel().clearCurrentIndex()

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
            self.select_row(row)
            self._announce(row)
        finally:
            self._moving = False

    def _from_table(self, current: QModelIndex, _prev: QModelIndex) -> None:
        if self._moving or not current.isValid():
            return
        row = self.timeline.proxy.mapToSource(current).row()
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
