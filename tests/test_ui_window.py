"""The window as its user meets it, on synthetic snapshots (no daemon): what a click at a chip's
centre does, what Ctrl+C copies from each pane, ages that move on while the room is idle, column
widths at 1024x700 and 1600x1000, the "Only divergent" switch, pause, notifications, help, keys."""

from __future__ import annotations

import json
import logging
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import msgspec
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QTextCursor  # noqa: E402
from PySide6.QtTest import QAbstractItemModelTester, QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from inspector import events as ev  # noqa: E402
from inspector.ui import sample_snapshots as ss  # noqa: E402
from inspector.ui.ages import aged  # noqa: E402
from inspector.ui.main_window import InspectorWindow  # noqa: E402
from inspector.ui.recent import RecentConnections  # noqa: E402
from inspector.ui.tree_nodes import WRITER_COL  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def win(qtbot, tmp_path):
    w = InspectorWindow(recent=RecentConnections(tmp_path / "recent.json"))
    qtbot.addWidget(w)
    QAbstractItemModelTester(w.model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    QAbstractItemModelTester(w.proxy, QAbstractItemModelTester.FailureReportingMode.Fatal)
    w.resize(1280, 820)
    w.show()
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=3000)
    w.stack.setCurrentWidget(w.main_split)
    w._set_state("live", "")
    return w


def _snap(**kw):
    snap = ss.make_snapshot(n_cells=8, n_comms=6, **kw)
    return ss.diverge(snap, 2, 3, 7)


def _path_of_current(w):
    node = w.current_node()
    return node.path if node is not None else None


# -- 1. the timeline's chips take clicks -------------------------------------------------------------

def test_every_timeline_chip_toggles_on_a_click_at_its_centre_and_at_its_left_third(win, qtbot):
    tl = win.timeline
    for kind, button in tl.kind_buttons.items():
        for x in (button.width() // 2, button.width() // 6):
            point = QPoint(x, button.height() // 2)
            assert tl.childAt(button.mapTo(tl, point)) is button, f"something covers {kind} at x={x}"
            before = button.isChecked()
            qtbot.mouseClick(button, Qt.MouseButton.LeftButton, pos=point)
            assert button.isChecked() is not before
            assert (kind in tl.proxy.kinds) is button.isChecked()
    # the event count is in the bar, beside the filter, not on top of a chip
    assert tl.count_label.isVisible() and tl.count_label.geometry().left() > max(
        b.geometry().right() for b in tl.kind_buttons.values())


# -- 2. Ctrl+C copies what has the focus --------------------------------------------------------------

def _ctrl_c(widget):
    QTest.keyClick(widget, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    return QGuiApplication.clipboard().text()


def test_ctrl_c_copies_what_has_focus_text_compare_cell_event_or_node(win, qtbot):
    snap = _snap()
    win.apply_snapshot(snap)
    cid = snap.comms[2].comm_id
    assert win.select_path(f"comms/{cid}")
    # the tree has the focus: the node as JSON
    win.tree.setFocus()
    qtbot.waitUntil(win.tree.hasFocus)
    copied = json.loads(_ctrl_c(win.tree))
    assert copied["doc"]["comm_id"] == cid
    # a cell of the compare table: that value, not the node
    table = win.detail.compare
    table.setFocus()
    qtbot.waitUntil(table.hasFocus)
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).text().startswith("value"))
    table.setCurrentCell(row, 2)
    assert _ctrl_c(table) == "7"
    table.setCurrentCell(row, 0)
    assert _ctrl_c(table) == "value"
    # selected text in the event pane
    log = ev.EventLog()
    win.timeline.attach(log)
    log.emit(ev.BROADCAST, "comm update for slider", {"event": "comm"})
    win.timeline.model.flush()
    win.timeline.table.setCurrentIndex(win.timeline.proxy.index(0, 0))
    detail = win.timeline.detail
    cursor = detail.textCursor()
    cursor.movePosition(QTextCursor.MoveOperation.Start)
    cursor.movePosition(QTextCursor.MoveOperation.NextWord, QTextCursor.MoveMode.KeepAnchor, 2)
    detail.setTextCursor(cursor)
    detail.setFocus()
    qtbot.waitUntil(detail.hasFocus)
    selected = cursor.selectedText()
    assert selected and _ctrl_c(detail) == selected.replace("\u2029", "\n")
    # the timeline's table: the event
    win.timeline.table.setFocus()
    qtbot.waitUntil(win.timeline.table.hasFocus)
    assert json.loads(_ctrl_c(win.timeline.table))["summary"] == "comm update for slider"


def test_copy_a_value_a_key_and_a_path_from_the_tree(win):
    snap = _snap()
    win.apply_snapshot(snap)
    cid = snap.comms[0].comm_id
    assert win.select_path(f"comms/{cid}/state/description")
    clip = QGuiApplication.clipboard()
    win.act_copy_value.trigger()
    assert clip.text() == "x"  # the string itself, not JSON of it
    win.act_copy_key.trigger()
    assert clip.text() == "description"
    win.act_copy_path.trigger()
    assert clip.text() == f"comms/{cid}/state → description"
    # the tree's context menu offers the same
    texts = [a.text() for a in win.tree.actions() if not a.isSeparator()]
    assert {"Copy value", "Copy key", "Copy path", "Copy node as JSON"} <= set(texts)


# -- 3. ages move on while the room is idle --------------------------------------------------------

def test_divergence_ages_advance_with_time_though_no_new_snapshot_arrives(win, qtbot):
    snap = _snap()
    win.apply_snapshot(snap)
    cid = snap.comms[2].comm_id
    win.select_path(f"comms/{cid}")
    table = win.detail.compare
    age_col = table.columnCount() - 1
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).text().startswith("value"))
    first = table.item(row, age_col).text()
    assert first.startswith("5.1 s")  # doc 5,100 ms ago at the snapshot
    tip = win.model.index_for_path(f"comms/{cid}").data(Qt.ItemDataRole.ToolTipRole)
    assert "for 4.2 s" in tip
    # one session snapshot, shown again and again: the ages still count
    qtbot.waitUntil(lambda: table.item(row, age_col).text() != first, timeout=4000)
    assert float(table.item(row, age_col).text().split(" s")[0]) > 5.1
    assert win.snapshot.divergence[0].since_ms > 4200
    assert "for 4.2 s" not in win.model.index_for_path(f"comms/{cid}").data(Qt.ItemDataRole.ToolTipRole)
    # the row does not light up as "changed" for an age that moved on
    assert win.model.node_at(f"comms/{cid}").changed_at == 0.0
    # and the compare row the user picked stays picked while the ages move on
    table.setCurrentCell(row + 1, 1)
    picked = table.item(row + 1, 0).text()
    seen = table.item(row, age_col).text()
    qtbot.waitUntil(lambda: table.item(row, age_col).text() != seen, timeout=4000)
    assert table.currentRow() == row + 1 and table.item(table.currentRow(), 0).text() == picked


