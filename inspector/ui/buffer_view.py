"""The detail pane's Buffers tab: the blob references in a comm's state (binary buffers,
externalised values, output manifests), with size, hash and media type, an image preview
and a hex view of the bytes, instead of a raw `{3 keys}`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ..widget_buffers import BufferRef, hex_dump
from . import theme as th
from .rows_model import RowsTableModel
from .tree_nodes import byte_size

PREVIEW_MAX = 360  # px: the preview fits the pane, the tooltip says the real size


def check_text(b: BufferRef) -> str:
    if b.error:
        return f"⚠ {b.error}"
    if b.hash_matches:
        return "hash ok"
    if b.size is None:
        return "not fetched"
    return "bytes (no hash to check)" if b.hash_matches is None else "hash differs"


class BufferTableModel(RowsTableModel):
    HEADERS = ("Path", "Size", "Media type", "SHA-256", "Origin", "Written by", "Check")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rows: list[BufferRef] = []

    def set_rows(self, rows: list[BufferRef]) -> None:
        if rows == self.rows:
            return
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.rows):
            return None
        b = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            size = b.size if b.size is not None else b.declared_size
            mt = b.media_type or b.served_media_type or b.declared_media_type or "?"
            if b.width and b.height:
                mt += f" {b.width}×{b.height}"
            digest = b.sha256 or b.blob or ""
            return ("/".join(b.path), byte_size(size), mt, digest[:16] + ("…" if len(digest) > 16 else ""),
                    b.origin, b.author or b.writer or "?", check_text(b))[col]
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == 3:
                return b.sha256 or b.blob
            if col == 5:
                return b.writer
            if col == 2:
                return (f"sniffed from the bytes: {b.media_type or '?'}; the blob server said "
                        f"{b.served_media_type or '?'}; the reference declares {b.declared_media_type or '?'}")
            return None
        if role == Qt.ItemDataRole.ForegroundRole and col == 6:
            t = th.theme()
            return t.diverged_fg if b.error or b.hash_matches is False else (t.ok_fg if b.hash_matches else t.muted_fg)
        return None


class BufferView(QWidget):
    """`blob_bytes(digest)` gives the bytes the session already fetched (None: not fetched)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.blob_bytes: Callable[[str], bytes | None] | None = None
        self.model = BufferTableModel(self)
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setStretchLastSection(True)
        self.table.selectionModel().currentRowChanged.connect(lambda cur, _prev: self._show(cur.row()))
        self.preview = QLabel(self)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumHeight(60)
        self.hex = QPlainTextEdit(self)
        self.hex.setReadOnly(True)
        self.hex.setFont(th.mono_font())
        self.hex.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.hex.setFrameShape(QFrame.Shape.NoFrame)
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(self.table)
        split.addWidget(self.preview)
        split.addWidget(self.hex)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 2)
        split.setStretchFactor(2, 2)
        split.setChildrenCollapsible(False)
        split.setSizes([90, 220, 260])  # one or two rows usually: the bytes get the room
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 4, 0, 0)
        lay.addWidget(split)
        self.shown: BufferRef | None = None
        self._had_bytes = False

    def show_buffers(self, refs: list[BufferRef], focus: tuple[str, ...] | None = None) -> None:
        """The buffers of one comm; `focus` selects the one at that state path."""
        keep = self.shown.key if self.shown is not None else None
        self.model.set_rows(refs)
        want = next((i for i, b in enumerate(refs) if focus is not None and b.path[:len(focus)] == focus), None)
        if want is None:
            want = next((i for i, b in enumerate(refs) if b.key == keep), 0)
        if refs:
            self.table.selectRow(want)
            self._show(want)
        else:
            self._show(-1)

    def _show(self, row: int) -> None:
        b = self.model.rows[row] if 0 <= row < len(self.model.rows) else None
        if b == self.shown and b is not None and self._had_bytes:
            return
        self.shown = b
        self._had_bytes = False
        if b is None:
            self.preview.clear()
            self.preview.setText("")
            self.hex.setPlainText("")
            return
        digest = b.sha256 or b.blob
        data = self.blob_bytes(digest) if self.blob_bytes is not None and digest else None
        if data is None:
            self.preview.setPixmap(QPixmap())
            why = b.error or ("the bytes came with comm_open (v2): not kept" if b.origin == "open_buffer"
                              else "not fetched from the blob server")
            self.preview.setText(f"no bytes to show: {why}")
            self.hex.setPlainText("")
            return
        self._had_bytes = True  # until then each refresh asks again: the bytes may come later
        self.hex.setPlainText(hex_dump(data))
        img = QImage()
        if (b.media_type or "").startswith("image/") and img.loadFromData(data):
            pm = QPixmap.fromImage(img)
            if pm.width() > PREVIEW_MAX or pm.height() > PREVIEW_MAX:
                pm = pm.scaled(PREVIEW_MAX, PREVIEW_MAX, Qt.AspectRatioMode.KeepAspectRatio,
                               Qt.TransformationMode.SmoothTransformation)
            elif pm.width() < 64:  # a tiny image is shown big enough to see, without smoothing
                pm = pm.scaled(pm.width() * 8, pm.height() * 8, Qt.AspectRatioMode.KeepAspectRatio,
                               Qt.TransformationMode.FastTransformation)
            self.preview.setPixmap(pm)
            self.preview.setToolTip(f"{img.width()} × {img.height()} px, {byte_size(len(data))}")
        else:
            self.preview.setPixmap(QPixmap())
            self.preview.setText(f"{b.media_type or 'unknown type'}: no preview (see the bytes below)")
            self.preview.setToolTip("")
