"""The timeline: every event of the session's EventLog in a table, fed incrementally.

Events are appended in batches (at most one insert per flush interval) so a storm of frames
costs one `beginInsertRows` per tick, not one per frame.
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
from collections.abc import Callable
from typing import Any

import msgspec
from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSplitter,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .. import events as ev
from ..protocol.framing import FrameType
from . import theme as th
from .tree_model import FilterProxy

COLUMNS = ("#", "Time", "Kind", "Doc / dir", "Size", "Summary")
EventRole = Qt.ItemDataRole.UserRole + 1
_TEXTS_KEPT = 4_096  # rows whose texts are kept: a few screens' worth, as the user scrolls
_DISPLAY, _FOREGROUND, _FONT, _ALIGN, _TOOLTIP = (int(r) for r in (
    Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ForegroundRole, Qt.ItemDataRole.FontRole,
    Qt.ItemDataRole.TextAlignmentRole, Qt.ItemDataRole.ToolTipRole))
_EVENT = int(EventRole)
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

KIND_LABELS = {
    ev.FRAME: "Frames", ev.DOC_CHANGED: "Doc changes", ev.BROADCAST: "Broadcasts", ev.PRESENCE: "Presence",
    ev.CONNECTION: "Connection", ev.DIVERGENCE: "Divergence", ev.RESPONSE: "Responses", ev.CONTROL: "Control",
    ev.ERROR: "Errors", ev.LIFECYCLE: "Lifecycle",
}
_KIND_COLOURS_LIGHT = {
    ev.FRAME: "#6b7075", ev.DOC_CHANGED: "#1a5fb4", ev.BROADCAST: "#0f7b6c", ev.PRESENCE: "#7b3fb5",
    ev.CONNECTION: "#b35900", ev.DIVERGENCE: "#b3261e", ev.RESPONSE: "#3b6e22", ev.CONTROL: "#5f6368",
    ev.ERROR: "#b3261e", ev.LIFECYCLE: "#8a5a00",
}
_KIND_COLOURS_DARK = {
    ev.FRAME: "#9aa0a6", ev.DOC_CHANGED: "#8ab4f8", ev.BROADCAST: "#5fd3bc", ev.PRESENCE: "#c58af9",
    ev.CONNECTION: "#f6b26b", ev.DIVERGENCE: "#ff8a80", ev.RESPONSE: "#a5d6a7", ev.CONTROL: "#bdc1c6",
    ev.ERROR: "#ff8a80", ev.LIFECYCLE: "#e6c07b",
}


def kind_colour(kind: str) -> QColor:
    table = _KIND_COLOURS_DARK if th.theme().dark else _KIND_COLOURS_LIGHT
    return QColor(table.get(kind, "#888888"))


def hexdump(data: bytes, limit: int = 16 * 1024) -> str:
    lines = []
    for off in range(0, min(len(data), limit), 16):
        chunk = data[off:off + 16]
        hx = " ".join(f"{b:02x}" for b in chunk)
        hx = hx[:23] + " " + hx[23:] if len(chunk) > 8 else hx
        txt = "".join(chr(b) if 32 <= b < 127 else "·" for b in chunk)
        lines.append(f"{off:08x}  {hx:<48}  {txt}")
    if len(data) > limit:
        lines.append(f"… {len(data) - limit} more bytes")
    return "\n".join(lines)


_JSON_FRAMES = {FrameType.REQUEST, FrameType.RESPONSE, FrameType.BROADCAST, FrameType.SESSION_CONTROL}


def decode_frame_body(frame_type: int | None, payload: bytes, doc: str | None = None) -> str:
    """A readable form of one frame's payload (type byte included for typed frames): JSON
    frames pretty-printed, presence decoded from CBOR, sync frames named. "" if nothing to add."""
    if doc is not None:
        return f"Automerge sync message for the {doc} document"
    if frame_type is None:  # handshake, bootstrap reply: plain JSON without a type byte
        data = payload
    elif payload[:1] == bytes([frame_type]):
        data = payload[1:]
    else:
        return ""
    if frame_type is None or frame_type in _JSON_FRAMES:
        try:
            value = json.loads(data)
        except ValueError:
            return ""
        text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
        return ("decoded JSON:\n" + text) if len(text) < 20_000 else ("decoded JSON (cut):\n" + text[:20_000] + "\n…")
    if frame_type == FrameType.PRESENCE:
        from ..protocol.presence import decode_presence

        try:
            return "decoded presence (CBOR):\n" + json.dumps(msgspec.to_builtins(decode_presence(data)), indent=2,
                                                               default=str)
        except Exception:  # noqa: BLE001 - a frame that does not decode is still shown as bytes
            return ""
    return ""


class TimelineModel(QAbstractTableModel):
    """The events of a session's log as it grows (`attach`, batched every `flush_ms`, at most
    `max_rows` kept), or of a recording (`extend`, every event: `max_rows=None`)."""

    def __init__(self, parent: Any = None, max_rows: int | None = 20_000, flush_ms: int = 100) -> None:
        super().__init__(parent)
        self._rows: list[ev.Event] = []
        self._pending: list[ev.Event] = []
        self._texts: collections.OrderedDict[int, tuple[ev.Event, tuple[str, ...]]] = collections.OrderedDict()
        self.max_rows = max_rows
        self.log: ev.EventLog | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._flush = QTimer(self)
        self._flush.setSingleShot(True)
        self._flush.setInterval(flush_ms)
        self._flush.timeout.connect(self.flush)
        self._mono = th.mono_font()
        self.paused = False

    def attach(self, log: ev.EventLog | None) -> None:
        """Follow `log` (replaying what it already holds); None detaches."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.log = log
        self.beginResetModel()  # a different session: a reset is the honest operation here
        self._rows = []
        self._pending = []
        self.endResetModel()
        if log is not None:
            self._pending = log.events()[-self.max_rows:] if self.max_rows is not None else log.events()
            self._unsubscribe = log.subscribe(self._on_event)
            self.flush()

    def _on_event(self, event: ev.Event) -> None:
        self._pending.append(event)
        if not self._flush.isActive() and not self.paused:
            self._flush.start()

    def extend(self, events: list[ev.Event]) -> None:
        """Append events now (a recording's, in seq order, as its replay reaches them)."""
        self._pending.extend(events)
        if not self.paused:
            self.flush()

    def flush(self) -> None:
        if not self._pending or self.paused:
            return
        batch, self._pending = self._pending, []
        overflow = len(self._rows) + len(batch) - self.max_rows if self.max_rows is not None else 0
        if overflow > 0:
            drop = min(overflow, len(self._rows))
            if drop:
                self.beginRemoveRows(QModelIndex(), 0, drop - 1)
                del self._rows[:drop]
                self.endRemoveRows()
            batch = batch[-self.max_rows:]
        start = len(self._rows)
        self.beginInsertRows(QModelIndex(), start, start + len(batch) - 1)
        self._rows.extend(batch)
        self.endInsertRows()

    def event_at(self, row: int) -> ev.Event | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = _DISPLAY) -> Any:
        # every visible cell and role at each repaint, and a storm repaints often: roles compare
        # as ints and a row's texts are made once (its data is packed: unpacking it is the cost)
        if not index.isValid():
            return None
        e = self._rows[index.row()]
        col = index.column()
        if role == _DISPLAY:
            texts = self._texts.get(e.seq)
            if texts is None or texts[0] is not e:
                texts = self._texts[e.seq] = (e, _row_texts(e))
                if len(self._texts) > _TEXTS_KEPT:
                    self._texts.popitem(last=False)
            return texts[1][col]
        if role == _FOREGROUND:
            if col == 2:
                return kind_colour(e.kind)
            return th.theme().muted_fg if col in (0, 1) else None
        if role == _FONT:
            return self._mono if col in (0, 1, 4) else None
        if role == _ALIGN:
            return _RIGHT if col in (0, 4) else None
        if role == _TOOLTIP:
            return e.summary if col == 5 and len(e.summary) > 60 else None
        if role == _EVENT:
            return e
        return None