def test_aged_moves_every_age_on_and_keeps_join_values_ageless():
    snap = _snap()
    d = snap.divergence[0]
    d = msgspec.structs.replace(d, keys=(msgspec.structs.replace(d.keys[0], kernel_age_ms=None,
                                                                 ages_ms={"state": 10.0}),))
    snap = msgspec.structs.replace(snap, divergence=(d,))
    later = aged(snap, snap.taken_at + 2.0)
    k = later.divergence[0].keys[0]
    assert later.divergence[0].since_ms == pytest.approx(d.since_ms + 2000)
    assert k.doc_age_ms == pytest.approx(d.keys[0].doc_age_ms + 2000)
    assert k.kernel_age_ms is None and k.ages_ms == {"state": pytest.approx(2010.0)}
    assert aged(ss.make_snapshot()) is not None


# -- 6. column widths ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(1024, 700), (1600, 1000)])
def test_value_column_and_status_bar_are_readable_at_common_sizes(qtbot, tmp_path, size):
    w = InspectorWindow(recent=RecentConnections(tmp_path / "r.json"))
    qtbot.addWidget(w)
    w.resize(*size)
    w.show()
    qtbot.waitExposed(w)
    w.stack.setCurrentWidget(w.main_split)
    w._set_state("live", "")
    w.apply_snapshot(_snap())
    qtbot.waitUntil(lambda: w.tree.viewport().width() > 0)
    viewport = w.tree.viewport().width()
    # the value column keeps at least 30 % of the tree (it shrank to 1-2 characters at 1024)
    assert w.value_column_width() >= viewport * 0.3 and w.value_column_width() >= 150
    shown = sum(w.tree.header().sectionSize(c) for c in range(w.model.columnCount())
                if not w.tree.isColumnHidden(c))
    assert shown <= viewport + 2  # nothing runs off to the right
    # the status bar's verdict and traffic fit the window
    w.status_traffic.setText("↓ 12,345 frames 1.2 MB · ↑ 1,234 frames 80.2 KB")
    for label in (w.status_div, w.status_traffic):
        qtbot.waitUntil(lambda label=label: label.width() >= label.sizeHint().width(), timeout=3000)
        right = label.mapTo(w, QPoint(label.width(), 0)).x()
        assert label.isVisible() and right <= w.width()
    if size[0] >= 1600:
        assert not w.tree.isColumnHidden(3)  # room for the ids


