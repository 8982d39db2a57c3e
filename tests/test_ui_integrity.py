"""The window's integrity parts on the room captured from the real runtimed 2.9.0 (replayed
through the session core with the integrity option, no daemon): the Liveness column and its
filter, the References tab (jump to a reference's target, back, "referenced by", how long an
unresolved reference has been unresolved), the Buffers tab (size, hash, media type, image
preview, hex view) and the saved notebook as one more compare column.

Set RUNTIMED_INSPECTOR_SHOTS to a directory to keep the screenshots (docs/screenshots)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import msgspec
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QBuffer, QByteArray, QIODevice  # noqa: E402
from PySide6.QtGui import QColor, QImage, QLinearGradient, QPainter  # noqa: E402
from PySide6.QtTest import QAbstractItemModelTester  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from test_integrity_session import make_core  # noqa: E402
from test_v4_session_replay import (  # noqa: E402
    JOINED_AT,
    LAYOUT,
    SLIDER,
    FileDriver,
    interactive_status,
    join,
    s2c,
)

from inspector.integrity import IntegrityTracker  # noqa: E402
from inspector.protocol.framing import FrameType  # noqa: E402
from inspector.snapshot import CommView  # noqa: E402
from inspector.ui.main_window import InspectorWindow  # noqa: E402
from inspector.ui.recent import RecentConnections  # noqa: E402
from inspector.ui.tree_nodes import LIVENESS_COL  # noqa: E402
from inspector.widget_buffers import describe  # noqa: E402

pytestmark = pytest.mark.gui

FIX = Path(__file__).resolve().parent / "fixtures" / "real-runtimed-2.9.0"
IMAGE = "ab" * 16


@pytest.fixture
def win(qtbot, tmp_path):
    w = InspectorWindow(recent=RecentConnections(tmp_path / "recent.json"))
    qtbot.addWidget(w)
    QAbstractItemModelTester(w.model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    QAbstractItemModelTester(w.proxy, QAbstractItemModelTester.FailureReportingMode.Fatal)
    QAbstractItemModelTester(w.detail.references.model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    QAbstractItemModelTester(w.detail.buffers.model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    w.resize(1500, 900)
    w.show()
    w.stack.setCurrentWidget(w.main_split)
    w._set_state("live", "")
    return w


def shot(w, name: str, tmp_path: Path) -> Path:
    out = Path(os.environ.get("RUNTIMED_INSPECTOR_SHOTS") or tmp_path) / name
    QApplication.processEvents()  # the status bar lays its labels out again after their new text
    assert w.grab().save(str(out))
    return out


def joined_room():
    core = make_core()
    drv, _rest = join(core)
    drv.feed(interactive_status(), JOINED_AT)
    return core


def png_bytes() -> bytes:
    img = QImage(96, 64, QImage.Format.Format_RGB32)
    p = QPainter(img)
    g = QLinearGradient(0, 0, 96, 64)
    g.setColorAt(0, QColor("#1a73e8"))
    g.setColorAt(1, QColor("#f9ab00"))
    p.fillRect(img.rect(), g)
    p.end()
    ba = QByteArray()
    buf = QBuffer(ba)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    img.save(buf, "PNG")
    return bytes(ba.data())


def current_path(w) -> str | None:
    node = w.current_node()
    return node.path if node is not None else None


def test_references_jump_to_the_target_and_back_and_show_who_references_a_comm(win, qtbot, tmp_path):
    snap = joined_room().snapshot()
    win.apply_snapshot(snap)
    assert win.select_path(f"comms/{SLIDER}")
    refs = win.detail.references
    tab = win.detail.tabs.indexOf(refs)
    assert win.detail.tabs.isTabVisible(tab) and win.detail.tabs.tabText(tab) == "References (3)"
    win.detail.tabs.setCurrentIndex(tab)
    rows = [(r.direction, r.path, r.other, r.status) for r in refs.model.rows]
    assert ("references", "state/layout", f"LayoutModel {LAYOUT}", "ok") in rows
    assert any(d == "referenced by" and other.startswith("cell:") for d, _p, other, _s in rows)
    assert "3 references" not in refs.summary.text() and "2 references" in refs.summary.text()
    shot(win, "integrity-references.png", tmp_path)
    # follow the layout reference: the tree goes there, and the layout says who holds it
    row = next(i for i, r in enumerate(refs.model.rows) if r.nav == f"comms/{LAYOUT}")
    with qtbot.waitSignal(refs.navigate, timeout=2000):
        refs.table.activated.emit(refs.model.index(row, 0))
    assert current_path(win) == f"comms/{LAYOUT}"
    assert [(r.direction, r.other) for r in refs.model.rows] == [("referenced by", f"IntSliderModel {SLIDER}")]
    assert refs.back.isEnabled()
    refs.back.click()
    assert current_path(win) == f"comms/{SLIDER}" and not refs.back.isEnabled()
    # from the slider to the cell that displays it
    row = next(i for i, r in enumerate(refs.model.rows) if r.direction == "referenced by")
    assert refs.follow(row)
    assert (current_path(win) or "").startswith("cells/")


def test_an_unresolved_view_shows_how_long_and_turns_into_a_finding(win, qtbot, tmp_path):
    core = make_core()
    drv = FileDriver(core)
    frames = list(s2c(5))
    core.begin(4, t=frames[0][1])
    core.bootstrap(frames[0][0], frames[0][1])
    last = 0.0
    for payload, t, f in frames[1:]:
        if t >= JOINED_AT:
            break
        if f.get("frame_type") != FrameType.COMMS_SYNC:  # the comms document never arrives
            drv.feed(payload, t)
            last = t
    snap = core.snapshot()
    win.apply_snapshot(snap)
    (view,) = [r for r in snap.integrity.references.references if r.kind == "view"]
    assert win.select_path(f"cells/{view.holder.removeprefix('cell:')}")
    refs = win.detail.references
    (row,) = refs.model.rows
    assert (row.nav, row.status, row.finding) == (f"comms/{SLIDER}", "no_state", False)
    assert "forward" in refs.summary.text()
    drv.until(last + 3.5)
    win.apply_snapshot(core.snapshot())
    (row,) = refs.model.rows
    assert row.finding and 3.0 <= row.unresolved_for_s <= 3.6
    shown = refs.model.index(0, 5).data()
    assert shown.endswith(" s") and float(shown[:-2]) >= 3.0
    assert "(finding)" in refs.model.index(0, 4).data()
    assert "unresolved past the settle window" in refs.summary.text()
    assert "integrity warning" in win.status_div.text()
    win.detail.tabs.setCurrentWidget(refs)
    shot(win, "integrity-unresolved.png", tmp_path)
    # the Liveness column: topology without state past the window
    node = win.model.node_at(f"comms/{SLIDER}")
    assert node is not None and node.liveness == "orphaned"
    assert win.model.index(node.row, LIVENESS_COL, win.model.index_for_path("comms")).data() == "orphaned"


def test_liveness_column_and_filter(win, qtbot):
    snap = joined_room().snapshot()
    win.apply_snapshot(snap)
    comms = win.model.index_for_path("comms")
    shown = {win.model.index(r, 3, comms).data(): win.model.index(r, LIVENESS_COL, comms).data()
             for r in range(win.model.rowCount(comms))}
    assert set(shown.values()) == {"live-bound"} and SLIDER in shown
    assert not win.tree.isColumnHidden(LIVENESS_COL)
    hh = win.tree.header()
    assert hh.visualIndex(LIVENESS_COL) == hh.visualIndex(2) + 1  # next to Info
    box = win.liveness_filter
    box.setCurrentIndex(box.findData("replay-only"))
    assert win.proxy.liveness == "replay-only"
    assert win.proxy.rowCount(win.proxy.mapFromSource(comms)) == 0
    assert "Nothing" in win.empty_label.text() or win.empty_label.isVisible()
    box.setCurrentIndex(box.findData("live-bound"))
    pcomms = win.proxy.mapFromSource(comms)
    assert win.proxy.rowCount(pcomms) == len(snap.comms)
    assert not win.proxy.mapFromSource(win.model.index_for_path("cells")).isValid()  # no comm below
    box.setCurrentIndex(0)
    assert win.proxy.liveness == "" and win.proxy.mapFromSource(win.model.index_for_path("cells")).isValid()


def test_an_image_buffer_shows_size_hash_media_type_preview_and_hex(win, qtbot, tmp_path):
    data = png_bytes()
    digest = hashlib.sha256(data).hexdigest()
    base = joined_room().snapshot()
    image = CommView(comm_id=IMAGE, seq=9, target_name="jupyter.widget", model_module="@jupyter-widgets/controls",
                     model_name="ImageModel",
                     state={"_model_name": "ImageModel", "format": "png", "width": "", "height": "",
                            "layout": f"IPY_MODEL_{LAYOUT}",
                            "value": {"blob": digest, "size": len(data), "media_type": "application/octet-stream"}},
                     state_error=None, outputs=(), writer="rt:kernel:f439c045",
                     key_writers={"value": "rt:kernel:f439c045"})
    snap = msgspec.structs.replace(base, comms=(*base.comms, image))
    rep = IntegrityTracker().update(snap, now=1.0)
    (ref,) = rep.buffers
    rep = msgspec.structs.replace(rep, buffers=(describe(ref, data, "application/octet-stream"),))
    win.detail.buffers.blob_bytes = {digest: data}.get
    win.apply_snapshot(msgspec.structs.replace(snap, integrity=rep))
    # the tree row says what the value is instead of `{3 keys}`
    key = win.model.node_at(f"comms/{IMAGE}/state/value")
    assert key is not None and key.cols[1].startswith(f"blob {len(data) / 1024:.1f} KiB image/png 96×64 {digest[:12]}") \
        if len(data) >= 1024 else key.cols[1].startswith(f"blob {len(data)} B image/png 96×64 {digest[:12]}")
    assert win.select_path(f"comms/{IMAGE}/state/value")
    bufs = win.detail.buffers
    assert win.detail.tabs.currentWidget() is bufs  # a binary key opens on its bytes
    cells = [bufs.model.index(0, c).data() for c in range(len(bufs.model.HEADERS))]
    assert cells[0] == "value" and cells[2] == "image/png 96×64" and cells[3] == digest[:16] + "…"
    assert cells[4] == "content_ref" and cells[6] == "hash ok"
    pm = bufs.preview.pixmap()
    assert not pm.isNull() and (pm.width(), pm.height()) == (96, 64)
    assert bufs.hex.toPlainText().startswith("00000000  89 50 4e 47 0d 0a 1a 0a")
    shot(win, "integrity-buffer.png", tmp_path)
    # a bytes-less buffer says why, no preview
    win.detail.buffers.blob_bytes = lambda _d: None
    bufs.shown = None
    bufs.show_buffers(list(rep.buffers))
    assert "not fetched" in bufs.preview.text() and bufs.hex.toPlainText() == ""


def test_the_saved_notebook_is_one_more_column_of_the_compare_table(win, qtbot, tmp_path):
    nb = json.loads((FIX / "widget-demo.saved.ipynb").read_text())
    nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"][SLIDER]["state"]["value"] = 42
    path = tmp_path / "saved.ipynb"
    path.write_text(json.dumps(nb))
    core = make_core(saved=str(path))
    drv, _rest = join(core)
    drv.feed(interactive_status(), JOINED_AT)

    class Session:  # the window reads the session's binding for compare views and the saved file
        divergence = core.divergence
        integrity = core.integrity

    win.controller.session = Session()  # type: ignore[assignment]
    win.detail.key_views = win._key_views  # as attach() sets it
    try:
        win.apply_snapshot(core.snapshot())
        assert win.select_path(f"comms/{SLIDER}/state/value")
        table = win.detail.compare
        headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
        assert "Saved notebook" in headers
        col = headers.index("Saved notebook")
        row = next(r for r in range(table.rowCount()) if table.item(r, 0).text().startswith("value"))
        item = table.item(row, col)
        assert item.text() == "42" and "reopened notebook restores this" in item.toolTip()
        assert not table.isColumnHidden(col)
        assert "saved notebook" in win.status_div.toolTip()
    finally:
        win.controller.session = None
