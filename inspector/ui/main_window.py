"""The inspector window: toolbar, document tree, detail pane, timeline and status bar."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QToolBar,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from .. import APP_NAME
from ..snapshot import Snapshot
from . import theme as th
from .attach import AttachView
from .controller import SessionController, make_session
from .detail import DetailPane
from .recent import RecentConnections
from .timeline import TimelineView
from .tree_model import DocumentTreeModel, TreeFilterProxy

STATE_COLOURS = {"connecting": "#e8a317", "syncing": "#3574f0", "live": "#1e8e3e", "disconnected": "#9aa0a6",
                 "error": "#d93025", "closed": "#9aa0a6", "idle": "#9aa0a6"}


class InspectorWindow(QMainWindow):
    attached = Signal(str, str)

    def __init__(self, recent: RecentConnections | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(APP_NAME)
        self.resize(1360, 860)
        self.recent = recent or RecentConnections()
        self.controller = SessionController(self)
        self.controller.snapshot_ready.connect(self.apply_snapshot)
        self.controller.state_changed.connect(self._on_state)
        self.controller.countdown.connect(self._on_countdown)
        self.state = "idle"
        self.state_detail = ""
        self.snapshot: Snapshot | None = None
        self.socket_path = ""
        self.notebook_id = ""
        self.session_options: Any = None  # argparse.Namespace of the gui command (engine options)
        self.demo_panel: Any = None  # the demo's fault controls (`add_demo_panel`), only in demo mode

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
        hh = self.tree.header()
        hh.setStretchLastSection(False)
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for col, w in ((0, 250), (2, 190), (3, 150)):
            hh.resizeSection(col, w)
        self.tree.selectionModel().currentChanged.connect(self._on_tree_current)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)

        self.detail = DetailPane(self)
        self.timeline = TimelineView(self)
        self.timeline.target_selected.connect(self.select_path)

        # a banner over the tree says why there is nothing live (error text, retry countdown)
        self.banner = QLabel(self)
        self.banner.setWordWrap(True)
        self.banner.setTextFormat(Qt.TextFormat.RichText)
        t = th.theme()
        self.banner.setStyleSheet(f"QLabel {{ background: {t.diverged_bg.name()}; color: {t.diverged_fg.name()};"
                                  " padding: 8px 12px; border-radius: 4px; }")
        self.banner.hide()
        left = QWidget(self)
        left_lay = QVBoxLayout(left)
        left_lay.setContentsMargins(0, 0, 0, 0)
        left_lay.setSpacing(4)
        left_lay.addWidget(self.banner)
        left_lay.addWidget(self.tree, 1)
        top = QSplitter(Qt.Orientation.Horizontal, self)
        top.addWidget(left)
        top.addWidget(self.detail)
        top.setStretchFactor(0, 3)
        top.setStretchFactor(1, 2)
        top.setSizes([820, 540])
        self.main_split = QSplitter(Qt.Orientation.Vertical, self)
        self.main_split.addWidget(top)
        self.main_split.addWidget(self.timeline)
        self.main_split.setStretchFactor(0, 3)
        self.main_split.setStretchFactor(1, 1)
        self.main_split.setSizes([560, 240])

        self.attach_view = AttachView(self.recent, self)
        self.attach_view.attach_requested.connect(lambda s, n: self.attach(s, n))
        self.stack = QStackedWidget(self)
        self.stack.addWidget(self.attach_view)
        self.stack.addWidget(self.main_split)
        self.setCentralWidget(self.stack)

        self._build_actions()
        self._build_status()
        self._set_state("idle", "not attached")

    # -- chrome ------------------------------------------------------------------------------------

    def _build_actions(self) -> None:
        tb = QToolBar("Main", self)
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.addToolBar(tb)
        self.toolbar = tb

        def act(text: str, slot: Any, shortcut: Any = None, tip: str = "", checkable: bool = False) -> QAction:
            a = QAction(text, self)
            if shortcut is not None:
                a.setShortcut(QKeySequence(shortcut))
            a.setToolTip(f"{tip or text}" + (f" ({QKeySequence(shortcut).toString()})" if shortcut else ""))
            a.setCheckable(checkable)
            (a.toggled if checkable else a.triggered).connect(slot)
            return a

        self.act_attach = act("Attach…", self.show_attach, QKeySequence.StandardKey.Open, "Choose a daemon and room")
        self.act_reconnect = act("Reconnect", self.reconnect, "Ctrl+R", "Drop the connection and join again")
        self.act_refresh = act("Refresh", self.refresh, QKeySequence.StandardKey.Refresh,
                               "Rediscover daemons / redraw now")
        self.act_only_div = act("Only divergent", self.proxy.set_only_divergent, "Ctrl+D",
                                "Show only diverged and pending comms", checkable=True)
        self.act_prev = act("◀ Prev", lambda: self.goto_divergence(-1), "Shift+F8", "Previous divergence")
        self.act_next = act("Next ▶", lambda: self.goto_divergence(1), "F8", "Next divergence")
        self.act_copy = act("Copy as JSON", self.copy_node, QKeySequence.StandardKey.Copy,
                            "Copy the selected node as JSON")
        self.act_expand = act("Expand all", lambda: self.tree.expandToDepth(1), "Ctrl+E", "Expand cells and comms")
        self.act_collapse = act("Collapse", self.tree.collapseAll, "Ctrl+Shift+E", "Collapse everything")
        self.act_find = act("Find", self._focus_search, QKeySequence.StandardKey.Find, "Search the tree")
        self.act_quit = act("Quit", self.close, QKeySequence.StandardKey.Quit)
        for a in (self.act_attach, self.act_reconnect):
            tb.addAction(a)
        tb.addSeparator()
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Search id, model, key or value  (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(300)
        self.search.setMaximumWidth(420)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(150)
        self._search_timer.timeout.connect(lambda: self._apply_search(self.search.text()))
        self.search.textChanged.connect(lambda _t: self._search_timer.start())
        tb.addWidget(self.search)
        tb.addAction(self.act_only_div)
        tb.addSeparator()
        tb.addAction(self.act_prev)
        tb.addAction(self.act_next)
        tb.addSeparator()
        tb.addAction(self.act_expand)
        tb.addAction(self.act_collapse)
        tb.addAction(self.act_copy)
        spacer = QWidget(self)
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        tb.addWidget(spacer)
        self.conn_label = QLabel(self)
        self.conn_label.setTextFormat(Qt.TextFormat.RichText)
        self.conn_label.setContentsMargins(8, 0, 10, 0)
        tb.addWidget(self.conn_label)
        for a in (self.act_refresh, self.act_find, self.act_quit):
            self.addAction(a)
        self.tree.addAction(self.act_copy)
        self.tree.addAction(self.act_next)
        self.tree.addAction(self.act_prev)

    def _build_status(self) -> None:
        sb = self.statusBar()
        self.status_conn = QLabel(self)
        self.status_doc = QLabel(self)
        self.status_div = QLabel(self)
        self.status_div.setTextFormat(Qt.TextFormat.RichText)
        self.status_traffic = QLabel(self)
        self.status_traffic.setStyleSheet(f"color: {th.theme().muted_fg.name()}")
        sb.addWidget(self.status_conn)
        sb.addWidget(self.status_doc, 1)
        sb.addPermanentWidget(self.status_div)
        sb.addPermanentWidget(self.status_traffic)
        self._traffic_timer = QTimer(self)
        self._traffic_timer.setInterval(1000)
        self._traffic_timer.timeout.connect(self._update_traffic)
        self._traffic_timer.start()

    # -- attaching -----------------------------------------------------------------------------------

    def show_attach(self) -> None:
        self.stack.setCurrentWidget(self.attach_view)
        self.attach_view.load_recent()
        self.attach_view.refresh()

    def attach(self, socket_path: str, notebook_id: str, session: Any = None) -> None:
        """Join `notebook_id` on `socket_path` (or adopt a prepared session)."""
        asyncio.get_event_loop().create_task(self._attach(socket_path, notebook_id, session))

    async def _attach(self, socket_path: str, notebook_id: str, session: Any) -> None:
        await self.controller.stop()
        if socket_path != self.socket_path or notebook_id != self.notebook_id:
            self.model.clear()  # a different room: start from an empty tree
            self.detail.show_node(None)
        self.socket_path, self.notebook_id = socket_path, notebook_id
        self.setWindowTitle(f"{os.path.basename(notebook_id) or notebook_id} — {APP_NAME}")
        self.stack.setCurrentWidget(self.main_split)
        session = session or make_session(socket_path, notebook_id, self.session_options)
        self.timeline.attach(session.log)
        self.detail.fetch_blob = self._fetch_blob
        self.detail.key_views = self._key_views
        self.controller.start(session)
        self.recent.add(socket_path, notebook_id)
        self.attached.emit(socket_path, notebook_id)

    async def _fetch_blob(self, digest: str) -> Any:
        session = self.controller.session
        if session is None or session.resolver is None:
            raise RuntimeError("not connected")
        return await session.resolver.fetch_content(digest)

    def _key_views(self, comm_id: str) -> Any:
        # every named view of the comm (the session's divergence binding); None without an engine
        div = getattr(self.controller.session, "divergence", None)
        views = getattr(div, "key_views", None)
        return views(comm_id) if views is not None else None

    def reconnect(self) -> None:
        if self.socket_path and self.notebook_id:
            self.attach(self.socket_path, self.notebook_id)

    def refresh(self) -> None:
        if self.stack.currentWidget() is self.attach_view:
            self.attach_view.refresh()
        else:
            self.controller.refresh_now()

    async def shutdown(self) -> None:
        await self.controller.stop()
        if self.demo_panel is not None:
            await self.demo_panel.shutdown()

    def add_demo_panel(self, panel: Any) -> None:
        """Demo mode: the panel's menu joins the menu bar, its toolbar gets a row of its own under
        the main one, and the panel is shut down with the window."""
        self.demo_panel = panel
        self.menuBar().addMenu(panel.menu)
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
        self._set_state(state, detail)

    def _set_state(self, state: str, detail: str) -> None:
        self.state, self.state_detail = state, detail
        colour = STATE_COLOURS.get(state, "#9aa0a6")
        text = {"connecting": "Connecting…", "syncing": "Syncing…", "live": "Live", "disconnected": "Disconnected",
                "error": "Error", "closed": "Closed", "idle": "Not attached"}.get(state, state)
        self.conn_label.setText(f"<span style='color:{colour}; font-size:14px'>●</span>&nbsp;<b>{text}</b>")
        self.conn_label.setToolTip(detail or text)
        shown = detail if state in ("error", "disconnected", "connecting") else ""
        if state == "error":
            shown = detail
        self.status_conn.setText(f"{text}{': ' + shown if shown else ''}")
        self.status_conn.setStyleSheet(f"color: {colour if state in ('error',) else 'palette(text)'}")
        if state == "error" and detail:
            self.banner.setText(f"<b>Cannot attach:</b> {_esc(detail)}")
            self.banner.show()
        elif state in ("live", "syncing", "idle"):
            self.banner.hide()

    def _on_countdown(self, remaining: float) -> None:
        if self.state not in ("disconnected", "error"):
            return
        err = self.controller.session.error if self.controller.session is not None else None
        why = f"{err} — " if err is not None else ""
        secs = max(0, int(remaining + 0.999))
        self.status_conn.setText(f"Disconnected: {why}retrying in {secs} s")
        self.banner.setText(f"<b>Disconnected.</b> {_esc(str(err)) + ' — ' if err is not None else ''}"
                            f"retrying in {secs} s (Ctrl+R to retry now)")
        self.banner.show()
        colour = STATE_COLOURS["disconnected"]
        self.conn_label.setText(f"<span style='color:{colour}; font-size:14px'>●</span>&nbsp;<b>Retry in {secs} s</b>")

    # -- snapshots -----------------------------------------------------------------------------------

    def apply_snapshot(self, snap: Snapshot) -> None:
        first = self.model.rowCount() == 0
        self.snapshot = snap
        self.model.set_snapshot(snap)
        if first:
            self.tree.expand(self.proxy.mapFromSource(self.model.index_for_path("cells")))
            self.tree.expand(self.proxy.mapFromSource(self.model.index_for_path("comms")))
        self._update_status(snap)
        cur = self.tree.currentIndex()
        if cur.isValid():
            self.detail.show_node(self.model.node(self.proxy.mapToSource(cur)))

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
        if not parts:
            parts.append(f"<span style='color:{t.ok_fg.name()}'>no divergence</span>")
        self.status_div.setText(" · ".join(parts))
        dv = snap.daemon
        proto = f"protocol {dv.protocol_version}" if dv.protocol_version else ""
        self.status_doc.setText(" · ".join(x for x in (
            f"{len(snap.cells)} cells", f"{len(snap.comms)} comms", _feed_label(snap),
            f"kernel {snap.kernel.lifecycle or snap.kernel.status or '?'}", proto,
            f"daemon {dv.daemon_version}" if dv.daemon_version else "") if x))

    def _update_traffic(self) -> None:
        s = self.controller.session
        if s is None:
            return
        lg = s.log
        self.status_traffic.setText(f"↓ {lg.frames_in:,} frames {_bytes(lg.bytes_in)} · "
                                    f"↑ {lg.frames_out:,} {_bytes(lg.bytes_out)}")

    # -- tree interaction ----------------------------------------------------------------------------

    def _on_tree_current(self, current: QModelIndex, _prev: QModelIndex) -> None:
        self.detail.show_node(self.model.node(self.proxy.mapToSource(current)) if current.isValid() else None)

    def _apply_search(self, text: str) -> None:
        self.proxy.set_text(text)
        if text.strip():
            self.tree.expandToDepth(0)

    def _focus_search(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

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

    def copy_node(self) -> None:
        if self.timeline.table.hasFocus():
            self.timeline.copy_current()
            return
        node = self.model.node(self.proxy.mapToSource(self.tree.currentIndex()))
        if node is None:
            return
        QGuiApplication.clipboard().setText(json.dumps(node.value, indent=2, ensure_ascii=False, default=str))
        self.statusBar().showMessage(f"Copied {node.path} as JSON", 2000)


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
