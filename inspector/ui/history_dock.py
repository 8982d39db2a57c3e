"""The history pane in the main window: a dock tabbed beside the timeline that follows the tree.

Selecting a comm's state key in the tree shows that key's story (a comm node keeps the key shown
when it is the same comm, else shows its `value` or first key). A history row's double-click
selects its event in the timeline; selecting a timeline event selects the row it carried. The
divergence intervals the session's history holds for the key are shaded in the plot.

The window makes one with `install(window)`, and hands it each session with `attach(session)`.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, QTimer
from PySide6.QtWidgets import QDockWidget, QMainWindow

from ..key_history import KeyHistory
from .history_pane import HistoryPane
from .timeline import EventRole


class HistoryDock(QDockWidget):
    """A `HistoryPane` over the attached session's key history."""

    def __init__(self, window: Any) -> None:
        super().__init__("Key history", window)
        self.setObjectName("history-dock")
        self.window_ = window
        self.session: Any = None
        self.pane = HistoryPane(KeyHistory(), self)
        self.setWidget(self.pane)
        self.pane.jump_to_event.connect(self.jump_to_event)
        self._intervals: list[tuple[float, float | None]] = []
        # shading follows the session's divergence transitions (cheap: compared, redrawn on change)
        self._shade_timer = QTimer(self)
        self._shade_timer.setInterval(500)
        self._shade_timer.timeout.connect(self._update_shading)
        self._shade_timer.start()

    # -- the session ----------------------------------------------------------------------------

    def attach(self, session: Any) -> None:
        """Show this session's key history (a session without one leaves the pane empty)."""
        self.session = session
        hist = getattr(session, "history", None)
        self.pane.history = hist.history if hist is not None else KeyHistory()
        self.pane.comm_id = self.pane.key = None
        self.pane.model.reset([])
        self.pane.plot.clear_key()
        self.pane.title.setText("select a comm key in the tree")
        self._intervals = []

    def set_key(self, comm_id: str, key: str) -> None:
        if (comm_id, key) == (self.pane.comm_id, self.pane.key):
            return
        self.pane.set_key(comm_id, key)
        self._intervals = []
        self._update_shading()

    # -- the tree and the timeline ----------------------------------------------------------------

    def on_tree_current(self, current: QModelIndex, _prev: QModelIndex) -> None:
        w = self.window_
        node = w.model.node(w.proxy.mapToSource(current)) if current.isValid() else None
        if node is None:
            return
        if node.kind == "statekey" and isinstance(node.ref, tuple) and len(node.ref) >= 2:
            self.set_key(str(node.ref[0]), str(node.ref[1]))
        elif node.kind == "comm":
            cid = node.key
            if cid == self.pane.comm_id:
                return  # the way back from the timeline selects the comm: keep its key
            keys = self.pane.history.keys(cid)
            self.set_key(cid, "value" if "value" in keys or not keys else keys[0])

    def jump_to_event(self, seq: int) -> bool:
        """Select the timeline event `seq` (a history row's double-click)."""
        tl = self.window_.timeline
        tl.model.flush()  # the timeline batches events: the newest may not be in it yet
        for row in range(tl.model.rowCount() - 1, -1, -1):
            e = tl.model.event_at(row)
            if e is not None and e.seq == seq:
                idx = tl.proxy.mapFromSource(tl.model.index(row, 0))
                if not idx.isValid():
                    self.window_.statusBar().showMessage(f"Event {seq} is hidden by the timeline's filter", 4000)
                    return False
                tl.follow.setChecked(False)  # the jump must not be scrolled away by the next event
                tl.table.selectionModel().setCurrentIndex(
                    idx, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
                tl.table.scrollTo(idx)
                return True
        self.window_.statusBar().showMessage(f"Event {seq} is no longer in the timeline", 4000)
        return False

    def on_timeline_current(self, current: QModelIndex, _prev: QModelIndex) -> None:
        e = current.data(EventRole) if current.isValid() else None
        if e is not None:
            self.pane.show_event(e.seq)

    def _update_shading(self) -> None:
        hist = getattr(self.session, "history", None)
        if hist is None or self.pane.comm_id is None or self.pane.key is None:
            return
        now = hist.divergence_intervals(self.pane.comm_id, self.pane.key)
        if now != self._intervals:
            self._intervals = now
            self.pane.set_divergences(now)


def install(window: QMainWindow) -> HistoryDock:
    """Dock the history pane under the tree, detail and timeline (the tree keeps its width), and
    follow the tree and the timeline of `window` (the inspector's main window)."""
    dock = HistoryDock(window)
    dock.setAllowedAreas(Qt.DockWidgetArea.BottomDockWidgetArea | Qt.DockWidgetArea.RightDockWidgetArea)
    window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
    w: Any = window
    w.tree.selectionModel().currentChanged.connect(dock.on_tree_current)
    w.timeline.table.selectionModel().currentRowChanged.connect(dock.on_timeline_current)
    return dock
