"""The scrubber over a recording: a slider over its events and the timeline of those events,
kept in step (moving one selects the other), announcing the chosen event's seq."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QSlider, QVBoxLayout, QWidget


class Scrubber(QWidget):
    """`seqChanged(seq)` whenever the slider or the timeline selection moves to another event."""

    seqChanged = Signal(int)

    def __init__(self, events: list[Any], start_mono: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.events = events  # the replayed log: seq, t, kind, summary
        self.start_mono = start_mono
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setObjectName("scrubber")
        self.slider.setRange(0, max(0, len(events) - 1))
        self.slider.setPageStep(max(1, len(events) // 20))
        self.label = QLabel(self)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.timeline = QListWidget(self)
        self.timeline.setObjectName("timeline")
        self.timeline.setUniformItemSizes(True)
        for e in events:
            item = QListWidgetItem(f"{e.seq:>6}  {e.t - start_mono:8.3f} s  {e.kind:<12} {e.summary}")
            item.setData(Qt.ItemDataRole.UserRole, e.seq)
            self.timeline.addItem(item)
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
        self.timeline.currentRowChanged.connect(self._from_timeline)

    @property
    def seq(self) -> int:
        return self.events[self.slider.value()].seq if self.events else 0

    def select_seq(self, seq: int) -> None:
        """Move both to the last event at or before `seq`."""
        row = max((i for i, e in enumerate(self.events) if e.seq <= seq), default=0)
        self.slider.setValue(row)
        self._from_slider(row)

    def _from_slider(self, row: int) -> None:
        if self._moving or not self.events:
            return
        self._moving = True
        try:
            self.timeline.setCurrentRow(row)
            self.timeline.scrollToItem(self.timeline.item(row))
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
