"""The start view: discovered daemons and their rooms, manual socket entry, recent connections."""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import textwrap
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import discovery
from ..errors import InspectorError
from . import theme as th
from .recent import RecentConnections

ROLE = Qt.ItemDataRole.UserRole + 1
SPAN_ROLE = Qt.ItemDataRole.UserRole + 2  # a line of a daemon's error message, across every column


class AttachView(QWidget):
    attach_requested = Signal(str, str)  # socket, notebook id
    back_requested = Signal()  # back to the room the window is attached to

    def __init__(self, recent: RecentConnections, parent: QWidget | None = None,
                 extra_sockets: list[str] | None = None) -> None:
        super().__init__(parent)
        self.recent = recent
        self.extra_sockets = list(extra_sockets or [])
        self._task: asyncio.Task[Any] | None = None

        title = QLabel("Attach to a notebook room", self)
        f = title.font()
        f.setPointSizeF(f.pointSizeF() * 1.5)
        f.setBold(True)
        title.setFont(f)
        sub = QLabel("The inspector joins as a read-only peer: it never edits the notebook, never launches a "
                     "kernel unless asked, and never creates a room.", self)
        sub.setWordWrap(True)
        sub.setStyleSheet(f"color: {th.theme().muted_fg.name()}")
        self.back_button = QPushButton("◀ Back", self)
        self.back_button.setToolTip("Back to the room you are attached to (Esc)")
        self.back_button.clicked.connect(self.go_back)
        self.back_button.hide()
        # why the last attach failed, whole: the cause is usually at the end of the message
        self.error = QLabel(self)
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        t = th.theme()
        self.error.setStyleSheet(f"QLabel {{ background: {t.diverged_bg.name()}; color: {t.diverged_fg.name()};"
                                 " padding: 8px 12px; border-radius: 4px; }")
        self.error.hide()

        # daemons and rooms
        box = QGroupBox("Daemons on this machine", self)
        self.daemons = QTreeWidget(box)
        self.daemons.setColumnCount(4)
        self.daemons.setHeaderLabels(["Daemon / room", "Peers", "Kernel", "Details"])
        self.daemons.setRootIsDecorated(True)
        self.daemons.setUniformRowHeights(True)
        self.daemons.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # the end of a path says the most
        self.daemons.setAlternatingRowColors(True)
        self.daemons.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        hh = self.daemons.header()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setStretchLastSection(True)
        for col, w in ((0, 280), (1, 50), (2, 90)):
            hh.resizeSection(col, w)
        self.daemons.itemDoubleClicked.connect(self._on_daemon_double)
        self.daemons.currentItemChanged.connect(self._on_daemon_current)
        self.refresh_button = QPushButton("Refresh", box)
        self.refresh_button.setToolTip("Look for daemons and list their rooms again (F5)")
        self.refresh_button.clicked.connect(self.refresh)
        self.status = QLabel(box)
        self.status.setWordWrap(True)
        self.status.setStyleSheet(f"color: {th.theme().muted_fg.name()}")
        bl = QVBoxLayout(box)
        bl.addWidget(self.daemons, 1)
        row = QHBoxLayout()
        row.addWidget(self.status, 1)
        row.addWidget(self.refresh_button)
        bl.addLayout(row)

        # manual entry
        manual = QGroupBox("Connect by hand", self)
        self.socket_edit = QLineEdit(manual)
        self.socket_edit.setPlaceholderText(discovery.default_socket())
        self.socket_edit.setClearButtonEnabled(True)
        self.notebook_edit = QLineEdit(manual)
        self.notebook_edit.setPlaceholderText("notebook id, exactly as the daemon lists it")
        self.notebook_edit.setClearButtonEnabled(True)
        self.notebook_edit.returnPressed.connect(self._attach_manual)
        self.attach_button = QPushButton("Attach", manual)
        self.attach_button.setDefault(True)
        self.attach_button.clicked.connect(self._attach_manual)
        self.list_button = QPushButton("List rooms", manual)
        self.list_button.setToolTip("Ask this socket for its rooms")
        self.list_button.clicked.connect(self._list_manual)
        form = QFormLayout(manual)
        form.addRow("Socket", self.socket_edit)
        form.addRow("Notebook", self.notebook_edit)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.list_button)
        buttons.addWidget(self.attach_button)
        form.addRow(buttons)

        recent_box = QGroupBox("Recent", self)
        self.recent_list = QListWidget(recent_box)
        self.recent_list.itemActivated.connect(self._on_recent)
        self.recent_list.itemDoubleClicked.connect(self._on_recent)
        rl = QVBoxLayout(recent_box)
        rl.addWidget(self.recent_list)

        right = QVBoxLayout()
        right.addWidget(manual)
        right.addWidget(recent_box, 1)
        body = QHBoxLayout()
        body.setSpacing(14)
        body.addWidget(box, 2)  # the daemons' list (paths, details) needs the width more than the form
        body.addLayout(right, 1)

        frame = QFrame(self)
        outer = QVBoxLayout(frame)
        outer.setContentsMargins(28, 22, 28, 22)
        outer.setSpacing(10)
        head = QHBoxLayout()
        head.addWidget(title, 1)
        head.addWidget(self.back_button)
        outer.addLayout(head)
        outer.addWidget(sub)
        outer.addWidget(self.error)
        outer.addSpacing(6)
        outer.addLayout(body, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(frame)
        self.load_recent()

    # -- back / errors ----------------------------------------------------------------------------

    def set_back_target(self, room: str | None) -> None:
        """Offer "Back" (and Esc) to the room still attached; None hides it."""
        self.back_button.setVisible(room is not None)
        if room is not None:
            self.back_button.setText(f"◀ Back to {room if len(room) <= 40 else room[:39] + '…'}")

    def go_back(self) -> None:
        if self.back_button.isVisible():
            self.back_requested.emit()

    def show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))

    # -- recent ------------------------------------------------------------------------------------

    def load_recent(self) -> None:
        self.recent_list.clear()
        for r in self.recent.load():
            when = _dt.datetime.fromtimestamp(float(r.get("at", 0))).strftime("%b %d %H:%M") if r.get("at") else ""
            item = QListWidgetItem(f"{os.path.basename(str(r['notebook'])) or r['notebook']}\n"
                                   f"    {r['socket']}   {when}")
            item.setToolTip(f"{r['notebook']}\n{r['socket']}")
            item.setData(ROLE, (r["socket"], r["notebook"]))
            self.recent_list.addItem(item)
        if not self.recent_list.count():
            item = QListWidgetItem("No recent connections yet")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.recent_list.addItem(item)

    def _on_recent(self, item: QListWidgetItem) -> None:
        data = item.data(ROLE)
        if data:
            self.attach_requested.emit(*data)

    # -- manual --------------------------------------------------------------------------------------

    def _socket(self) -> str:
        return self.socket_edit.text().strip() or self.socket_edit.placeholderText()

    def _attach_manual(self) -> None:
        nb = self.notebook_edit.text().strip()
        if not nb:
            self.status.setText("Enter a notebook id, or pick a room on the left.")
            self.notebook_edit.setFocus()
            return
        self.attach_requested.emit(self._socket(), nb)

    def _list_manual(self) -> None:
        sock = self._socket()
        if sock not in self.extra_sockets:
            self.extra_sockets.insert(0, sock)
        self.refresh()

    # -- discovery ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._discover())

    async def _discover(self) -> None:
        from ..pool import probe

        self.status.setText("Looking for daemons…")
        self.refresh_button.setEnabled(False)
        paths: list[tuple[str, str, bool]] = [(p, "given", os.path.exists(p)) for p in self.extra_sockets]
        for c in discovery.candidates():
            if c.path not in [p for p, _, _ in paths]:
                paths.append((c.path, c.origin, c.exists))
        results = await asyncio.gather(*(self._probe_one(probe, p) if exists else _absent()
                                         for p, _, exists in paths))
        self.daemons.clear()
        found = 0
        for (path, origin, exists), res in zip(paths, results, strict=True):
            if not exists and origin not in ("given", "env", "stable"):
                continue
            top = QTreeWidgetItem([path, "", "", origin])
            top.setIcon(0, th.state_dot("#9aa0a6"))
            top.setToolTip(0, path)
            if not exists:
                top.setText(3, f"{origin} · not running")
                top.setForeground(0, th.theme().muted_fg)
            elif isinstance(res, Exception):
                top.setText(3, "not answering (below)")
                top.setToolTip(3, f"<p>{_esc(str(res))}</p>")  # rich text: the tooltip wraps
                top.setIcon(0, th.status_icon("diverged"))
                top.setForeground(3, th.theme().diverged_fg)
                # the whole message, on lines of the whole width: its cause is often at the end
                for line in textwrap.wrap(str(res), 90, break_on_hyphens=False) or [type(res).__name__]:
                    child = QTreeWidgetItem([line])
                    child.setForeground(0, th.theme().diverged_fg)
                    child.setFlags(Qt.ItemFlag.ItemIsEnabled)
                    child.setData(0, SPAN_ROLE, True)
                    top.addChild(child)
            else:
                found += 1
                top.setIcon(0, th.state_dot("#1e8e3e"))
                top.setText(3, f"{origin} · protocol {res.protocol_version} · "
                               f"{res.daemon_version or 'unknown version'} · {len(res.rooms)} room(s)")
                if not res.supported:
                    top.setText(3, f"daemon speaks protocol {res.protocol_version}: not supported")
                    top.setForeground(3, th.theme().diverged_fg)
                top.setToolTip(3, top.text(3))
                top.setToolTip(0, path)
                for room in res.rooms:
                    label = room.notebook_path or room.notebook_id
                    child = QTreeWidgetItem([label, str(room.active_peers),
                                             room.kernel_status or ("kernel" if room.has_kernel else "no kernel"),
                                             room.notebook_id if label != room.notebook_id else (room.state or "")])
                    child.setToolTip(0, room.notebook_id)
                    child.setData(0, ROLE, (path, room.notebook_id))
                    top.addChild(child)
                if not res.rooms:
                    child = QTreeWidgetItem(["no open rooms", "", "", ""])
                    child.setFlags(Qt.ItemFlag.NoItemFlags)
                    top.addChild(child)
            self.daemons.addTopLevelItem(top)
            top.setExpanded(True)
            for i in range(top.childCount()):  # spanning takes effect only once the item is in the tree
                if top.child(i).data(0, SPAN_ROLE):
                    top.child(i).setFirstColumnSpanned(True)
        self.status.setText(f"{found} daemon(s) answering · double-click a room to attach")
        self.refresh_button.setEnabled(True)

    @staticmethod
    async def _probe_one(probe: Any, path: str) -> Any:
        try:
            return await probe(path, timeout=3.0)
        except InspectorError as exc:
            return exc
        except OSError as exc:
            return exc

    def _on_daemon_current(self, item: QTreeWidgetItem | None, _prev: Any) -> None:
        data = item.data(0, ROLE) if item is not None else None
        if data:
            self.socket_edit.setText(data[0])
            self.notebook_edit.setText(data[1])

    def _on_daemon_double(self, item: QTreeWidgetItem, _col: int) -> None:
        data = item.data(0, ROLE)
        if data:
            self.attach_requested.emit(*data)


async def _absent() -> None:
    return None


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
