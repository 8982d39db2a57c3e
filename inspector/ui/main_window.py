"""The inspector window: toolbar, document tree, detail pane, timeline and status bar."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

import shiboken6
from PySide6.QtCore import QEvent, QItemSelectionModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QSystemTrayIcon,
    QTextBrowser,
    QTextEdit,
    QToolBar,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from .. import __version__
from ..collector import freeze_survivors
from ..errors import InspectorError
from ..integrity import with_saved
from ..snapshot import Snapshot
from . import history_dock, sync_health
from . import theme as th
from .ages import aged
from .attach import AttachView
from .controller import SessionController, make_session
from .detail import DetailPane
from .liveness_filter import liveness_filter
from .recent import RecentConnections
from .timeline import TimelineView
from .tree_fill import FillPlan
from .tree_model import DocumentTreeModel, TreeFilterProxy
from .tree_nodes import LIVENESS_COL, WRITER_COL, Node, plural

log = logging.getLogger(__name__)

# A group with more rows than this opens only when the user opens it: laying out 1,000 cells
# takes the view ~60 ms (10,000: ~0.4 s), and again whenever rows are added under the open group
AUTO_EXPAND_ROWS = 500

STATE_COLOURS = {"connecting": "#e8a317", "syncing": "#3574f0", "live": "#1e8e3e", "disconnected": "#9aa0a6",
                 "error": "#d93025", "closed": "#9aa0a6", "idle": "#9aa0a6"}


class InspectorWindow(QMainWindow):
    attached = Signal(str, str)
    divergence_notified = Signal(list)  # comm ids that newly diverged while the window was in the background

    def __init__(self, recent: RecentConnections | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("")  # Qt adds the application's display name; a room's name goes before it
        self.resize(1280, 820)
        self.setMinimumSize(800, 560)
        self.recent = recent or RecentConnections()
        self.controller = SessionController(self)
        self.controller.snapshot_ready.connect(self._on_snapshot_ready)
        self.controller.state_changed.connect(self._on_state)
        self.controller.countdown.connect(self._on_countdown)
        self.state = "idle"
        self.state_detail = ""
        self.snapshot: Snapshot | None = None
        self.socket_path = ""
        self.notebook_id = ""
        self.session_options: Any = None  # argparse.Namespace of the gui command (engine options)
        self.demo_panel: Any = None  # the demo's fault controls (`add_demo_panel`), only in demo mode
        self.paused = False
        self._held: Snapshot | None = None  # the newest snapshot while paused
        self._held_count = 0
        self._diverged_ids: set[str] = set()
        self._was_live = False  # the current target reached "live" (only then is it remembered)
        self._last_problem = ""  # the connection error last logged (a retry failing alike is not)
        self._expanded_before_filter: set[str] | None = None
        self.tray: Any = None
        self.notifications: list[str] = []  # what was announced, newest last (also for tests)

        # tree
        self.model = DocumentTreeModel(self)
        self.proxy = TreeFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.tree = QTreeView(self)
        self.tree.setModel(self.proxy)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setAnimated(False)
        self.tree.setAllColumnsShowFocus(True)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideRight)
        hh = self.tree.header()
        hh.setStretchLastSection(False)
        hh.setMinimumSectionSize(40)
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        hh.moveSection(hh.visualIndex(LIVENESS_COL), 3)  # Liveness reads next to Info
        self._user_sized: set[int] = set()
        hh.sectionResized.connect(self._on_section_resized)
        self._header_pressed = False
        self._header_viewport = hh.viewport()
        self._header_viewport.installEventFilter(self)
        self.tree.selectionModel().currentChanged.connect(self._on_tree_current)
        self._detail_path: str | None = None  # the node the detail pane shows
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        self._tree_viewport = self.tree.viewport()
        self._tree_viewport.installEventFilter(self)
        # says why the tree is empty (nothing diverged, nothing matches) instead of a blank pane
        self.empty_label = QLabel(self.tree.viewport())
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.empty_label.setStyleSheet(f"color: {th.theme().muted_fg.name()}; padding: 24px;")
        self.empty_label.hide()
        for sig in (self.proxy.rowsInserted, self.proxy.rowsRemoved, self.proxy.modelReset, self.proxy.layoutChanged):
            sig.connect(self._update_empty)

        self.detail = DetailPane(self)
        self.detail.compare.setTabKeyNavigation(False)  # Tab leaves the table, arrows move in it
        self._compare_viewport = self.detail.compare.viewport()
        self._compare_viewport.installEventFilter(self)
        self.detail.compare.model().columnsInserted.connect(lambda *_: self._fit_compare())
        self.detail.compare.model().modelReset.connect(lambda *_: self._fit_compare())
        self.detail.references.navigate.connect(self.select_path)  # jump to a reference's other end
        self.detail.buffers.blob_bytes = self._blob_bytes
        self.timeline = TimelineView(self)
        self.timeline.table.setTabKeyNavigation(False)
        self.timeline.target_selected.connect(self.select_path)

        # a banner over the tree says why there is nothing live (error text, retry countdown)
        self.banner = QLabel(self)
        self.banner.setWordWrap(True)
        self.banner.setTextFormat(Qt.TextFormat.RichText)
        t = th.theme()
        self.banner.setStyleSheet(f"QLabel {{ background: {t.diverged_bg.name()}; color: {t.diverged_fg.name()};"
                                  " padding: 8px 12px; border-radius: 4px; }")
        self.banner.hide()
        self.pause_banner = QLabel(self)
        self.pause_banner.setStyleSheet(f"QLabel {{ background: {t.pending_bg.name()}; color: {t.pending_fg.name()};"
                                        " padding: 6px 12px; border-radius: 4px; }")
        self.pause_banner.hide()
        left = QWidget(self)
        left_lay = QVBoxLayout(left)
        left_lay.setContentsMargins(0, 0, 0, 0)
        left_lay.setSpacing(4)
        left_lay.addWidget(self.banner)
        left_lay.addWidget(self.pause_banner)
        left_lay.addWidget(self.tree, 1)
        self.top_split = top = QSplitter(Qt.Orientation.Horizontal, self)
        top.addWidget(left)
        top.addWidget(self.detail)
        top.setStretchFactor(0, 3)
        top.setStretchFactor(1, 2)
        top.setChildrenCollapsible(False)
        left.setMinimumWidth(380)
        self.detail.setMinimumWidth(300)
        self.main_split = QSplitter(Qt.Orientation.Vertical, self)
        self.main_split.addWidget(top)
        self.main_split.addWidget(self.timeline)
        self.main_split.setStretchFactor(0, 3)
        self.main_split.setStretchFactor(1, 1)
        self.main_split.setChildrenCollapsible(False)
        self._sized_splitters = False

        self.attach_view = AttachView(self.recent, self)
        self.attach_view.attach_requested.connect(lambda s, n: self.attach(s, n))
        self.attach_view.back_requested.connect(self.show_main)
        self.stack = QStackedWidget(self)
        self.stack.addWidget(self.attach_view)
        self.stack.addWidget(self.main_split)
        self.setCentralWidget(self.stack)

        self._build_actions()
        self.history_dock = history_dock.install(self)  # the key's story, following the tree
        self._build_menus()
        self._build_status()
        self.sync_health = sync_health.install(self)  # per-document sync health in the status bar
        # the flight recorder (ui/recorder_bar.py): Record, Save the last N minutes of the ring
        from .recorder_bar import RecorderBar

        self.recorder_bar = RecorderBar(self, lambda: self.controller.session,
                                        lambda text: self.statusBar().showMessage(text, 6000))
        self.addToolBar(self.recorder_bar)
        self.controller.state_changed.connect(lambda *_: self.recorder_bar.refresh())
        self._set_state("idle", "not attached")
        # ages count on while the room is idle: the shown snapshot is re-aged once a second
        self.fill = FillPlan()
        self._fill_target: Snapshot | None = None
        self._expand_after_fill: list[str] = []
        self._fill_timer = QTimer(self)
        self._fill_timer.setSingleShot(True)
        self._fill_timer.timeout.connect(self._fill_step)
        self._age_timer = QTimer(self)
        self._age_timer.setInterval(1000)
        self._age_timer.timeout.connect(self._tick_ages)
        self._age_timer.start()

    # -- chrome ------------------------------------------------------------------------------------

    def _act(self, text: str, slot: Any, shortcut: Any = None, tip: str = "", checkable: bool = False) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        a.setToolTip(f"{tip or text}" + (f" ({QKeySequence(shortcut).toString()})" if shortcut else ""))
        a.setStatusTip(tip or text)
        a.setCheckable(checkable)
        (a.toggled if checkable else a.triggered).connect(slot)
        self.addAction(a)  # every shortcut works wherever the focus is in the window
        return a

    def _build_actions(self) -> None:
        tb = QToolBar("Main", self)
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.addToolBar(tb)
        self.toolbar = tb
        act = self._act

        self.act_attach = act("Attach…", self.show_attach, QKeySequence.StandardKey.Open, "Choose a daemon and room")
        self.act_reconnect = act("Reconnect", self.reconnect, "Ctrl+R", "Drop the connection and join again")
        self.act_refresh = act("Refresh", self.refresh, QKeySequence.StandardKey.Refresh,
                               "Rediscover daemons / redraw now")
        self.act_only_div = act("Only divergent", self.set_only_divergent, "Ctrl+D",
                                "Show only diverged and pending comms", checkable=True)
        self.act_pause = act("Pause", self.set_paused, "Ctrl+P",
                             "Freeze the view; the room keeps syncing underneath", checkable=True)
        self.act_prev = act("◀ Prev", lambda: self.goto_divergence(-1), "Shift+F8", "Previous divergence")
        self.act_next = act("Next ▶", lambda: self.goto_divergence(1), "F8", "Next divergence")
        self.act_copy = act("Copy", self.copy_focused, QKeySequence.StandardKey.Copy,
                            "Copy what has the focus: selected text, a compare cell, an event, the tree node")
        self.act_copy_value = act("Copy value", self.copy_value, "Ctrl+Shift+C", "Copy the selected value")
        self.act_copy_key = act("Copy key", self.copy_key, None, "Copy the selected key's name")
        self.act_copy_path = act("Copy path", self.copy_path, "Ctrl+Alt+C", "Copy the selected node's document path")
        self.act_copy_json = act("Copy node as JSON", self.copy_node, None, "Copy the selected node as JSON")
        self.act_expand = act("Expand all", lambda: self.tree.expandToDepth(1), "Ctrl+E", "Expand cells and comms")
        self.act_collapse = act("Collapse", self.tree.collapseAll, "Ctrl+Shift+E", "Collapse everything")
        self.act_find = act("Find", self._focus_search, QKeySequence.StandardKey.Find, "Search the tree")
        self.act_focus_tree = act("Focus the tree", lambda: self.focus_pane("tree"), "Ctrl+1")
        self.act_focus_detail = act("Focus the detail pane", lambda: self.focus_pane("detail"), "Ctrl+2")
        self.act_focus_timeline = act("Focus the timeline", lambda: self.focus_pane("timeline"), "Ctrl+3")
        self.act_escape = act("Clear search / back", self._escape, "Esc")
        self.act_escape.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.act_shortcuts = act("Keyboard shortcuts", self.show_shortcuts, "F1")
        self.act_verdicts = act("What the verdicts mean", self.show_verdicts, None)
        self.act_about = act("About Runtimed Inspector", self.show_about, None)
        self.act_quit = act("Quit", self.close, QKeySequence.StandardKey.Quit)
        for a in (self.act_attach, self.act_reconnect):
            tb.addAction(a)
        tb.addSeparator()
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Search id, model, key or value  (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(180)
        self.search.setMaximumWidth(380)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(150)
        self._search_timer.timeout.connect(lambda: self._apply_search(self.search.text()))
        self.search.textChanged.connect(lambda _t: self._search_timer.start())
        tb.addWidget(self.search)
        tb.addAction(self.act_only_div)
        self.liveness_filter = liveness_filter(self, self._set_liveness_filter)
        tb.addWidget(self.liveness_filter)
        tb.addSeparator()
        tb.addAction(self.act_prev)
        tb.addAction(self.act_next)
        tb.addSeparator()
        tb.addAction(self.act_pause)
        spacer = QWidget(self)
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        tb.addWidget(spacer)
        self.conn_label = QLabel(self)
        self.conn_label.setTextFormat(Qt.TextFormat.RichText)
        self.conn_label.setContentsMargins(8, 0, 10, 0)
        tb.addWidget(self.conn_label)
        sep = QAction(self)
        sep.setSeparator(True)
        for a in (self.act_copy_value, self.act_copy_key, self.act_copy_path, self.act_copy_json, sep,
                  self.act_next, self.act_prev):
            self.tree.addAction(a)

    def _build_menus(self) -> None:
        mb = self.menuBar()
        sections = {
            "&File": (self.act_attach, self.act_reconnect, None, self.act_quit),
            "&Edit": (self.act_copy, self.act_copy_value, self.act_copy_key, self.act_copy_path, self.act_copy_json,
                      None, self.act_find),
            "&View": (self.act_only_div, self.act_pause, self.history_dock.toggleViewAction(), None,
                      self.act_expand, self.act_collapse, None,
                      self.act_focus_tree, self.act_focus_detail, self.act_focus_timeline, None, self.act_refresh),
            "&Go": (self.act_next, self.act_prev),
            "&Help": (self.act_shortcuts, self.act_verdicts, None, self.act_about),
        }
        self.menus: dict[str, Any] = {}
        for title, actions in sections.items():
            menu = mb.addMenu(title)
            for a in actions:
                if a is None:
                    menu.addSeparator()
                else:
                    menu.addAction(a)
            self.menus[title.replace("&", "")] = menu

    def _build_status(self) -> None:
        sb = self.statusBar()
        self.status_conn = QLabel(self)
        self.status_doc = QLabel(self)
        # the room summary gives way first when the window is narrow (its tooltip keeps it whole)
        self.status_doc.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status_conn.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status_div = QLabel(self)
        self.status_div.setTextFormat(Qt.TextFormat.RichText)
        self.status_traffic = QLabel(self)
        self.status_traffic.setStyleSheet(f"color: {th.theme().muted_fg.name()}")
        self.status_traffic.setToolTip("frames and bytes received (↓) and sent (↑) on this connection")
        sb.addWidget(self.status_conn, 2)
        sb.addWidget(self.status_doc, 3)
        sb.addPermanentWidget(self.status_div)
        sb.addPermanentWidget(self.status_traffic)
        self._traffic_timer = QTimer(self)
        self._traffic_timer.setInterval(1000)
        self._traffic_timer.timeout.connect(self._update_traffic)
        self._traffic_timer.start()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not self._sized_splitters:
            self._sized_splitters = True
            self._size_splitters()
            # below 900 px of height the docked key history squeezes the tree and covers the
            # status bar: it starts hidden there (View ▸ Key history shows it)
            if self.height() < 900:
                self.history_dock.hide()

    def _size_splitters(self) -> None:
        # proportional sizes: fixed pixel sizes squeezed the tree at 1024 px and wasted room at 1600
        w, h = max(self.width(), 800), max(self.height(), 560)
        self.top_split.setSizes([int(w * 0.58), int(w * 0.42)])
        self.main_split.setSizes([int(h * 0.66), int(h * 0.34)])

    # -- tree columns ----------------------------------------------------------------------------------

    def eventFilter(self, obj: Any, event: Any) -> bool:
        # the watched widgets are compared as stored wrappers: asking a view for its viewport
        # here would touch C++ objects already gone while the window is torn down
        if obj is self.__dict__.get("_tree_viewport") and event.type() == QEvent.Type.Resize:
            self._fit_tree_columns()
            if "empty_label" in self.__dict__:
                self.empty_label.setGeometry(obj.rect())
        elif obj is self.__dict__.get("_compare_viewport") and event.type() == QEvent.Type.Resize:
            self._fit_compare()
        elif obj is self.__dict__.get("_header_viewport") and event.type() in (QEvent.Type.MouseButtonPress,
                                                                                QEvent.Type.MouseButtonRelease):
            self._header_pressed = event.type() == QEvent.Type.MouseButtonPress
        return super().eventFilter(obj, event)

    def _on_section_resized(self, col: int, _old: int, new: int) -> None:
        if self._header_pressed and not self._fitting and col != 1 and new > 0:
            self._user_sized.add(col)  # a column the user dragged keeps its width

    _fitting = False

    def _fit_tree_columns(self) -> None:
        """Name and Info get widths in proportion to the tree; Value always keeps the rest, at
        least 30 %. Writer, then Id, are shown only while they leave Value that much."""
        if not shiboken6.isValid(self.tree):
            return
        width = self.tree.viewport().width()
        if width <= 0:
            return
        hh = self.tree.header()
        want = {0: max(190, min(300, int(width * 0.27))), 2: max(110, min(200, int(width * 0.16))),
                WRITER_COL: 110, 3: 110, LIVENESS_COL: 100}
        for col in want:
            if col in self._user_sized:
                want[col] = hh.sectionSize(col)
        value_min = max(150, int(width * 0.3))
        used = want[0] + want[2]
        show_liveness = self._has_liveness() and width - used - want[LIVENESS_COL] >= value_min
        used += want[LIVENESS_COL] if show_liveness else 0
        show_writer = self._has_writers() and width - used - want[WRITER_COL] >= value_min
        used += want[WRITER_COL] if show_writer else 0
        show_id = width - used - want[3] >= value_min
        self._fitting = True
        try:
            self.tree.setColumnHidden(WRITER_COL, not show_writer)
            self.tree.setColumnHidden(LIVENESS_COL, not show_liveness)
            self.tree.setColumnHidden(3, not show_id)
            for col, w in want.items():
                hh.resizeSection(col, w)
        finally:
            self._fitting = False

    def _fit_compare(self) -> None:
        """The compare table's key and age columns take a share of the pane, never all of it:
        sized to their contents they left the views' values a few pixels once a Kernel column
        appeared."""
        table = self.detail.compare
        if not shiboken6.isValid(table):
            return  # the window is being torn down
        n = table.columnCount()
        width = table.viewport().width()
        if n < 3 or width <= 0:
            return
        hh = table.horizontalHeader()
        last = n - 1
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        hh.resizeSection(0, max(90, min(170, int(width * 0.24))))
        if not table.isColumnHidden(last):
            hh.setSectionResizeMode(last, QHeaderView.ResizeMode.Interactive)
            # room for the ages when the pane has it; at 1024 px the values come first
            cap = int(width * (0.3 if width >= 500 else 0.22))
            hh.resizeSection(last, max(64, min(max(table.sizeHintForColumn(last) + 12, hh.sectionSizeHint(last)),
                                               cap)))

    def _has_liveness(self) -> bool:
        comms = self.model.node_at("comms")
        return comms is not None and any(c.liveness for c in comms.children)

    def _has_writers(self) -> bool:
        comms = self.model.node_at("comms")
        return comms is not None and any(c.writer for c in comms.children)

    def value_column_width(self) -> int:
        return self.tree.header().sectionSize(1)

    # -- attaching -----------------------------------------------------------------------------------

    def show_attach(self) -> None:
        here = self.controller.session is not None and self.notebook_id
        self.attach_view.set_back_target(os.path.basename(self.notebook_id) or self.notebook_id if here else None)
        self.stack.setCurrentWidget(self.attach_view)
        self.attach_view.load_recent()
        self.attach_view.refresh()

    def show_main(self) -> None:
        if self.controller.session is not None:
            self.stack.setCurrentWidget(self.main_split)
            self.tree.setFocus()

    def attach(self, socket_path: str, notebook_id: str, session: Any = None) -> None:
        """Join `notebook_id` on `socket_path` (or adopt a prepared session)."""
        self._attach_task = asyncio.get_event_loop().create_task(self._attach(socket_path, notebook_id, session))

    async def _attach(self, socket_path: str, notebook_id: str, session: Any) -> bool:
        same = socket_path == self.socket_path and notebook_id == self.notebook_id
        if session is None and not same:
            # check the new target before giving up the one that works
            problem = await self._check_target(socket_path, notebook_id)
            if problem is not None:
                log.warning("not attaching to %s on %s: %s", notebook_id, socket_path, problem)
                self.recent.remove(socket_path, notebook_id)
                self.attach_view.show_error(f"Cannot attach to {notebook_id}: {problem}")
                if self.stack.currentWidget() is not self.attach_view:
                    self.show_attach()
                    self.attach_view.show_error(f"Cannot attach to {notebook_id}: {problem}")
                kept = f"Still attached to {os.path.basename(self.notebook_id)}. " if self.controller.session else ""
                self.statusBar().showMessage(f"{kept}Cannot attach: {problem}", 8000)
                return False
        await self.controller.stop()
        if not same:
            self.model.clear()  # a different room: start from an empty tree
            self._fill_target = None  # and no slice of the old room's left to show
            self._expand_after_fill = []
            self._fill_timer.stop()
            self.detail.show_node(None)
            self._diverged_ids = set()
        self.socket_path, self.notebook_id = socket_path, notebook_id
        self._was_live = False
        self.attach_view.show_error("")
        self.setWindowTitle(os.path.basename(notebook_id) or notebook_id)
        self.stack.setCurrentWidget(self.main_split)
        session = session or make_session(socket_path, notebook_id, self.session_options)
        self.timeline.attach(session.log)
        self.history_dock.attach(session)
        self.detail.fetch_blob = self._fetch_blob
        self.detail.key_views = self._key_views
        self.controller.start(session)
        log.info("attaching to %s on %s", notebook_id, socket_path)
        self.attached.emit(socket_path, notebook_id)
        return True

    async def _check_target(self, socket_path: str, notebook_id: str) -> str | None:
        """Why `notebook_id` on `socket_path` cannot be joined, or None when it can."""
        from ..cli import check_kernel_connection
        from ..pool import probe

        allow_other = bool(getattr(self.session_options, "allow_other_user", False))
        try:
            if self.session_options is not None:
                check_kernel_connection(self.session_options)  # a wrong path: a message, not a traceback
            res = await probe(socket_path, allow_other_user=allow_other, timeout=3.0)
        except (InspectorError, OSError) as exc:
            return str(exc) or type(exc).__name__
        if not res.supported:
            return f"the daemon speaks protocol {res.protocol_version}, which this inspector does not"
        if res.room(notebook_id) is None:
            return f"no room '{notebook_id}' on {socket_path} (the inspector never creates rooms)"
        return None

    async def _fetch_blob(self, digest: str) -> Any:
        session = self.controller.session
        if session is None or session.resolver is None:
            raise RuntimeError("not connected")
        return await session.resolver.fetch_content(digest)

    def _key_views(self, comm_id: str) -> Any:
        # every named view of the comm (the session's divergence binding); None without an engine
        div = getattr(self.controller.session, "divergence", None)
        views = getattr(div, "key_views", None)
        integrity = getattr(self.controller.session, "integrity", None)
        return with_saved(views(comm_id) if views is not None else None,
                          integrity.saved_state() if integrity is not None else None, comm_id)

    def _blob_bytes(self, digest: str) -> bytes | None:
        integrity = getattr(self.controller.session, "integrity", None)
        return integrity.blob_bytes(digest) if integrity is not None else None

    def _set_liveness_filter(self, liveness: str) -> None:
        if liveness and not self.proxy.active:
            self._expanded_before_filter = self._expanded_paths()
        self.proxy.set_liveness(liveness)
        if liveness:
            self.tree.expandToDepth(0)
        else:
            self._restore_expansion()
        self._sync_detail()
        self._update_empty()

    def reconnect(self) -> None:
        if self.socket_path and self.notebook_id:
            asyncio.get_event_loop().create_task(self._attach(self.socket_path, self.notebook_id, None))

    def refresh(self) -> None:
        if self.stack.currentWidget() is self.attach_view:
            self.attach_view.refresh()
        else:
            self.controller.refresh_now()
            self._tick_ages()

    async def shutdown(self) -> None:
        await self.controller.stop()
        if self.demo_panel is not None:
            await self.demo_panel.shutdown()
        if self.tray is not None:
            self.tray.hide()

    def add_demo_panel(self, panel: Any) -> None:
        """Demo mode: the panel's menu joins the menu bar, its toolbar gets a row of its own under
        the main one, and the panel is shut down with the window."""
        self.demo_panel = panel
        self.menuBar().insertMenu(self.menus["Help"].menuAction(), panel.menu)
        self.addToolBarBreak()
        self.addToolBar(panel.toolbar)

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.controller.session is not None:
            loop = asyncio.get_event_loop()
            if loop.is_running():
                loop.create_task(self.controller.stop())
        super().closeEvent(event)

    # -- state -----------------------------------------------------------------------------------------

    def _on_state(self, state: str, detail: str) -> None:
        if state != self.state or detail != self.state_detail:
            # one line per change worth reading: a retry that fails the same way again, and the
            # connecting/syncing steps, go to debug
            if state in ("error", "disconnected"):
                level = logging.DEBUG if detail and detail == self._last_problem else logging.WARNING
                self._last_problem = detail or self._last_problem
            else:
                level = logging.INFO if state in ("live", "closed") else logging.DEBUG
                if state == "live":
                    self._last_problem = ""
            log.log(level, "connection %s%s", state, f": {detail}" if detail else "")
        self._set_state(state, detail)
        if state == "live" and not self._was_live and self.socket_path and self.notebook_id:
            self._was_live = True
            self.recent.add(self.socket_path, self.notebook_id)  # remembered once it worked

    def _set_state(self, state: str, detail: str) -> None:
        self.state, self.state_detail = state, detail
        colour = STATE_COLOURS.get(state, "#9aa0a6")
        text = STATE_TEXT.get(state, state)
        self.conn_label.setText(f"<span style='color:{colour}; font-size:14px'>●</span>&nbsp;<b>{text}</b>")
        self.conn_label.setToolTip(detail or text)
        shown = detail if state in ("error", "disconnected", "connecting") else ""
        self.status_conn.setText(f"{text}{': ' + shown if shown else ''}")
        self.status_conn.setToolTip(self.status_conn.text())
        self.status_conn.setStyleSheet(f"color: {colour if state in ('error',) else 'palette(text)'}")
        if state == "error" and detail:
            self.banner.setText(f"<b>Cannot attach:</b> {_esc(detail)}")
            self.banner.show()
        elif state in ("live", "syncing", "idle"):
            self.banner.hide()
        if self.snapshot is not None:
            self._update_status(self.snapshot)
        elif state != "live":
            self.status_div.setText("")

    def _on_countdown(self, remaining: float) -> None:
        if self.state not in ("disconnected", "error"):
            return
        err = self.controller.session.error if self.controller.session is not None else None
        why = f"{err} — " if err is not None else ""
        secs = max(0, int(remaining + 0.999))
        self.status_conn.setText(f"Disconnected: {why}retrying in {secs} s")
        self.status_conn.setToolTip(self.status_conn.text())
        gone = self.snapshot is not None and self.snapshot.lifecycle.room == "gone"
        head = "<b>The room was evicted or closed</b> (the daemon no longer lists it)." if gone else "<b>Disconnected.</b>"
        self.banner.setText(f"{head} {_esc(str(err)) + ' — ' if err is not None else ''}"
                            f"retrying in {secs} s (Ctrl+R to retry now)")
        self.banner.show()
        colour = STATE_COLOURS["disconnected"]
        self.conn_label.setText(f"<span style='color:{colour}; font-size:14px'>●</span>&nbsp;<b>Retry in {secs} s</b>")

    # -- snapshots -----------------------------------------------------------------------------------

    def _on_snapshot_ready(self, snap: Snapshot) -> None:
        self._note_divergence(snap)  # announced and logged even while the view is paused
        if self.paused:
            self._held = snap
            self._held_count += 1
            self._show_paused()
            return
        # a refresh may hand out the session's cached snapshot again: show its ages as of now
        self.apply_snapshot(aged(snap))

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Show `snap`: the verdicts and the status at once, the tree in slices when it has
        many rows to add (`tree_fill`), each slice in its own callback."""
        self._fill_target = snap
        if not self._fill_timer.isActive():
            self._fill_step()

    def _fill_step(self) -> None:
        snap = self._fill_target
        if snap is None:
            self._expand_next_group()
            return
        if self.paused:  # the rest is shown on resume
            self._held, self._fill_target = snap, None
            return
        t0 = time.perf_counter()
        part, more = self.fill.next_part(snap, self.model.snapshot)
        shown = self.model.snapshot
        if more and (shown is None or not shown.cells and not shown.comms):
            # a join: the groups fill closed (an open group is laid out again at every slice)
            # and open one per callback once filled
            self._expand_after_fill = ["cells", "comms"]
            for path in self._expand_after_fill:
                self.tree.collapse(self.proxy.mapFromSource(self.model.index_for_path(path)))
        self._show_snapshot(snap, part, more)
        if not more and self._expand_after_fill:
            self._fill_timer.start(0)  # the groups open next, each in a callback of its own
            self._fill_target = None
            return
        if more:
            self.fill.took((time.perf_counter() - t0) * 1000)
            # the rows built so far live as long as the tree: out of the collector's full passes,
            # which would otherwise walk all of them again at every step (100 ms at 3,000 cells)
            freeze_survivors()
            self._fill_timer.start(0)
        else:
            self._fill_target = None

    def _expand_next_group(self) -> None:
        """Open the next group the fill kept closed. The view lays out every row of an open group
        whenever rows are added to it (60 ms for 1,000 cells), so a group fills closed and opens
        once, in its own callback; one too big to lay out at once stays closed for the user."""
        while self._expand_after_fill:
            path = self._expand_after_fill.pop(0)
            node = self.model.node_at(path)
            if node is not None and 0 < len(node.children) <= AUTO_EXPAND_ROWS:
                self.tree.expand(self.proxy.mapFromSource(self.model.index_for_path(path)))
                if self._expand_after_fill:
                    self._fill_timer.start(0)
                return

    def _show_snapshot(self, snap: Snapshot, part: Snapshot, filling: bool) -> None:
        first = not filling and (self.model.snapshot is None or self._expand_after_fill == [] and not (
            self.model.snapshot.cells or self.model.snapshot.comms))
        self.snapshot = snap
        had_writers, had_liveness = self._has_writers(), self._has_liveness()
        self.model.set_snapshot(part, loading=filling)
        self.detail.set_integrity(snap.integrity, {c.comm_id: c.model_name for c in snap.comms if c.model_name})
        if first:
            for path in ("cells", "comms"):
                node = self.model.node_at(path)
                if node is not None and len(node.children) <= AUTO_EXPAND_ROWS:
                    self.tree.expand(self.proxy.mapFromSource(self.model.index_for_path(path)))
        if self._has_writers() != had_writers or self._has_liveness() != had_liveness:
            self._fit_tree_columns()
        if self.proxy.only_divergent:
            self._expand_shown_comms()
        self._update_status(snap)
        if filling:
            self.status_doc.setText(f"filling the tree: {len(part.cells):,} of {plural(len(snap.cells), 'cell')}, "
                                    f"{len(part.comms):,} of {plural(len(snap.comms), 'comm')} · "
                                    + self.status_doc.text())
        else:
            self._sync_detail()  # once the tree is whole: a group's JSON redrawn each step costs more than the step
        self._update_empty()

    def _sync_detail(self, force: bool = False) -> None:
        """The detail pane shows the tree's current row, or nothing when no row is current (a
        comm filtered out or gone must not stay on screen). Redrawing the same node (new ages,
        a new value) keeps the compare row the user picked."""
        cur = self.tree.currentIndex()
        node = self.model.node(self.proxy.mapToSource(cur)) if cur.isValid() else None
        table = self.detail.compare
        keep = None
        if node is not None and node.path == self._detail_path and table.selectedItems():
            keep = (table.currentRow(), max(table.currentColumn(), 0), table.hasFocus())
        self.detail.show_node(node, force=force)
        self._detail_path = node.path if node is not None else None
        self._fit_compare()
        if keep is not None and 0 <= keep[0] < table.rowCount():
            table.setCurrentCell(keep[0], keep[1])

    def _tick_ages(self) -> None:
        """Once a second: divergence ages and the compare pane's ages move on, though the room
        is idle and the session hands out the same snapshot."""
        if self.paused or self.snapshot is None or self.stack.currentWidget() is not self.main_split:
            return
        if self.snapshot.divergence:
            self.apply_snapshot(aged(self.snapshot))
        cur = self.tree.currentIndex()
        node = self.model.node(self.proxy.mapToSource(cur)) if cur.isValid() else None
        if node is not None and node.kind in ("comm", "statekey") and self.detail.key_views is not None:
            self._sync_detail(force=True)  # the v4 views' ages are read when drawn

    def _update_status(self, snap: Snapshot) -> None:
        d = sum(1 for x in snap.divergence if x.status == "diverged")
        p = sum(1 for x in snap.divergence if x.status == "pending")
        i = sum(1 for x in snap.divergence if x.status == "info")
        t = th.theme()
        parts = []
        if d:
            parts.append(f"<b style='color:{t.diverged_fg.name()}'>{d} diverged</b>")
        if p:
            parts.append(f"<span style='color:{t.pending_fg.name()}'>{p} pending</span>")
        if i:
            parts.append(f"<span style='color:{t.info_fg.name()}'>{i} info</span>")
        warnings = snap.integrity.warnings() if snap.integrity is not None else ()
        if warnings:  # facts about one view, not divergences: their own colour, their lines in the tooltip
            parts.append(f"<span style='color:{t.info_fg.name()}'>{plural(len(warnings), 'integrity warning')}</span>")
        self.status_div.setToolTip("\n".join(warnings))
        if self.state not in ("live", "synthetic"):
            # nothing is compared while not live: "no divergence" would be a verdict we do not have
            parts.append(f"<span style='color:{t.muted_fg.name()}'>no verdict while {STATE_TEXT.get(self.state, self.state).lower()}</span>")
        elif not parts:
            parts.append(f"<span style='color:{t.ok_fg.name()}'>no divergence</span>")
        self.status_div.setText(" · ".join(parts))
        dv = snap.daemon
        proto = f"protocol {dv.protocol_version}" if dv.protocol_version else ""
        self.status_doc.setText(" · ".join(x for x in (
            plural(len(snap.cells), "cell"), plural(len(snap.comms), "comm"), _feed_label(snap),
            f"kernel {snap.kernel.lifecycle or snap.kernel.status or '?'}", proto,
            f"daemon {dv.daemon_version}" if dv.daemon_version else "") if x))
        self.status_doc.setToolTip(self.status_doc.text())
        self._show_lifecycle(snap)

    def _show_lifecycle(self, snap: Snapshot) -> None:
        """The room gone and the kernel's restarts and death in the status area and the banner."""
        from ..liveness import kernel_alive

        lc = snap.lifecycle
        extra = []
        if lc.kernel_restarts:
            extra.append(f"kernel restarted {lc.kernel_restarts}×")
        if lc.disconnected_s:
            extra.append(f"disconnected {lc.disconnected_s:.1f} s in {len(lc.gaps_s)} gap(s)")
        if extra:
            self.status_doc.setText(self.status_doc.text() + " · " + " · ".join(extra))
            self.status_doc.setToolTip(self.status_doc.text())
        if lc.room == "gone":
            self.banner.setText("<b>The room was evicted or closed</b>: the daemon no longer lists it. "
                                "What is shown is its last state; retrying in case it comes back.")
            self.banner.show()
        elif self.state == "live" and snap.kernel.status is not None and not kernel_alive(snap.kernel.status):
            self.banner.setText(f"<b>The kernel is {_esc(snap.kernel.status)}</b>: its comms are state only "
                                "(replay-only), nothing answers them.")
            self.banner.show()
        elif self.state == "live":
            self.banner.hide()

    def _update_traffic(self) -> None:
        s = self.controller.session
        if s is None:
            return
        lg = s.log
        self.status_traffic.setText(f"↓ {plural(lg.frames_in, 'frame')} {_bytes(lg.bytes_in)} · "
                                    f"↑ {plural(lg.frames_out, 'frame')} {_bytes(lg.bytes_out)}")
        self.status_traffic.setToolTip("frames and bytes received (↓) and sent (↑) on this connection; "
                                       f"event log holds {_bytes(lg.bytes_held)} of its {_bytes(lg.max_bytes)} "
                                       f"bound ({plural(lg.dropped, 'event')} dropped)")

    # -- divergence announcements ---------------------------------------------------------------------

    def _note_divergence(self, snap: Snapshot) -> None:
        now = {d.comm_id for d in snap.divergence if d.status == "diverged"}
        new, gone = now - self._diverged_ids, self._diverged_ids - now
        by_id = {d.comm_id: d for d in snap.divergence if d.status == "diverged"}
        for cid in sorted(new):
            d = by_id[cid]
            log.warning("divergence: comm %s %s (%s)%s", cid, d.kind, d.severity, f" — {d.detail}" if d.detail else "")
        for cid in sorted(gone):
            log.info("divergence cleared: comm %s", cid)
        self._diverged_ids = now
        if new and self.in_background():
            self.notify_divergence(sorted(new), by_id)

    def in_background(self) -> bool:
        return bool(self.windowState() & Qt.WindowState.WindowMinimized) or not self.isActiveWindow()

    def notify_divergence(self, comm_ids: list[str], by_id: dict[str, Any]) -> None:
        """A divergence appeared while the user looks elsewhere: the taskbar entry asks for
        attention and, where there is a system tray, a notification names it."""
        first = by_id[comm_ids[0]]
        model = first.model_name or "comm"
        text = (f"{model} {comm_ids[0][:8]}: {first.kind}" if len(comm_ids) == 1
                else f"{len(comm_ids)} comms diverged ({first.kind}, …)")
        self.notifications.append(text)
        QApplication.alert(self)
        if QSystemTrayIcon.isSystemTrayAvailable():
            if self.tray is None:
                self.tray = QSystemTrayIcon(self.windowIcon(), self)
                self.tray.activated.connect(lambda *_: (self.showNormal(), self.raise_(), self.activateWindow()))
                self.tray.messageClicked.connect(lambda: (self.showNormal(), self.activateWindow(),
                                                          self.goto_divergence(1)))
            self.tray.show()
            self.tray.showMessage("Divergence", text, QSystemTrayIcon.MessageIcon.Warning, 6000)
        self.divergence_notified.emit(comm_ids)

    # -- pause -----------------------------------------------------------------------------------------

    def set_paused(self, paused: bool) -> None:
        """Freeze the tree, detail and timeline; the session keeps syncing. Resuming shows the
        newest state at once."""
        if paused == self.paused:
            return
        self.paused = paused
        if self.act_pause.isChecked() != paused:
            self.act_pause.setChecked(paused)
        self.act_pause.setText("Resume" if paused else "Pause")
        self.timeline.set_paused(paused)
        if paused:
            self._held_count = 0
            self._show_paused()
            return
        self.pause_banner.hide()
        held, self._held = self._held, None
        if held is not None:
            self.apply_snapshot(aged(held))
        elif self.controller.session is not None:
            self.controller.refresh_now()

    def _show_paused(self) -> None:
        n = self._held_count
        waiting = f"; {plural(n, 'update')} not shown yet" if n else ""
        self.pause_banner.setText(f"<b>Paused</b> — the room keeps syncing underneath{waiting}. Ctrl+P resumes.")
        self.pause_banner.show()

    # -- tree interaction ----------------------------------------------------------------------------

    def _on_tree_current(self, current: QModelIndex, _prev: QModelIndex) -> None:
        node = self.model.node(self.proxy.mapToSource(current)) if current.isValid() else None
        self.detail.show_node(node)
        self._detail_path = node.path if node is not None else None
        self._fit_compare()

    def _apply_search(self, text: str) -> None:
        keep = self._expanded_paths() if text.strip() and not self.proxy.active else None
        self.proxy.set_text(text)
        if text.strip():
            if keep is not None:
                self._expanded_before_filter = keep
            self.tree.expandToDepth(0)
        else:
            self._restore_expansion()
        self._sync_detail()
        self._update_empty()

    def set_only_divergent(self, on: bool) -> None:
        if on and not self.proxy.active:
            self._expanded_before_filter = self._expanded_paths()
        self.proxy.set_only_divergent(on)
        if on:
            self._expand_shown_comms()
        else:
            self._restore_expansion()
        self._sync_detail()
        self._update_empty()

    def _expanded_paths(self) -> set[str]:
        out = set()
        for node in self.model.iter_nodes():
            if node.children and self.tree.isExpanded(self.proxy.mapFromSource(self.model.index_of(node))):
                out.add(node.path)
        return out

    def _restore_expansion(self) -> None:
        if self.proxy.active or self._expanded_before_filter is None:
            return
        paths, self._expanded_before_filter = self._expanded_before_filter, None
        for path in sorted(paths, key=len):
            node = self.model.node_at(path)
            if node is not None:
                self.tree.expand(self.proxy.mapFromSource(self.model.index_of(node)))
        cur = self.tree.currentIndex()
        if cur.isValid():
            self.tree.scrollTo(cur, QAbstractItemView.ScrollHint.EnsureVisible)

    def _expand_shown_comms(self) -> None:
        comms = self.proxy.mapFromSource(self.model.index_for_path("comms"))
        if comms.isValid():
            self.tree.expand(comms)

    def _update_empty(self, *_args: Any) -> None:
        text = ""
        if self.model.rowCount() and not self.proxy.rowCount():
            if self.proxy.only_divergent and not self.proxy.text:
                text = ("Nothing has diverged: every comm agrees across the views compared.\n"
                        "Ctrl+D shows the whole tree again.")
                if self.state != "live":
                    text = f"No verdict while {STATE_TEXT.get(self.state, self.state).lower()}.\nCtrl+D shows the whole tree."
            else:
                what = f"“{self.proxy.text}”" if self.proxy.text else "the filter"
                text = f"No row matches {what}.\nEsc clears the search" + (
                    "; Ctrl+D turns “Only divergent” off." if self.proxy.only_divergent else ".")
        self.empty_label.setText(text)
        self.empty_label.setGeometry(self.tree.viewport().rect())
        self.empty_label.setVisible(bool(text))

    def _focus_search(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def _escape(self) -> None:
        """Esc: clear the tree search (from anywhere), else leave the attach view."""
        if self.stack.currentWidget() is self.attach_view:
            self.attach_view.go_back()
            return
        if self.timeline.search.hasFocus() and self.timeline.search.text():
            self.timeline.search.clear()
            return
        if self.search.text():
            self.search.clear()
            self._apply_search("")
            self.tree.setFocus()
        elif self.search.hasFocus():
            self.tree.setFocus()

    def focus_pane(self, which: str) -> None:
        if self.stack.currentWidget() is not self.main_split:
            return
        if which == "tree":
            self.tree.setFocus(Qt.FocusReason.ShortcutFocusReason)
            if not self.tree.currentIndex().isValid() and self.proxy.rowCount():
                self.tree.setCurrentIndex(self.proxy.index(0, 0))
        elif which == "detail":
            w = self.detail.tabs.currentWidget()
            (w.widget() if hasattr(w, "widget") and w.widget() is not None else w).setFocus(
                Qt.FocusReason.ShortcutFocusReason)
        elif which == "timeline":
            self.timeline.table.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def select_path(self, path: str) -> bool:
        """Select (and reveal) the tree row for a path such as "comms/<id>"; False if not shown."""
        src = self.model.index_for_path(path)
        if not src.isValid():
            return False
        idx = self.proxy.mapFromSource(src)
        if not idx.isValid():
            return False
        p = idx.parent()
        while p.isValid():
            self.tree.expand(p)
            p = p.parent()
        self.tree.selectionModel().setCurrentIndex(
            idx, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.tree.scrollTo(idx, QAbstractItemView.ScrollHint.EnsureVisible)
        return True

    def goto_divergence(self, step: int) -> bool:
        """Move the selection to the next (step=1) or previous (-1) diverged/pending comm."""
        nodes = [n for n in self.model.iter_nodes() if n.kind == "comm" and n.status in ("diverged", "pending")]
        if not nodes:
            self.statusBar().showMessage("No divergence", 2000)
            return False
        cur = self.model.node(self.proxy.mapToSource(self.tree.currentIndex()))
        while cur is not None and cur.kind != "comm":
            cur = cur.parent
        if cur in nodes:
            target = nodes[(nodes.index(cur) + step) % len(nodes)]
        else:
            target = nodes[0] if step > 0 else nodes[-1]
        return self.select_path(target.path)

    # -- copying ---------------------------------------------------------------------------------------

    def current_node(self) -> Node | None:
        return self.model.node(self.proxy.mapToSource(self.tree.currentIndex()))

    def _put(self, text: str, what: str) -> None:
        QGuiApplication.clipboard().setText(text)
        self.statusBar().showMessage(f"Copied {what}", 2500)

    def copy_focused(self) -> None:
        """Ctrl+C copies what has the focus: selected text, the current compare cell, the current
        event, else the tree's node as JSON."""
        w = QApplication.focusWidget()
        if isinstance(w, (QPlainTextEdit, QTextEdit)) and w.textCursor().hasSelection():
            self._put(w.textCursor().selectedText().replace("\u2029", "\n"), "the selected text")
            return
        if isinstance(w, QLineEdit) and w.hasSelectedText():
            self._put(w.selectedText(), "the selected text")
            return
        if isinstance(w, QLabel) and w.hasSelectedText():
            self._put(w.selectedText(), "the selected text")
            return
        if w is self.detail.compare:
            text = compare_cell_text(self.detail.compare)
            if text is not None:
                self._put(text, "the compare cell")
            return
        if w is self.timeline.table:
            if self.timeline.current_event() is not None:
                self.timeline.copy_current()
                self.statusBar().showMessage("Copied the event as JSON", 2500)
            return
        self.copy_node()

    def copy_node(self) -> None:
        node = self.current_node()
        if node is None:
            return
        self._put(json.dumps(node.value, indent=2, ensure_ascii=False, default=str), f"{node.path} as JSON")

    def copy_value(self) -> None:
        if QApplication.focusWidget() is self.detail.compare:
            text = compare_cell_text(self.detail.compare, value=True)
            if text is not None:
                self._put(text, "the value")
            return
        node = self.current_node()
        if node is not None:
            v = node.value
            self._put(v if isinstance(v, str) else json.dumps(v, indent=2, ensure_ascii=False, default=str),
                      f"the value of {node.cols[0]}")

    def copy_key(self) -> None:
        node = self.current_node()
        if node is not None:
            self._put(node.cols[0] if node.kind in ("statekey", "json") else node.key, "the key")

    def copy_path(self) -> None:
        node = self.current_node()
        if node is not None:
            self._put(node.doc_path or node.path, f"the path {node.doc_path or node.path}")

    # -- help ------------------------------------------------------------------------------------------

    def shortcut_rows(self) -> list[tuple[str, str]]:
        rows = []
        for a in self.actions():
            if a.isSeparator() or a.shortcut().isEmpty():
                continue
            rows.append((a.text().replace("&", "").replace("…", ""), a.shortcut().toString(
                QKeySequence.SequenceFormat.NativeText)))
        if self.demo_panel is not None:
            rows += [(a.text(), a.shortcut().toString()) for a in self.demo_panel.menu.actions()
                     if not a.shortcut().isEmpty()]
        return rows

    def show_shortcuts(self) -> None:
        rows = "".join(f"<tr><td style='padding:2px 16px 2px 0'><b>{_esc(k)}</b></td><td>{_esc(t)}</td></tr>"
                       for t, k in self.shortcut_rows())
        extra = ("<p>In the tree: arrows move, → / ← expand and collapse, the context menu (Menu key or "
                 "Shift+F10) copies a value, key or path. Tab moves between the panes' controls.</p>")
        _info_dialog(self, "Keyboard shortcuts", f"<table>{rows}</table>{extra}")

    def show_verdicts(self) -> None:
        _info_dialog(self, "What the verdicts mean", verdicts_html())

    def about_text(self) -> str:
        from PySide6 import __version__ as pyside_version
        from PySide6.QtCore import qVersion

        snap = self.snapshot
        dv = snap.daemon if snap is not None else None
        daemon = (f"{dv.daemon_version or 'version not reported'} · protocol {dv.protocol_version}"
                  if dv is not None and dv.protocol_version else "not attached")
        return (f"<h3>Runtimed Inspector {__version__}</h3>"
                "<p>A read-only peer of a runtimed notebook room: its documents, its widget comms and "
                "where views of them disagree.</p>"
                f"<table><tr><td>Inspector</td><td>{__version__} (speaks protocol v2 and v4)</td></tr>"
                f"<tr><td>Daemon</td><td>{_esc(daemon)}</td></tr>"
                f"<tr><td>Socket</td><td>{_esc(self.socket_path or '—')}</td></tr>"
                f"<tr><td>Qt</td><td>{qVersion()} · PySide6 {pyside_version}</td></tr></table>")

    def show_about(self) -> None:
        QMessageBox.about(self, "About Runtimed Inspector", self.about_text())


STATE_TEXT = {"connecting": "Connecting…", "syncing": "Syncing…", "live": "Live", "disconnected": "Disconnected",
              "error": "Error", "closed": "Closed", "idle": "Not attached", "synthetic": "Synthetic data"}


def compare_cell_text(table: Any, value: bool = False) -> str | None:
    """The current cell of a compare table as a reader would copy it: the key without its
    "≠" mark, a value as shown (its tooltip holds it whole when the cell is cut)."""
    item = table.currentItem()
    if item is None:
        items = table.selectedItems()
        item = items[0] if items else None
    if item is None:
        return None
    if value and item.column() == 0:
        nxt = table.item(item.row(), 1)
        item = nxt if nxt is not None else item
    if item.column() == 0:
        return item.text().replace("  ≠", "").strip()
    tip = item.toolTip()
    return tip if tip and len(tip) > len(item.text()) else item.text()


def verdicts_html() -> str:
    from .. import divergence as dv

    kinds = "".join(f"<li><code>{k}</code> — {_esc(VERDICT_KINDS.get(k, ''))} "
                    f"<i>(default severity: {dv.SEVERITY.get(k, 'info')})</i></li>" for k in dv.KINDS)
    return ("<p>Each comm is compared across the views the daemon offers: on protocol v2 the document and "
            "the CommSync feed, on v4 the runtime state's topology, the comms document and the echo "
            "broadcasts; with <code>--kernel-connection</code> the kernel's own IOPub too.</p>"
            "<ul><li><b>in sync</b> — every view compared holds the same values.</li>"
            "<li><b>pending</b> — the views differ, but not yet for longer than the settle window (both "
            "sides quiet for the quiet time, longer after a kernel clear): usually lag that will heal.</li>"
            "<li><b>diverged</b> — the difference outlasted the settle window; graded error or warn. "
            "<code>check</code> exits 1 on these.</li>"
            "<li><b>info</b> — a difference the rules expect (for example comms kept after the kernel died): "
            "shown, never failed on.</li></ul>"
            f"<p>Kinds:</p><ul>{kinds}</ul>"
            "<p>Ages: how long a divergence has lasted, and per key how long ago each view last changed it; "
            "“join” means the view held the value when the inspector joined.</p>")


VERDICT_KINDS = {
    "missing_in_doc": "the feed (or kernel) has the comm, the document does not",
    "missing_in_feed": "the document has the comm, the feed does not",
    "closed_but_in_doc": "the comm was closed, yet the document still lists it",
    "state_mismatch": "a state key differs between two views",
    "model_mismatch": "the views name different widget models",
    "outputs_mismatch": "an Output widget's captured outputs differ",
    "seq_anomaly": "the comms' seq order is broken (repeated or out of order)",
    "dangling_ref": "a state value refers to a comm that does not exist",
    "forward_ref": "a comm refers to one opened after it",
    "stale_after_kernel_exit": "comms remain after the kernel exited",
    "orphan_state": "the comms document holds state for a comm the topology does not list (v4)",
    "orphan_topology": "the topology lists a comm the comms document has no state for (v4)",
}


def _info_dialog(parent: QWidget, title: str, html: str) -> None:
    box = QDialog(parent)
    box.setWindowTitle(title)
    lay = QVBoxLayout(box)
    text = QTextBrowser(box)
    text.setOpenExternalLinks(True)
    text.setHtml(html)
    lay.addWidget(text)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, box)
    buttons.rejected.connect(box.reject)
    lay.addWidget(buttons)
    box.resize(620, 520)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    parent._dialog = box  # type: ignore[attr-defined]  # kept for tests and so it is not collected
    box.show()


def _feed_label(snap: Snapshot) -> str:
    f = snap.feed
    if f.baseline == "none":
        return "no comm feed (protocol v4)"
    if f.baseline == "pending":
        return "feed: waiting for the first broadcast"
    since = "since comm_sync" if f.baseline == "comm_sync" else "since join (no comm_sync)"
    return f"feed {len(f.comms)} comms {since}"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
