"""The desktop window against the testbed daemon with a real ipykernel and real ipywidgets:
attach, tree content and order, live updates that keep expansion and selection, divergence from
a testbed fault, the detail pane's comparison, timeline filtering and tree selection from an
event, reconnect after the testbed restarts, and error states."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("PySide6")
qasync = pytest.importorskip("qasync")

from PySide6.QtCore import QModelIndex, Qt  # noqa: E402
from PySide6.QtTest import QAbstractItemModelTester, QTest  # noqa: E402
from waiting import qt_loop, until, wait_until  # noqa: E402

from inspector.testbed import TestbedThread  # noqa: E402
from inspector.ui import theme as th  # noqa: E402
from inspector.ui.main_window import InspectorWindow  # noqa: E402
from inspector.ui.recent import RecentConnections  # noqa: E402
from inspector.ui.timeline import EventRole  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.kernel]

# Screenshots go to tests/artifacts to be looked at; RUNTIMED_INSPECTOR_UPDATE_SCREENSHOTS=1 refreshes
# the committed ones in docs/screenshots instead (a test run must not dirty the checkout).
SHOTS = (os.path.join(os.path.dirname(__file__), "..", "docs", "screenshots")
         if os.environ.get("RUNTIMED_INSPECTOR_UPDATE_SCREENSHOTS") == "1"
         else os.path.join(os.path.dirname(__file__), "artifacts"))
os.makedirs(SHOTS, exist_ok=True)
CELLS = [
    "import ipywidgets as w\ns = w.IntSlider(value=1, description='speed')\ns",
    "t = w.Text(value='hello', description='name')\nt",
    "print('plain output')",
]


@pytest.fixture(scope="module")
def loop(qapp):
    yield from qt_loop(qapp)


_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="testbed-call")


@pytest.fixture(scope="module")
def bed():
    d = tempfile.mkdtemp(prefix="tbui", dir="/tmp")
    thread = TestbedThread(os.path.join(d, "rt.sock"), keep_alive=60.0).start()
    yield thread
    thread.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def window(qtbot, tmp_path, loop):
    win = InspectorWindow(recent=RecentConnections(tmp_path / "recent.json"))
    win.session_options = argparse.Namespace(allow_kernel_launch=True, quiet_ms=250, clear_ms=2000)
    win.resize(1360, 860)
    # shut down before pytest-qt closes and deletes the window (its teardown runs before ours)
    qtbot.addWidget(win, before_close_func=lambda w: loop.run_until_complete(w.shutdown()))
    win.show()
    QAbstractItemModelTester(win.model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    QAbstractItemModelTester(win.proxy, QAbstractItemModelTester.FailureReportingMode.Fatal)
    QAbstractItemModelTester(win.timeline.model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    QAbstractItemModelTester(win.timeline.proxy, QAbstractItemModelTester.FailureReportingMode.Fatal)
    yield win


def tb(loop, bed: TestbedThread, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a testbed call in a plain worker thread while the Qt/asyncio loop keeps running."""
    return loop.run_until_complete(asyncio.wrap_future(_POOL.submit(bed.call, fn, *args)))


def comm_rows(win: InspectorWindow) -> list[tuple[str, str, str]]:
    m = win.model
    comms = m.index_for_path("comms")
    return [(m.index(r, 0, comms).data(), m.index(r, 2, comms).data(), m.index(r, 3, comms).data())
            for r in range(m.rowCount(comms))]


def row_text(win: InspectorWindow, path: str, col: int) -> str | None:
    idx = win.model.index_for_path(path)
    node = win.model.node(idx)
    return idx.siblingAtColumn(col).data() if node is not None and node.path == path else None


def slider_id(win: InspectorWindow) -> str | None:
    for name, _info, cid in comm_rows(win):
        if name.endswith("IntSliderModel"):
            return cid
    return None


