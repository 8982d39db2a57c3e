"""The desktop window attached to a room of the real runtimed 2.9.0 (protocol v4): the tree shows
the daemon's cells and comms (seq order, state from the comms document, the kernel as writer), a
slider change made by the kernel shows up in place, and the send_comm divergence colours the comm
with the kernel as the side that moved."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("PySide6")
qasync = pytest.importorskip("qasync")

from PySide6.QtCore import QPersistentModelIndex, Qt  # noqa: E402
from PySide6.QtTest import QAbstractItemModelTester  # noqa: E402
from waiting import qt_loop, wait_until  # noqa: E402

from inspector.pool import PoolClient  # noqa: E402
from inspector.protocol import messages as m  # noqa: E402
from inspector.ui import theme as th  # noqa: E402
from inspector.ui.main_window import InspectorWindow  # noqa: E402
from inspector.ui.recent import RecentConnections  # noqa: E402

pytestmark = [pytest.mark.real_daemon, pytest.mark.gui]

ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "artifacts")
MODELS = ["LayoutModel", "SliderStyleModel", "IntSliderModel", "LayoutModel", "OutputModel"]


@pytest.fixture(scope="module")
def loop(qapp):
    yield from qt_loop(qapp)


@pytest.fixture
def window(qtbot, tmp_path, loop):
    win = InspectorWindow(recent=RecentConnections(tmp_path / "recent.json"))
    win.session_options = argparse.Namespace(kernel_connection="auto", quiet_ms=250, clear_ms=2000)
    win.resize(1360, 860)
    # shut down before pytest-qt closes and deletes the window (its teardown runs before ours)
    qtbot.addWidget(win, before_close_func=lambda w: loop.run_until_complete(w.shutdown()))
    win.show()
    for model in (win.model, win.proxy, win.timeline.model, win.timeline.proxy):
        QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    yield win


async def wait(pred: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    return await wait_until(pred, what, timeout)


def children(win: InspectorWindow, path: str, col: int) -> list[str]:
    mdl = win.model
    parent = mdl.index_for_path(path)
    return [mdl.index(r, col, parent).data() for r in range(mdl.rowCount(parent))]


def text_at(win: InspectorWindow, path: str, col: int) -> str | None:
    idx = win.model.index_for_path(path)
    node = win.model.node(idx)
    return idx.siblingAtColumn(col).data() if node is not None and node.path == path else None


def test_window_on_a_real_v4_room(window, loop, real_socket, widget_room):
    nb = widget_room.notebook_id

    async def scenario() -> None:
        async with PoolClient(real_socket, 4) as pool:
            daemon_view = await pool.request(m.InspectNotebook(notebook_id=nb))
        window.attach(real_socket, nb)
        await wait(lambda: window.state == "live", "the live state")
        await wait(lambda: len(children(window, "comms", 0)) == len(MODELS), "five comms in the tree")

        # cells in the daemon's order, the outputs of their executions
        assert children(window, "cells", 3) == [c["id"] for c in daemon_view.cells]
        cells = children(window, "cells", 2)
        assert cells[-2:] == ["[1] · 2 outputs", "[2] · 1 output"]
        last = daemon_view.cells[-1]["id"]
        assert text_at(window, f"cells/{last}/outputs/0", 1) == "2"  # the execute_result of `1 + 1`

        # comms in seq order, state from the comms document, written by the kernel
        assert children(window, "comms", 0) == [f"#{i} {name}" for i, name in enumerate(MODELS)]
        ids = children(window, "comms", 3)
        sid, oid = ids[2], ids[4]
        assert all(info.startswith("in sync · rt:kernel:") for info in children(window, "comms", 2))
        assert text_at(window, f"comms/{sid}/state/value", 1) == "3"
        value_idx = window.model.index_for_path(f"comms/{sid}/state/value")
        assert "written by rt:kernel:" in value_idx.data(Qt.ItemDataRole.ToolTipRole)
        assert text_at(window, f"comms/{sid}/state/description", 1) == '"n"'
        # the Output widget's captured print
        assert text_at(window, f"comms/{oid}/outputs/0", 0) == "stream"
        assert text_at(window, f"comms/{oid}/outputs/0", 1) == "captured"
        assert text_at(window, "kernel", 1) == "Running"
        assert "protocol 4" in window.status_doc.text() and "no comm feed" in window.status_doc.text()
        assert "Live" in window.status_conn.text()

        # a change made by the kernel shows up in place: same row, still expanded, still selected
        assert window.select_path(f"comms/{sid}/state/value")
        comm_view_idx = window.proxy.mapFromSource(window.model.index_for_path(f"comms/{sid}"))
        assert window.tree.isExpanded(comm_view_idx)
        row = QPersistentModelIndex(window.model.index_for_path(f"comms/{sid}/state/value"))
        resets: list[int] = []
        window.model.modelReset.connect(lambda: resets.append(1))
        res = await widget_room.acall(op="run", source="s.value = 8")
        assert res["success"], res
        await wait(lambda: row.sibling(row.row(), 1).data() == "8", "value 8 in the same row")
        assert resets == [] and row.isValid()
        assert window.tree.isExpanded(window.proxy.mapFromSource(window.model.index_for_path(f"comms/{sid}")))
        assert window.tree.currentIndex().data() == "value"

        # send_comm: the kernel takes 5 and echoes it, the comms document keeps 8
        window.select_path(f"comms/{sid}")
        await wait(lambda: window.controller.session.divergence.tap is not None
                   and window.controller.session.divergence.tap.state == "live", "the kernel tap")
        await widget_room.acall(op="send_comm", comm_id=sid, state={"value": 5})
        await wait(lambda: (text_at(window, f"comms/{sid}", 2) or "").startswith("diverged: state_mismatch"),
                   "the diverged badge")
        t = th.theme()
        idx = window.model.index_for_path(f"comms/{sid}")
        assert idx.data(Qt.ItemDataRole.ForegroundRole) == t.diverged_fg
        tip = idx.data(Qt.ItemDataRole.ToolTipRole)
        assert "last moved: kernel" in tip and "state: 8" in tip and "echo: 5" in tip
        assert "1 diverged" in window.status_div.text()
        # the detail pane: topology, state, echo and kernel side by side; the value row first
        table = window.detail.compare
        assert window.detail.tabs.currentWidget() is table
        heads = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
        assert heads[:5] == ["Key", "Topology", "State", "Echo", "Kernel"]
        await wait(lambda: table.item(0, 4).text() == "5", "the kernel's value in the detail pane", 10)
        assert table.item(0, 0).text().startswith("value")
        assert [table.item(0, c).text() for c in (1, 2, 3)] == ["—", "8", "5"]
        assert "moved: kernel" in table.item(0, 0).toolTip()
        window.grab().save(os.path.join(ARTIFACTS, "real-runtimed-v4-divergence.png"))

        # the kernel sets the value again: every view agrees, the colour goes
        await widget_room.acall(op="run", source="s.value = 3")
        await wait(lambda: text_at(window, f"comms/{sid}", 2).startswith("in sync"), "the comm in sync again")
        assert text_at(window, f"comms/{sid}/state/value", 1) == "3"

    os.makedirs(ARTIFACTS, exist_ok=True)
    loop.run_until_complete(asyncio.wait_for(scenario(), 60))
