"""The detail pane: what the selected tree node holds, in full.

* every node: pretty JSON (pygments-highlighted), its raw document path and Automerge object id;
* a comm or one of its keys: every named view the session compares (doc, feed, kernel on v2;
  topology, state, echo, kernel on v4) side by side, differing keys marked, with their ages;
* an output: the resolved manifest and its content (text, JSON, images shown as images);
* a comm or a cell: its references both ways (`references_view`), a comm's blob references
  with a preview and a hex view (`buffer_view`), and the saved notebook as one more view in
  the compare table when the room's file is known.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from typing import Any

from pygments.lexers.data import JsonLexer
from pygments.token import Keyword, Name, Number, Punctuation, String, Token
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QImage, QPixmap, QSyntaxHighlighter, QTextCharFormat, QTextDocument
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..divergence import CompareViews
from ..integrity import SAVED
from ..snapshot import CommView, Divergence, FeedCommView, KeyDiff, OutputView
from . import theme as th
from .buffer_view import BufferView
from .references_view import ReferencesView, holder_of, rows_for
from .tree_nodes import Node, content_text, preview

MAX_JSON_CHARS = 400_000


class JsonHighlighter(QSyntaxHighlighter):
    """Line-by-line pygments JSON lexing; pretty-printed JSON never spans lines in a token."""

    def __init__(self, document: QTextDocument) -> None:
        super().__init__(document)
        self._lexer = JsonLexer()
        self._formats: dict[Any, QTextCharFormat] = {}
        self.retheme()

    def retheme(self) -> None:
        t = th.theme()

        def fmt(colour: QColor, bold: bool = False) -> QTextCharFormat:
            f = QTextCharFormat()
            f.setForeground(colour)
            if bold:
                f.setFontWeight(QFont.Weight.DemiBold)
            return f

        self._formats = {Name.Tag: fmt(t.json_key), String: fmt(t.json_string), Number: fmt(t.json_number),
                         Keyword: fmt(t.json_keyword, True), Punctuation: fmt(t.json_punct)}
        self.rehighlight()

    def _format_for(self, ttype: Any) -> QTextCharFormat | None:
        while ttype is not Token and ttype is not None:
            f = self._formats.get(ttype)
            if f is not None:
                return f
            ttype = ttype.parent
        return None

    def highlightBlock(self, text: str) -> None:
        for pos, ttype, value in self._lexer.get_tokens_unprocessed(text):
            f = self._format_for(ttype)
            if f is not None:
                self.setFormat(pos, len(value), f)


def pretty(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > MAX_JSON_CHARS:
        text = text[:MAX_JSON_CHARS] + f"\n… ({len(text) - MAX_JSON_CHARS:,} more characters)"
    return text


def json_view(parent: QWidget) -> QPlainTextEdit:
    edit = QPlainTextEdit(parent)
    edit.setReadOnly(True)
    edit.setFont(th.mono_font())
    edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
    edit.setFrameShape(QFrame.Shape.NoFrame)
    edit.highlighter = JsonHighlighter(edit.document())  # type: ignore[attr-defined]
    return edit


def _age(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.1f} s" if ms < 120_000 else f"{ms / 60_000:.0f} min"


class DetailPane(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.fetch_blob: Callable[[str], Awaitable[Any]] | None = None
        # per comm, each named view's value and age per key (the divergence binding's `key_views`)
        self.key_views: Callable[[str], CompareViews | None] | None = None
        self._shown: tuple[int, Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

        self.title = QLabel("Nothing selected", self)
        f = self.title.font()
        f.setPointSizeF(f.pointSizeF() * 1.15)
        f.setBold(True)
        self.title.setFont(f)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.meta = QLabel(self)
        self.meta.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.meta.setWordWrap(True)
        self.meta.setTextFormat(Qt.TextFormat.RichText)

        self.tabs = QTabWidget(self)
        self.tabs.setDocumentMode(True)
        self.compare = QTableWidget(0, 5, self)
        self.compare.setHorizontalHeaderLabels(["Key", "Document", "Feed", "Kernel", "Age (doc / feed / kernel)"])
        self.compare.verticalHeader().setVisible(False)
        self.compare.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.compare.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.compare.setShowGrid(False)
        self.compare.setWordWrap(False)
        self.compare.setAlternatingRowColors(True)
        self.compare.verticalHeader().setDefaultSectionSize(22)
        hh = self.compare.horizontalHeader()
        hh.setStretchLastSection(False)
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        hh.resizeSection(0, 150)
        for col in (1, 2, 3):
            hh.setSectionResizeMode(col, QHeaderView.ResizeMode.Stretch)
        hh.setSectionResizeMode(4, QHeaderView.ResizeMode.ResizeToContents)
        self.json = json_view(self)
        self.content_area = QScrollArea(self)
        self.content_area.setWidgetResizable(True)
        self.content_area.setFrameShape(QFrame.Shape.NoFrame)
        self.tabs.addTab(self.compare, "Compare")
        self.tabs.addTab(self.json, "JSON")
        self.tabs.addTab(self.content_area, "Content")
        self.references = ReferencesView(self)
        self.buffers = BufferView(self)
        self.tabs.addTab(self.references, "References")
        self.tabs.addTab(self.buffers, "Buffers")
        self._integrity: Any = None  # the shown snapshot's integrity report
        self._names: dict[str, str] = {}
        self._node: Node | None = None
        self._prefer_json = False
        self.tabs.tabBarClicked.connect(self._on_tab_clicked)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 8, 10, 6)
        lay.setSpacing(4)
        lay.addWidget(self.title)
        lay.addWidget(self.meta)
        lay.addWidget(self.tabs, 1)
        self._set_tabs(compare=False, content=False)

    # -- public --------------------------------------------------------------------------------

    def show_node(self, node: Node | None, force: bool = False) -> None:
        """Render `node`; cheap when called again for an unchanged node."""
        key = (id(node), node.sig if node is not None else None)
        if not force and self._shown is not None and self._shown[0] == key[0] and self._shown[1] is key[1]:
            return
        self._shown = key
        self._node = node
        try:
            self._show_node(node)
        finally:
            self._fill_integrity()

    def _show_node(self, node: Node | None) -> None:
        if node is None:
            self.title.setText("Nothing selected")
            self.meta.setText("")
            self.json.setPlainText("")
            self._set_tabs(compare=False, content=False)
            return
        self.title.setText(self._title(node))
        muted = th.theme().muted_fg.name()
        meta = [f"<span style='color:{muted}'>path</span> <code>{_esc(node.doc_path or node.path)}</code>"]
        if node.obj_id:
            meta.append(f"<span style='color:{muted}'>object</span> <code>{_esc(node.obj_id)}</code>")
        if node.status:
            colour = {"diverged": th.theme().diverged_fg, "pending": th.theme().pending_fg}.get(
                node.status, th.theme().info_fg).name()
            meta.append(f"<b style='color:{colour}'>{_esc(node.cols[2])}</b>")
        self.meta.setText(" &nbsp;·&nbsp; ".join(meta))
        self.json.setPlainText(pretty(node.value))
        if node.kind == "comm":
            comm, feed, divs = node.ref
            self._fill_compare(comm, feed, divs, None, node.key)
            self._set_tabs(compare=True, content=False)
        elif node.kind == "statekey":
            comm_id, key, _div = node.ref
            comm_node = node.parent
            if comm_node is not None and comm_node.kind == "comm":
                comm, feed, divs = comm_node.ref
                self._fill_compare(comm, feed, divs, key, comm_id)
                self._set_tabs(compare=True, content=False)
            else:
                self._set_tabs(compare=False, content=False)
        elif node.kind == "output" and isinstance(node.ref, OutputView):
            self._fill_content(node.ref)
            self._set_tabs(compare=False, content=True)
        else:
            self._set_tabs(compare=False, content=False)

    def set_integrity(self, report: Any, names: dict[str, str] | None = None) -> None:
        """The integrity report of the snapshot shown (None: the session computes none);
        `names`: comm id -> model name, for the other ends of references."""
        if names is not None:
            self._names = names
        if report is not self._integrity:
            self._integrity = report
            self._fill_integrity()

    def _fill_integrity(self) -> None:
        node, rep = self._node, self._integrity
        holder = prefix = None
        comm_id = None
        if node is not None and rep is not None:
            if node.kind in ("comm", "cell"):
                holder, prefix = holder_of(node.kind, node.key), ""
                comm_id = node.key if node.kind == "comm" else None
            elif node.kind == "statekey":
                comm_id, key, _div = node.ref
                holder, prefix = comm_id, f"state/{key}"
        refs_tab = self.tabs.indexOf(self.references)
        if holder is None:
            self.tabs.setTabVisible(refs_tab, False)
        else:
            assert node is not None and prefix is not None
            rows = rows_for(rep.references, holder, prefix, self._names)
            self.references.show_rows(node.path, rows)
            self.tabs.setTabVisible(refs_tab, True)
            self.tabs.setTabText(refs_tab, f"References ({len(rows)})" if rows else "References")
        bufs = [b for b in rep.buffers if b.comm_id == comm_id] if comm_id is not None else []
        buf_tab = self.tabs.indexOf(self.buffers)
        self.tabs.setTabVisible(buf_tab, bool(bufs))
        if bufs:
            focus = (node.ref[1],) if node is not None and node.kind == "statekey" else None
            self.buffers.show_buffers(bufs, focus)
            if focus is not None and any(b.path[:1] == focus for b in bufs) and not self._prefer_json:
                self.tabs.setCurrentIndex(buf_tab)  # a binary key: its bytes, not `{3 keys}`
        if not self.tabs.isTabVisible(self.tabs.currentIndex()):
            self.tabs.setCurrentIndex(1)

    def _set_tabs(self, compare: bool, content: bool) -> None:
        self.tabs.setTabVisible(0, compare)
        self.tabs.setTabVisible(2, content)
        if compare and not self._prefer_json:
            self.tabs.setCurrentIndex(0)
        elif content and not self._prefer_json:
            self.tabs.setCurrentIndex(2)
        elif not self.tabs.isTabVisible(self.tabs.currentIndex()) or not (compare or content):
            self.tabs.setCurrentIndex(1)

    def _on_tab_clicked(self, index: int) -> None:
        self._prefer_json = index == 1

    @staticmethod
    def _title(node: Node) -> str:
        if node.kind == "comm":
            return f"Comm {node.cols[0]}"
        if node.kind == "cell":
            return f"{node.cols[0].capitalize()} cell {node.key}"
        if node.kind == "statekey":
            return f"State key “{node.cols[0]}”"
        if node.kind == "output":
            return f"Output {node.cols[0]}"
        return node.cols[0]

    # -- comm comparison -----------------------------------------------------------------------------

    def _fill_compare(self, comm: CommView | None, feed: FeedCommView | None, divs: tuple[Divergence, ...],
                      focus: str | None, comm_id: str = "") -> None:
        """Every named view of the comm side by side (the session's sources, in its order), each
        value with its age; differing keys first."""
        views = self.key_views(comm_id) if self.key_views is not None and comm_id else None
        if views is None:  # no divergence engine: the room's own views
            views = _own_views(comm, feed)
        sources = views.sources
        self._set_compare_columns(sources, views.meta)
        t = th.theme()
        diffs: dict[str, tuple[Divergence, KeyDiff]] = {}
        for d in divs:
            for k in d.keys:
                if k.key not in diffs or d.status == "diverged":
                    diffs[k.key] = (d, k)
        state = comm.state if comm is not None and isinstance(comm.state, dict) else {}
        held = [k for s in sources if s not in views.meta for k in views.values.get(s, {})]
        # keys only a describing view holds (target, seq): after the differences, muted
        meta = [k for s in sources if s in views.meta for k in views.values.get(s, {})
                if k not in state and k not in held]
        keys = list(dict.fromkeys([*meta, *state, *held, *diffs]))
        keys.sort(key=lambda k: 0 if k in diffs else (1 if k in meta else 2))
        bad_state = comm is not None and isinstance(comm.state, str)
        self.compare.setRowCount(len(keys) + (1 if bad_state else 0))
        mono = th.mono_font()
        focus_row = -1
        for row, k in enumerate(keys):
            d, kd = diffs.get(k, (None, None))
            meta_row = k in meta
            cells = [f"({k})" if meta_row else k]
            ages = []
            values = []
            for side in sources:
                if kd is not None and side in kd.values:
                    value, age = kd.values[side], kd.ages_ms.get(side)
                elif k in views.values.get(side, {}):
                    value, age = views.values[side][k]
                else:
                    value, age = _MISSING, None
                values.append(value)
                cells.append(_cell(value))
                if side == SAVED:
                    continue  # a file on disk: no age, and not a view the engine judges
                if side not in views.meta:
                    ages.append("—" if value is _MISSING else (_age(age) or "join"))
            cells.append("" if meta_row else " / ".join(ages))
            status = d.status if d is not None else None
            room = [v for v, s in zip(values, sources, strict=True) if s not in views.meta and s != SAVED]
            if status is None and not meta_row and _differ(room):
                status = "pending"  # the views disagree and the engine has not judged it (yet)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if 1 <= col <= len(sources):
                    item.setFont(mono)
                    item.setToolTip(text if len(text) > 12 else "")  # narrow columns: the full value
                if col == 0 and meta_row:
                    item.setForeground(t.muted_fg)
                    item.setToolTip("describes the comm (this view holds no widget state)")
                _mark_compare_cell(item, col, len(cells), k, status, d)
                if 1 <= col <= len(sources) and sources[col - 1] == SAVED:
                    _mark_saved_cell(item, values[col - 1], room)
                self.compare.setItem(row, col, item)
            if k == focus:
                focus_row = row
        if bad_state:
            assert comm is not None and isinstance(comm.state, str)
            item = QTableWidgetItem("(state)")
            self.compare.setItem(len(keys), 0, item)
            bad = QTableWidgetItem(f"unparsable: {comm.state_error or ''} {comm.state[:80]!r}")
            bad.setForeground(t.diverged_fg)
            self.compare.setItem(len(keys), 1, bad)
        # a view that holds nothing for this comm leaves the room to the others
        for i, side in enumerate(sources):
            has = bool(views.values.get(side)) or any(side in kd.values for _d, kd in diffs.values())
            self.compare.setColumnHidden(1 + i, not has and i > 0)
        if focus_row >= 0:
            self.compare.selectRow(focus_row)
            self.compare.scrollToItem(self.compare.item(focus_row, 0))
        else:
            self.compare.clearSelection()
            self.compare.scrollToTop()

    def _set_compare_columns(self, sources: tuple[str, ...], meta: frozenset[str]) -> None:
        aged = [s for s in sources if s not in meta]
        labels = ("Key", *(SOURCE_LABELS.get(s, s.capitalize()) for s in sources),
                  f"Age ({' / '.join(aged)})")
        if self.compare.columnCount() == len(labels) and all(
                self.compare.horizontalHeaderItem(i).text() == x for i, x in enumerate(labels)):
            return
        self.compare.clear()
        self.compare.setColumnCount(len(labels))
        self.compare.setHorizontalHeaderLabels(list(labels))
        hh = self.compare.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        hh.resizeSection(0, 150 if len(sources) < 4 else 120)
        for col, side in enumerate(sources, start=1):
            if side in meta:  # mostly "—": a describing view holds no state
                hh.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
                hh.resizeSection(col, 95)
            else:
                hh.setSectionResizeMode(col, QHeaderView.ResizeMode.Stretch)
        hh.setSectionResizeMode(len(labels) - 1, QHeaderView.ResizeMode.ResizeToContents)
        for col in range(len(labels)):
            self.compare.setColumnHidden(col, False)
        for col, side in enumerate(sources, start=1):
            self.compare.horizontalHeaderItem(col).setToolTip(SOURCE_TIPS.get(side, ""))
        self.compare.horizontalHeaderItem(len(labels) - 1).setToolTip(
            "how long ago each view last changed the key; “join”: it held the value when the inspector joined")

    # -- output content ----------------------------------------------------------------------------

    def _fill_content(self, out: OutputView) -> None:
        box = QWidget()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(6)
        muted = th.theme().muted_fg.name()
        if out.error:
            err = QLabel(f"<b>Not resolved:</b> {_esc(out.error)}")
            err.setWordWrap(True)
            lay.addWidget(err)
        for mime, entry in (out.resolved or {}).items():
            cap = QLabel(f"<span style='color:{muted}'>{_esc(mime)}</span>")
            lay.addWidget(cap)
            lay.addWidget(self._content_widget(mime, entry, box))
        if out.manifest is not None:
            cap = QLabel(f"<span style='color:{muted}'>manifest</span>")
            lay.addWidget(cap)
            view = json_view(box)
            view.setPlainText(pretty(out.manifest))
            view.setMinimumHeight(160)
            lay.addWidget(view)
        lay.addStretch(1)
        self.content_area.setWidget(box)

    def _content_widget(self, mime: str, entry: Any, parent: QWidget) -> QWidget:
        if mime.startswith("image/") and not mime.endswith("+xml"):
            label = QLabel(parent)
            label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
            text = content_text(entry)
            if text is not None:
                self._set_image(label, text.encode())
            elif isinstance(entry, dict) and isinstance(entry.get("base64"), str):
                self._set_image(label, entry["base64"].encode())  # a v4 blob, already fetched
            elif isinstance(entry, dict) and isinstance(entry.get("blob"), str):
                label.setText(f"fetching blob {entry['blob'][:12]}…")
                self._fetch_image(label, entry["blob"])
            else:
                label.setText("(no image data)")
            return label
        if isinstance(entry, dict) and "json" in entry:
            view = json_view(parent)
            view.setPlainText(pretty(entry["json"]))
            view.setMinimumHeight(min(300, 40 + 16 * view.document().blockCount()))
            return view
        text = content_text(entry)
        view = QPlainTextEdit(parent)
        view.setReadOnly(True)
        view.setFont(th.mono_font())
        if text is None:
            if isinstance(entry, dict) and "blob" in entry:
                text = f"blob {entry['blob']} ({entry.get('size') or '?'} bytes), not fetched"
            else:
                text = pretty(entry)
        view.setPlainText(text)
        view.setMinimumHeight(min(260, 30 + 16 * max(1, text.count("\n") + 1)))
        if view.minimumHeight() < 260:
            view.setMaximumHeight(view.minimumHeight())  # a short text gets a short box
        return view

    @staticmethod
    def _set_image(label: QLabel, data: bytes) -> bool:
        img = QImage()
        if not img.loadFromData(data):
            try:
                img.loadFromData(base64.b64decode(data.strip(), validate=False))
            except (binascii.Error, ValueError):
                pass
        if img.isNull():
            label.setText("(image could not be decoded)")
            return False
        pm = QPixmap.fromImage(img)
        if pm.width() > 640:
            pm = pm.scaledToWidth(640, Qt.TransformationMode.SmoothTransformation)
        label.setPixmap(pm)
        label.setToolTip(f"{img.width()} × {img.height()} px")
        return True

    def _fetch_image(self, label: QLabel, digest: str) -> None:
        if self.fetch_blob is None:
            label.setText(f"blob {digest[:12]}… (no blob server)")
            return

        async def run() -> None:
            try:
                blob = await self.fetch_blob(digest)  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - any failure is shown, not raised
                if _alive(label):
                    label.setText(f"blob {digest[:12]}…: {exc}")
                return
            if _alive(label):
                self._set_image(label, blob.data)

        try:
            task = asyncio.get_running_loop().create_task(run())
        except RuntimeError:
            label.setText(f"blob {digest[:12]}… (not fetched)")
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


SOURCE_LABELS = {"doc": "Document", "feed": "Feed", "kernel": "Kernel", "topology": "Topology",
                 "state": "State", "echo": "Echo", SAVED: "Saved notebook"}
SOURCE_TIPS = {
    "doc": "the notebook document's comms/{id} entry",
    "feed": "the CommSync feed: the comm_sync snapshot plus every later comm broadcast",
    "topology": "the runtime state's comms/{id}: target, seq and the model it names",
    "state": "the comms document (CommsDoc): the widget state the daemon keeps",
    "echo": "echo_update broadcasts: values the kernel reported through the daemon since the join",
    "kernel": "the kernel's IOPub (--kernel-connection): comm_open / update messages since the join",
    SAVED: "the notebook file's widget state: what a reopened notebook would restore",
}


def _own_views(comm: CommView | None, feed: FeedCommView | None) -> CompareViews:
    """The document's and the feed's state of a comm, when no engine compares them."""
    values = {}
    if comm is not None and isinstance(comm.state, dict):
        values["doc"] = {k: (v, None) for k, v in comm.state.items()}
    if feed is not None and isinstance(feed.state, dict):
        values["feed"] = {k: (v, None) for k, v in feed.state.items()}
    return CompareViews(("doc", "feed") if feed is not None else ("doc",), values)


def _differ(values: list[Any]) -> bool:
    """Two views hold different values (a view without the key does not know it: partial views)."""
    present = [v for v in values if v is not _MISSING]
    return any(v != present[0] for v in present[1:])


class _Missing:
    def __repr__(self) -> str:
        return "—"


_MISSING: Any = _Missing()


def _cell(value: Any) -> str:
    return "—" if value is _MISSING else preview(value, 200)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _alive(widget: QWidget) -> bool:
    try:
        import shiboken6

        return shiboken6.isValid(widget)
    except ImportError:
        return True


def _mark_saved_cell(item: QTableWidgetItem, saved: Any, room: list[Any]) -> None:
    """A saved value unlike the room's: what reopening the file would bring back instead."""
    present = [v for v in room if v is not _MISSING]
    if saved is _MISSING or not present or saved == present[0]:
        return
    item.setForeground(th.theme().info_fg)
    item.setToolTip(f"{item.text()}\na reopened notebook restores this, not the room's {_cell(present[0])}")


def _mark_compare_cell(item: QTableWidgetItem, col: int, ncols: int, key: str, status: str | None,
                       d: Any) -> None:
    """Colour one cell of a compare row by the key's status; the key cell gets the icon and why."""
    t = th.theme()
    if col == 0 and status:
        item.setIcon(th.status_icon(status))
        item.setText(f"{key}  ≠")
        if d is not None:
            tip = f"{d.status}: {d.kind}" + (f" — {d.detail}" if d.detail else "")
            item.setToolTip(tip + (f"\nmoved: {d.moved}" if getattr(d, "moved", None) else ""))
    if status == "diverged":
        item.setBackground(t.diverged_bg)
        if col == 0:
            item.setForeground(t.diverged_fg)
    elif status == "pending":
        item.setBackground(t.pending_bg)
    if col == ncols - 1:  # the ages column
        item.setForeground(t.muted_fg)