def test_attach_tree_live_update_and_timeline(window, bed, loop):
    nid = tb(loop, bed, bed.testbed.create_room, CELLS)
    window.attach(bed.socket_path, nid)
    until(loop, lambda: window.state == "live", what="live state")
    for i in range(len(CELLS)):
        tb(loop, bed, bed.testbed.run_cell, nid, i)
    until(loop, lambda: slider_id(window), what="slider comm in the tree")
    # cells in document order, with type, source first line, execution count and outputs
    cell_ids = tb(loop, bed, bed.testbed.cell_ids, nid)
    cells = window.model.index_for_path("cells")
    until(loop, lambda: window.model.index(2, 2, cells).data() == "[3] · 1 output", what="third cell output")
    assert [window.model.index(r, 3, cells).data() for r in range(window.model.rowCount(cells))] == cell_ids
    assert window.model.index(0, 1, cells).data() == "import ipywidgets as w"
    # comms in seq order
    rows = comm_rows(window)
    seqs = [int(name.split()[0][1:]) for name, _, _ in rows]
    assert seqs == sorted(seqs)
    assert any(name.endswith("TextModel") for name, _, _ in rows)

    sid = slider_id(window)
    assert window.select_path(f"comms/{sid}/state/value")
    window.tree.expand(window.proxy.mapFromSource(window.model.index_for_path(f"comms/{sid}")))
    assert window.detail.tabs.currentWidget() is window.detail.compare
    vbar = window.tree.verticalScrollBar()
    vbar.setValue(vbar.maximum() // 2)
    scroll = vbar.value()
    resets: list[int] = []
    window.model.modelReset.connect(lambda: resets.append(1))
    for v in (5, 6, 7):
        tb(loop, bed, bed.testbed.run_cell, nid, f"s.value = {v}")
    until(loop, lambda: row_text(window, f"comms/{sid}/state/value", 1) == "7", what="value 7 in the tree")
    assert resets == []
    cur = window.tree.currentIndex()
    assert cur.isValid() and cur.data() == "value"
    assert window.tree.isExpanded(window.proxy.mapFromSource(window.model.index_for_path(f"comms/{sid}")))
    assert abs(vbar.value() - scroll) <= 2
    # the new cells appeared at the end
    until(loop, lambda: window.model.rowCount(window.model.index_for_path("cells")) == 6, what="6 cells")

    # the timeline: filter to broadcasts only, pick a comm update, the tree follows
    tl = window.timeline
    until(loop, lambda: tl.proxy.rowCount() > 10, what="timeline rows")
    for kind, button in tl.kind_buttons.items():
        button.setChecked(kind == "broadcast")
    kinds = {tl.proxy.index(r, 2).data() for r in range(tl.proxy.rowCount())}
    assert kinds == {"broadcast"}
    tl.search.setText("update")
    until(loop, lambda: tl.proxy.rowCount() >= 3, timeout=5, what="three update broadcasts")
    window.select_path("cells")
    row = next(r for r in range(tl.proxy.rowCount()) if (tl.proxy.index(r, 0).data(EventRole).target or "")
               == f"comms/{sid}")
    tl.table.setCurrentIndex(tl.proxy.index(row, 0))
    assert window.model.node(window.proxy.mapToSource(window.tree.currentIndex())).path == f"comms/{sid}"
    assert "comm_msg" in tl.detail.toPlainText()
    # frames show a hex view
    tl.search.clear()
    for kind, button in tl.kind_buttons.items():
        button.setChecked(kind == "frame")
    tl.table.setCurrentIndex(tl.proxy.index(0, 0))
    assert "00000000  " in tl.detail.toPlainText()
    window.grab().save(os.path.join(SHOTS, "live-tree.png"))
    # recent connections remember this room
    assert window.recent.load()[0]["notebook"] == nid


def test_fault_divergence_colouring_navigation_and_detail(window, bed, loop):
    nid = tb(loop, bed, bed.testbed.create_room, CELLS[:2])
    window.attach(bed.socket_path, nid)
    until(loop, lambda: window.state == "live", what="live state")
    for i in range(2):
        tb(loop, bed, bed.testbed.run_cell, nid, i)
    until(loop, lambda: slider_id(window), what="slider")
    sid = slider_id(window)
    bed.call(bed.testbed.set_faults, ["feed-drop-update"])
    try:
        tb(loop, bed, bed.testbed.run_cell, nid, "s.value = 42")
        until(loop, lambda: (row_text(window, f"comms/{sid}", 2) or "").startswith("diverged"), timeout=15,
              what="diverged badge")
    finally:
        bed.call(bed.testbed.set_faults, [])
    t = th.theme()
    idx = window.model.index_for_path(f"comms/{sid}")
    assert idx.data(Qt.ItemDataRole.ForegroundRole) == t.diverged_fg
    assert "state_mismatch" in idx.siblingAtColumn(2).data()
    tip = idx.data(Qt.ItemDataRole.ToolTipRole)
    assert "doc: 42" in tip and "feed: 1" in tip
    key = window.model.index_for_path(f"comms/{sid}/state/value")
    # highlighted as just changed first, then the divergence colour once the highlight fades
    until(loop, lambda: key.data(Qt.ItemDataRole.BackgroundRole) == t.diverged_bg, timeout=5, what="diverged bg")
    assert "1 diverged" in window.status_div.text()
    # F8 goes to it, the detail pane compares doc and feed
    window.select_path("cells")
    assert window.goto_divergence(1)
    node = window.model.node(window.proxy.mapToSource(window.tree.currentIndex()))
    assert node.path == f"comms/{sid}"
    table = window.detail.compare
    assert window.detail.tabs.currentWidget() is table
    assert table.item(0, 0).text().startswith("value")
    assert (table.item(0, 1).text(), table.item(0, 2).text()) == ("42", "1")
    assert table.item(0, 1).background().color() == t.diverged_bg
    # only divergent filter
    window.act_only_div.setChecked(True)
    comms = window.proxy.mapFromSource(window.model.index_for_path("comms"))
    assert window.proxy.rowCount(comms) == 1
    assert window.proxy.rowCount(QModelIndex()) == 1
    window.grab().save(os.path.join(SHOTS, "divergence.png"))
    window.act_only_div.setChecked(False)


def test_reconnect_after_testbed_restart_and_error_states(window, loop, tmp_path):
    """The whole scenario runs inside one coroutine, so the loop keeps running while testbeds
    start and stop (in worker threads): reconnection timing is the app's, not the harness's."""
    sock = str(tmp_path / "rt.sock")

    async def wait(pred: Callable[[], Any], what: str, timeout: float = 40.0) -> None:
        await wait_until(pred, what, timeout)

    async def scenario() -> None:
        # nothing listens yet: the attach view says why, whole, and nothing is retried or remembered
        assert not await window._attach(sock, "nb-1", None)
        assert window.stack.currentWidget() is window.attach_view
        assert window.attach_view.error.isVisible() and "no socket" in window.attach_view.error.text()
        assert window.controller.session is None and window.recent.load() == []
        assert not window.attach_view.back_button.isVisible()  # nothing to go back to
        first = await asyncio.to_thread(lambda: TestbedThread(sock, keep_alive=60.0).start())
        bed2 = None
        try:
            nid = await asyncio.to_thread(first.call, first.testbed.create_room, ["x = 1"], "nb-1")
            window.attach(sock, "nb-1")
            await wait(lambda: window.state == "live", "live after the daemon appeared")
            await wait(lambda: window.recent.load() and window.recent.load()[0]["notebook"] == nid, "remembered")
            assert not window.attach_view.error.isVisible()
            await wait(lambda: window.model.rowCount(window.model.index_for_path("cells")) == 1, "one cell")
            await asyncio.to_thread(first.stop)
            first = None
            await wait(lambda: window.state in ("disconnected", "error"), "disconnected")
            await wait(lambda: "retrying in" in window.status_conn.text(), "countdown after the restart")
            bed2 = await asyncio.to_thread(lambda: TestbedThread(sock, keep_alive=60.0).start())
            await asyncio.to_thread(bed2.call, bed2.testbed.create_room, ["x = 1", "y = 2"], nid)
            await wait(lambda: window.state == "live", "live again")
            await wait(lambda: not window.banner.isVisible(), "banner gone once live")
            await wait(lambda: window.model.rowCount(window.model.index_for_path("cells")) == 2, "two cells")
            # a room that does not exist: checked before the working session is dropped, which stays
            working = window.controller.session
            window.show_attach()
            assert window.attach_view.back_button.isVisible()
            assert not await window._attach(sock, "no-such-room", None)
            assert window.controller.session is working and window.state == "live"
            assert window.notebook_id == nid
            assert "no room 'no-such-room'" in window.attach_view.error.text()
            assert all(r["notebook"] != "no-such-room" for r in window.recent.load())
            window.grab().save(os.path.join(SHOTS, "error-state.png"))
            # Esc goes back to the room still attached
            window.attach_view.socket_edit.setFocus()
            QTest.keyClick(window.attach_view.socket_edit, Qt.Key.Key_Escape)
            assert window.stack.currentWidget() is window.main_split
            assert window.model.rowCount(window.model.index_for_path("cells")) == 2
        finally:
            for b in (first, bed2):
                if b is not None:
                    await asyncio.to_thread(b.stop)

    loop.run_until_complete(scenario())