def _row_texts(e: ev.Event) -> tuple[str, ...]:
    d = e.data
    kind = "blob lookup" if e.kind == ev.DOC_CHANGED and "resolved" in d else e.kind
    if e.kind == ev.FRAME:
        arrow = "→" if d.get("direction") == "out" else "←"
        ft = d.get("frame_type")
        # sync frames name their document; the others their type (session_control, …)
        what = d.get("doc") or (FrameType.name_of(ft) if isinstance(ft, int) else "")
        where = f"{arrow} {what}".strip()
    elif e.kind == ev.DOC_CHANGED and "resolved" in d:
        where = "blob store"  # a manifest resolved through the blob store: no document change
    else:
        where = d.get("doc") or d.get("event") or d.get("state") or ""
    size = d.get("size")
    return (str(e.seq), _dt.datetime.fromtimestamp(e.wall).strftime("%H:%M:%S.%f")[:-3], kind, str(where),
            f"{size:,}" if isinstance(size, int) else "", e.summary)




class TimelineFilter(FilterProxy):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.kinds: set[str] = set(ev.KINDS)
        self.text = ""

    def set_kind(self, kind: str, on: bool) -> None:
        self._change(lambda: (self.kinds.add if on else self.kinds.discard)(kind))

    def set_kinds(self, kinds: set[str]) -> None:
        self._change(lambda: setattr(self, "kinds", set(kinds)))

    def set_text(self, text: str) -> None:
        self._change(lambda: setattr(self, "text", text.strip().lower()))


    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        e = self.sourceModel().event_at(source_row)
        if e is None:
            return False
        known = e.kind in KIND_LABELS
        if known and e.kind not in self.kinds:
            return False
        if self.text and self.text not in e.summary.lower() and self.text not in (e.target or "").lower():
            return False
        return True