# -- 7. Only divergent -------------------------------------------------------------------------------

def test_only_divergent_keeps_expansion_says_when_nothing_diverged_and_clears_the_detail(win, qtbot):
    snap = _snap()
    win.apply_snapshot(snap)
    comm0 = snap.comms[0].comm_id
    cell = win.model.index_for_path(f"cells/{snap.cells[1].id}")
    win.tree.expand(win.proxy.mapFromSource(win.model.index_for_path(f"comms/{comm0}")))
    win.tree.expand(win.proxy.mapFromSource(cell))
    win.select_path(f"comms/{comm0}")
    assert win.detail.title.text().startswith("Comm #0")
    win.act_only_div.setChecked(True)
    # comm 0 is in sync: it is no longer listed, so the detail pane no longer shows it
    assert not win.proxy.mapFromSource(win.model.index_for_path(f"comms/{comm0}")).isValid()
    assert win.detail.title.text() == "Nothing selected" or not win.detail.title.text().startswith("Comm #0")
    win.act_only_div.setChecked(False)
    assert win.tree.isExpanded(win.proxy.mapFromSource(win.model.index_for_path(f"comms/{comm0}")))
    assert win.tree.isExpanded(win.proxy.mapFromSource(cell))
    assert win.tree.isExpanded(win.proxy.mapFromSource(win.model.index_for_path("comms")))
    # nothing diverged: a message, not an empty pane
    win.apply_snapshot(ss.make_snapshot(n_cells=8, n_comms=6))
    win.act_only_div.setChecked(True)
    assert win.proxy.rowCount() == 0
    assert win.empty_label.isVisible() and "Nothing has diverged" in win.empty_label.text()
    win.act_only_div.setChecked(False)
    assert not win.empty_label.isVisible()
    # a search with no match says so too, and Esc clears it
    win.search.setFocus()
    qtbot.keyClicks(win.search, "no-such-thing")
    qtbot.waitUntil(lambda: win.proxy.rowCount() == 0)
    assert "No row matches" in win.empty_label.text()
    QTest.keyClick(win.search, Qt.Key.Key_Escape)
    assert win.search.text() == "" and win.proxy.rowCount() > 0 and not win.empty_label.isVisible()


# -- 9. smaller things --------------------------------------------------------------------------------

def test_rows_say_something_useful_and_count_in_proper_english(win):
    snap = _snap()
    snap = msgspec.structs.replace(snap, comms=tuple(msgspec.structs.replace(c, writer="rt:kernel:1a2b")
                                                     for c in snap.comms))
    win.apply_snapshot(snap)
    comms = win.model.index_for_path("comms")
    values = [win.model.index(r, 1, comms).data() for r in range(win.model.rowCount(comms))]
    assert "jupyter.widget" not in values
    assert values[0] == '"x" = 50'  # an IntSlider: its description and value
    assert values[5] == "1 of 2 keys set"  # a layout: how much of it is set
    assert win.model.index(0, WRITER_COL, comms).data() == "rt:kernel:1a2b"
    assert win.model.headerData(WRITER_COL, Qt.Orientation.Horizontal) == "Writer"
    from inspector.ui.tree_nodes import preview

    assert preview({"a": 1}) == "{1 key}" and preview([1]) == "[1 item]" and preview([1, 2]) == "[2 items]"


def test_no_divergence_is_not_claimed_while_disconnected_and_traffic_has_units(win):
    win.apply_snapshot(ss.make_snapshot())
    assert "no divergence" in win.status_div.text()
    win._set_state("disconnected", "the daemon closed the connection")
    assert "no divergence" not in win.status_div.text() and "no verdict" in win.status_div.text()


