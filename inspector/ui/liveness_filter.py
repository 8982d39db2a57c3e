"""The tree's liveness filter: show only the comms of one liveness class."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QWidget

from ..liveness import CLASSES

ANY = "Any liveness"
TIPS = {
    "live-bound": "topology, state and a live kernel comm",
    "replay-only": "state and topology, but the kernel is gone or never opened the comm",
    "orphaned": "state without topology (or the reverse) past the daemon's cleanup",
    "not-yet-loaded": "topology before state: the normal order on v4, for a moment",
}


def liveness_filter(parent: QWidget, on_change: Callable[[str], None]) -> QComboBox:
    """A combo box calling `on_change(class)` ("" for every comm)."""
    box = QComboBox(parent)
    box.setToolTip("Show only comms of one liveness class")
    box.addItem(ANY, "")
    for i, cls in enumerate(CLASSES, start=1):
        box.addItem(cls, cls)
        box.setItemData(i, TIPS.get(cls, ""), Qt.ItemDataRole.ToolTipRole)
    box.currentIndexChanged.connect(lambda i: on_change(box.itemData(i) or ""))
    return box