class TimelineView(QWidget):
    """Table + filter bar + a detail area with the event as JSON and a hex dump of frames."""

    target_selected = Signal(str)

    def __init__(self, parent: QWidget | None = None, max_rows: int | None = 20_000) -> None:
        super().__init__(parent)
        self.model = TimelineModel(self, max_rows=max_rows)
        self.proxy = TimelineFilter(self)
        self.proxy.setSourceModel(self.model)

        bar = QHBoxLayout()
        bar.setContentsMargins(6, 4, 6, 4)
        bar.setSpacing(4)
        self.kind_buttons: dict[str, QToolButton] = {}
        for kind, label in KIND_LABELS.items():
            b = QToolButton(self)
            b.setText(label)
            b.setCheckable(True)
            b.setChecked(True)
            b.setAutoRaise(True)
            b.setToolTip(f"Show {label.lower()}")
            b.toggled.connect(lambda on, k=kind: self.proxy.set_kind(k, on))
            b.setStyleSheet(f"QToolButton:checked {{ color: {kind_colour(kind).name()}; font-weight: 600; }}")
            self.kind_buttons[kind] = b
            bar.addWidget(b)
        bar.addStretch(1)
        # how many events the filter shows: placed in the bar (a parentless-layout label would
        # sit at (0, 0) on top of the first chips and swallow their clicks)
        self.count_label = QLabel(self)
        self.count_label.setStyleSheet(f"color: {th.theme().muted_fg.name()}")
        bar.addWidget(self.count_label)
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Filter events…")
        self.search.setClearButtonEnabled(True)
        self.search.setMaximumWidth(260)
        self.search.textChanged.connect(self.proxy.set_text)
        bar.addWidget(self.search)
        self.follow = QToolButton(self)
        self.follow.setText("Follow")
        self.follow.setCheckable(True)
        self.follow.setChecked(True)
        self.follow.setToolTip("Keep the newest event in view")
        bar.addWidget(self.follow)

        self.table = QTableView(self)
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        hh = self.table.horizontalHeader()
        hh.setStretchLastSection(True)
        hh.setHighlightSections(False)
        for col, width in enumerate((56, 96, 92, 120, 64)):
            hh.resizeSection(col, width)
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.selectionModel().currentRowChanged.connect(self._on_current)
        self.proxy.rowsInserted.connect(self._on_rows)
        for sig in (self.proxy.rowsInserted, self.proxy.rowsRemoved, self.proxy.modelReset, self.proxy.layoutChanged):
            sig.connect(self._update_count)
        self.search.installEventFilter(self)

        self.detail = QPlainTextEdit(self)
        self.detail.setReadOnly(True)
        self.detail.setFont(th.mono_font())
        self.detail.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.detail.setPlaceholderText("Select an event to see its data; frames show their bytes.")

        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(self.table)
        split.addWidget(self.detail)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addLayout(bar)
        lay.addWidget(split, 1)
        copy = QAction("Copy event as JSON", self.table)
        copy.triggered.connect(self.copy_current)
        self.table.addAction(copy)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)

    def attach(self, log: ev.EventLog | None) -> None:
        self.model.attach(log)
        self.detail.clear()
        self._update_count()

    def set_paused(self, paused: bool) -> None:
        """Paused: new events wait (still recorded by the session) and are shown on resume."""
        self.model.paused = paused
        if not paused:
            self.model.flush()
        self._update_count()

    def _update_count(self, *_args: Any) -> None:
        shown, total = self.proxy.rowCount(), self.model.rowCount()
        text = f"{shown:,} of {total:,} events" if shown != total else f"{total:,} events"
        waiting = len(self.model._pending) if self.model.paused else 0
        self.count_label.setText(text + (f" · paused, {waiting:,} waiting" if waiting else
                                         (" · paused" if self.model.paused else "")))

    def eventFilter(self, obj: Any, event: Any) -> bool:
        from PySide6.QtCore import QEvent

        if obj is self.search and event.type() == QEvent.Type.KeyPress and event.key() == Qt.Key.Key_Escape \
                and self.search.text():
            self.search.clear()  # Esc clears the filter; a second Esc goes on to the window
            return True
        return super().eventFilter(obj, event)

    def current_event(self) -> ev.Event | None:
        idx = self.table.currentIndex()
        return idx.data(EventRole) if idx.isValid() else None

    def copy_current(self) -> None:
        from PySide6.QtGui import QGuiApplication

        e = self.current_event()
        if e is not None:
            QGuiApplication.clipboard().setText(json.dumps(e.to_json(), indent=2, default=str))

    def _on_rows(self) -> None:
        if self.follow.isChecked():
            self.table.scrollToBottom()

    def _on_current(self, current: QModelIndex, _prev: QModelIndex) -> None:
        e = current.data(EventRole) if current.isValid() else None
        if e is None:
            return
        self.detail.setPlainText(self.describe(e))
        if e.target:
            self.target_selected.emit(e.target)

    def describe(self, e: ev.Event) -> str:
        body = json.dumps(e.to_json(), indent=2, default=str, ensure_ascii=False)
        if e.kind == ev.FRAME and self.model.log is not None:
            seq = e.data.get("frame_seq")
            rec = self.model.log.frame_by_seq(seq) if isinstance(seq, int) else None
            if rec is not None and rec.body:
                name = f"0x{rec.frame_type:02x} {rec.type_name}" if rec.frame_type is not None else rec.type_name
                head = f"{name} · {rec.size:,} bytes{' (' + rec.doc + ')' if rec.doc else ''}\n"
                decoded = decode_frame_body(rec.frame_type, rec.body, rec.doc)
                # what the frame says comes first; the event record and the bytes below it
                return head + (decoded + "\n\n" if decoded else "\n") + body + "\n\n" + hexdump(rec.body)
            elif rec is not None:
                body += "\n\n(frame bytes not kept)"
        return body