def test_tab_leaves_the_compare_table_and_ctrl_digits_focus_the_panes(win, qtbot):
    snap = _snap()
    win.apply_snapshot(snap)
    win.select_path(f"comms/{snap.comms[2].comm_id}")
    table = win.detail.compare
    table.setFocus()
    qtbot.waitUntil(table.hasFocus)
    QTest.keyClick(table, Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is not table
    QTest.keyClick(win, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(win.tree.hasFocus)
    QTest.keyClick(win.tree, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(table.hasFocus)
    QTest.keyClick(table, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(win.timeline.table.hasFocus)
    # F8 / Shift+F8 move between divergences from the keyboard
    snap = ss.diverge(snap, 4, 1, 2)
    win.apply_snapshot(snap)
    win.tree.setFocus()
    qtbot.waitUntil(win.tree.hasFocus)
    QTest.keyClick(win.tree, Qt.Key.Key_F8)
    first = _path_of_current(win)
    QTest.keyClick(win.tree, Qt.Key.Key_F8)
    second = _path_of_current(win)
    assert {first, second} == {f"comms/{snap.comms[2].comm_id}", f"comms/{snap.comms[4].comm_id}"}
    QTest.keyClick(win.tree, Qt.Key.Key_F8, Qt.KeyboardModifier.ShiftModifier)
    assert _path_of_current(win) == first


# -- missed: pause, notification, help, logging ------------------------------------------------------

def test_pause_freezes_the_view_while_snapshots_keep_coming_and_resume_shows_the_newest(win):
    snap = ss.make_snapshot(n_cells=8, n_comms=6)
    win.controller.snapshot_ready.emit(snap)
    cid = snap.comms[0].comm_id
    value = f"comms/{cid}/state/value"
    assert win.model.node_at(value).cols[1] == "50"
    win.act_pause.setChecked(True)
    win.controller.snapshot_ready.emit(ss.set_comm_value(snap, 0, 77))
    win.controller.snapshot_ready.emit(ss.set_comm_value(snap, 0, 78))
    assert win.model.node_at(value).cols[1] == "50"
    assert win.pause_banner.isVisible() and "2 updates not shown" in win.pause_banner.text()
    win.act_pause.setChecked(False)
    assert win.model.node_at(value).cols[1] == "78"
    assert not win.pause_banner.isVisible()


def test_a_divergence_appearing_in_the_background_is_announced_and_logged(win, qtbot, caplog):
    caplog.set_level(logging.INFO, logger="inspector.ui.main_window")
    win.controller.snapshot_ready.emit(ss.make_snapshot(n_cells=4, n_comms=6))
    win.controller.snapshot_ready.emit(_snap())  # in front: logged, not announced
    assert win.notifications == []
    assert any("divergence: comm" in r.message and "state_mismatch" in r.message for r in caplog.records)
    win.showMinimized()
    qtbot.waitUntil(win.in_background)
    with qtbot.waitSignal(win.divergence_notified) as blocker:
        win.controller.snapshot_ready.emit(ss.diverge(_snap(), 4, 1, 2))
    assert blocker.args[0] == [ss.comm_id(4)]
    assert win.notifications and "state_mismatch" in win.notifications[-1]
    win._on_state("disconnected", "the daemon closed the connection")
    assert any("connection disconnected" in r.message for r in caplog.records)
    # a retry that fails the same way is not logged again at warning level
    win._on_state("connecting", "")
    win._on_state("disconnected", "the daemon closed the connection")
    warned = [r for r in caplog.records if "connection disconnected" in r.message and r.levelno >= logging.WARNING]
    assert len(warned) == 1


def test_help_lists_shortcuts_about_names_versions_and_verdicts_are_explained(win):
    rows = dict((k, t) for t, k in win.shortcut_rows())
    assert rows["F8"] == "Next ▶" and rows["Ctrl+C"] == "Copy" and rows["Ctrl+P"] == "Pause"
    assert rows["F1"] == "Keyboard shortcuts"
    win.apply_snapshot(_snap())
    about = win.about_text()
    from inspector import __version__

    assert __version__ in about and "0.9.1" in about and "protocol 2" in about
    from PySide6.QtWidgets import QTextBrowser

    win.act_verdicts.trigger()
    shown = win._dialog.findChild(QTextBrowser).toPlainText()
    for word in ("pending", "diverged", "settle window", "state_mismatch", "orphan_topology"):
        assert word in shown
    win._dialog.close()
    assert [m.title().replace("&", "") for m in win.menus.values()] == ["File", "Edit", "View", "Go", "Help"]
    assert win.windowTitle() == ""  # the application's name is added once, by Qt


# -- 4. the attach view ------------------------------------------------------------------------------

def test_attach_view_shows_a_daemons_whole_error_and_offers_back_only_when_attached(qtbot, tmp_path):
    import asyncio

    from waiting import qt_loop

    from inspector.ui.attach import AttachView

    loop_gen = qt_loop(QApplication.instance())
    loop = next(loop_gen)
    try:
        not_a_socket = tmp_path / ("a-long-directory-name-" * 4) / "runtimed.sock"
        not_a_socket.parent.mkdir(parents=True)
        not_a_socket.write_text("")
        view = AttachView(RecentConnections(tmp_path / "r.json"), extra_sockets=[str(not_a_socket)])
        qtbot.addWidget(view)
        view.resize(1024, 640)
        view.show()
        loop.run_until_complete(view._discover())
        top = view.daemons.topLevelItem(0)
        assert top.text(0) == str(not_a_socket)
        lines = [top.child(i).text(0) for i in range(top.childCount())]
        message = " ".join(lines)
        assert message.endswith("is not a Unix socket")  # the cause, at the end, is not cut out
        assert str(not_a_socket) in message.replace(" ", "") or str(not_a_socket) in message
        assert all(top.child(i).isFirstColumnSpanned() for i in range(top.childCount()))
        assert not view.back_button.isVisible()
        view.set_back_target("widgets.ipynb")
        assert view.back_button.isVisible() and "widgets.ipynb" in view.back_button.text()
        with qtbot.waitSignal(view.back_requested):
            view.back_button.click()
        asyncio.set_event_loop(loop)
    finally:
        loop_gen.close()


def test_compare_values_stay_readable_at_1024_once_a_kernel_column_appears(qtbot, tmp_path):
    w = InspectorWindow(recent=RecentConnections(tmp_path / "r.json"))
    qtbot.addWidget(w)
    w.resize(1024, 700)
    w.show()
    qtbot.waitExposed(w)
    w.stack.setCurrentWidget(w.main_split)
    snap = _snap()
    d = snap.divergence[0]
    d = msgspec.structs.replace(d, keys=(msgspec.structs.replace(d.keys[0], kernel=7, kernel_age_ms=130.0,
                                                                 present=("doc", "feed", "kernel")),))
    w.apply_snapshot(msgspec.structs.replace(snap, divergence=(d,)))
    w.select_path(f"comms/{snap.comms[2].comm_id}")
    table = w.detail.compare
    assert not table.isColumnHidden(3)  # the kernel column is there
    hh = table.horizontalHeader()
    qtbot.waitUntil(lambda: table.viewport().width() > 0)
    for col in (1, 2, 3):
        # "IntSliderModel" in quotes needs about 16 characters; the columns shrank to 2-3 before
        assert hh.sectionSize(col) >= 70, (col, hh.sectionSize(col))
    assert sum(hh.sectionSize(c) for c in range(table.columnCount()) if not table.isColumnHidden(c)) \
        <= table.viewport().width() + 2


def test_v4_compare_ages_are_read_again_every_second_while_the_room_is_idle(win, qtbot):
    """A stand-in for the v4 engine's `key_views` (a real runtimed 2.9 is not started by this
    suite): each view's age of a key grows with the clock, as the engine reports it."""
    import time

    from inspector.divergence import CompareViews

    snap = ss.make_snapshot(n_cells=4, n_comms=3)
    cid = snap.comms[0].comm_id
    changed_at = time.monotonic() - 3.0

    def key_views(comm_id):
        age = (time.monotonic() - changed_at) * 1000
        if comm_id != cid:
            return None
        return CompareViews(sources=("topology", "state"), meta=frozenset({"topology"}),
                            values={"topology": {"seq": (0, None)}, "state": {"value": (50, age)}})

    win.detail.key_views = key_views
    win.apply_snapshot(snap)
    win.select_path(f"comms/{cid}")
    table = win.detail.compare
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).text() == "value")
    age_col = table.columnCount() - 1
    first = table.item(row, age_col).text()
    assert first.startswith("3.")
    qtbot.waitUntil(lambda: table.item(row, age_col).text() != first, timeout=4000)


def test_timeline_pause_holds_events_and_esc_clears_its_filter(win, qtbot):
    log = ev.EventLog()
    win.timeline.attach(log)
    log.emit(ev.BROADCAST, "first", {})
    win.timeline.model.flush()
    win.act_pause.setChecked(True)
    log.emit(ev.BROADCAST, "second", {})
    log.emit(ev.BROADCAST, "third", {})
    win.timeline.model.flush()
    assert win.timeline.model.rowCount() == 1
    win.timeline._update_count()
    assert "paused, 2 waiting" in win.timeline.count_label.text()
    win.act_pause.setChecked(False)
    assert win.timeline.model.rowCount() == 3
    search = win.timeline.search
    search.setFocus()
    qtbot.waitUntil(search.hasFocus)
    qtbot.keyClicks(search, "third")
    assert win.timeline.proxy.rowCount() == 1 and "1 of 3 events" in win.timeline.count_label.text()
    QTest.keyClick(search, Qt.Key.Key_Escape)
    assert search.text() == "" and win.timeline.proxy.rowCount() == 3
