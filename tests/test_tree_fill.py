"""A big room fills the window's tree in slices (inspector/ui/tree_fill.py): each callback adds
a bounded number of rows, the verdict in the status bar is the whole snapshot's from the start,
and the filled tree is exactly the tree built in one go."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QTimer  # noqa: E402
from test_ui_window import win  # noqa: E402, F401

from inspector.ui import sample_snapshots as ss  # noqa: E402
from inspector.ui.main_window import InspectorWindow  # noqa: E402
from inspector.ui.recent import RecentConnections  # noqa: E402
from inspector.ui.tree_fill import FillPlan  # noqa: E402
from inspector.ui.tree_model import DocumentTreeModel  # noqa: E402

pytestmark = pytest.mark.gui


def _paths(model: DocumentTreeModel) -> list[str]:
    return [n.path for n in model.iter_nodes()]


def test_a_big_room_fills_in_slices_and_ends_as_the_tree_built_at_once(qtbot, win) -> None:  # noqa: F811
    w = win  # the window test's fixture: shown, live, models checked by QAbstractItemModelTester
    snap = ss.diverge(ss.make_snapshot(n_cells=3_000, n_comms=400), 350, 1, 2)  # a comm shown last diverges

    steps: list[tuple[int, int, float]] = []  # (cells shown, comms shown, ms the step took)
    texts: list[str] = []
    real_step = w._fill_step

    def step() -> None:
        t0 = time.perf_counter()
        real_step()
        shown = w.model.snapshot
        steps.append((len(shown.cells), len(shown.comms), (time.perf_counter() - t0) * 1000))
        texts.append(w.status_doc.text() + " | " + w.status_div.text())

    w._fill_timer.timeout.disconnect()
    w._fill_timer.timeout.connect(step)
    w.apply_snapshot(snap)
    steps.append((len(w.model.snapshot.cells), len(w.model.snapshot.comms), 0.0))
    texts.append(w.status_doc.text() + " | " + w.status_div.text())
    qtbot.waitUntil(lambda: len(w.model.snapshot.cells) == 3_000 and len(w.model.snapshot.comms) == 400
                    and not w._fill_timer.isActive(), timeout=60_000)

    print("fill steps (cells, comms, ms):", steps)
    assert len(steps) > 5, steps  # filled over several callbacks, not one
    cells = [c for c, _, _ in steps]
    assert cells == sorted(cells) and all(b - a <= 5_000 for a, b in zip(cells, cells[1:], strict=False))
    assert all(c == 3_000 for c, m, _ in steps if m > 0)  # comms come once the cells are in
    assert "filling the tree" in texts[0] and "150 of 3000 cells, 0 of 400 comms" in texts[0]
    assert all("1 diverged" in t for t in texts)  # the verdict is the whole room's from the first step
    assert "filling" not in w.status_doc.text()
    # (the age timer re-shows the room with its divergence one second older: the same entries)
    assert w.snapshot.cells is snap.cells and w.model.snapshot.comms is snap.comms

    once = DocumentTreeModel()
    once.set_snapshot(snap)
    assert _paths(w.model) == _paths(once)  # the same rows in the same order
    node = w.model.node_at(f"comms/{snap.comms[350].comm_id}")
    assert node is not None and node.status == "diverged"
    assert not w.model._recent  # rows that arrived with the fill did not light up as changes
    # the groups filled closed; then the comms (400 rows) opened, the cells (3,000) wait for the user
    qtbot.waitUntil(lambda: w.tree.isExpanded(w.proxy.mapFromSource(w.model.index_for_path("comms"))), timeout=5_000)
    assert not w.tree.isExpanded(w.proxy.mapFromSource(w.model.index_for_path("cells")))


def test_a_newer_snapshot_during_the_fill_is_the_one_filled(qtbot, tmp_path) -> None:
    w = InspectorWindow(recent=RecentConnections(tmp_path / "recent.json"))
    qtbot.addWidget(w)
    w.show()
    w.stack.setCurrentWidget(w.main_split)
    first = ss.make_snapshot(n_cells=2_000, n_comms=10)
    newer = ss.set_comm_value(first, 3, 12345)
    w.apply_snapshot(first)
    assert w._fill_timer.isActive()
    QTimer.singleShot(0, lambda: w.apply_snapshot(newer))
    qtbot.waitUntil(lambda: w.model.snapshot is newer, timeout=60_000)
    node = w.model.node_at(f"comms/{newer.comms[3].comm_id}/state/value")
    assert node is not None and "12345" in node.cols[1]


def test_small_changes_and_small_rooms_go_at_once() -> None:
    plan = FillPlan()
    small = ss.make_snapshot(n_cells=200, n_comms=50)
    assert plan.next_part(small, None) == (small, False)
    big = ss.make_snapshot(n_cells=2_000, n_comms=100)
    part, more = plan.next_part(big, None)
    assert more and len(part.cells) == plan.slice and part.comms == ()
    assert plan.next_part(big, big) == (big, False)  # an update of a filled room: at once
    plan.next_part(big, None)
    plan.took(80.0)  # a step ten times over its 8 ms budget: the next is a tenth the size
    assert plan.slice == 15
    for _ in range(5):
        plan.took(800.0)
    assert plan.slice == 10  # never below the floor
    assert plan.slices["comms"] == 30  # comms keep their own slice
