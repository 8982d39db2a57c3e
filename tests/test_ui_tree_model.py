"""The document tree model: content, order, in-place live updates, divergence colouring, filters."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import msgspec
import pytest

pytest.importorskip("PySide6")
pytestqt = pytest.importorskip("pytestqt")

from PySide6.QtCore import QModelIndex, Qt  # noqa: E402
from PySide6.QtTest import QAbstractItemModelTester  # noqa: E402
from PySide6.QtWidgets import QTreeView  # noqa: E402

from inspector.snapshot import CommView  # noqa: E402
from inspector.ui import sample_snapshots as ss  # noqa: E402
from inspector.ui import theme as th  # noqa: E402
from inspector.ui.tree_model import DocumentTreeModel, TreeFilterProxy  # noqa: E402

pytestmark = pytest.mark.gui


def _tester(model):
    return QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Fatal)


def _texts(model, parent=QModelIndex(), col=0):
    return [model.index(r, col, parent).data() for r in range(model.rowCount(parent))]


def test_tree_shows_cells_in_position_order_and_comms_in_seq_order(qtbot):
    model = DocumentTreeModel()
    _tester(model)
    snap = ss.make_snapshot(n_cells=6, n_comms=4)
    # the document lists cells in map order; the snapshot is already position-ordered
    model.set_snapshot(snap)
    assert _texts(model) == ["Cells", "Comms", "Metadata", "Kernel"]
    cells = model.index_for_path("cells")
    assert _texts(model, cells, 3) == [c.id for c in snap.cells]
    assert _texts(model, cells, 0)[:2] == ["markdown", "code"]
    second = model.index(1, 0, cells)
    assert model.index(1, 1, cells).data() == "result_1 = compute(1)"
    assert model.index(1, 2, cells).data() == "[1] · 1 output"
    assert model.rowCount(second) == 1  # the stream output
    comms = model.index_for_path("comms")
    assert _texts(model, comms, 0) == ["#0 IntSliderModel", "#1 FloatTextModel", "#2 DropdownModel",
                                       "#3 ButtonModel"]
    slider = model.index_for_path(f"comms/{ss.comm_id(0)}")
    keys = _texts(model, slider, 0)
    assert "value" in keys and "_model_name" in keys


def test_live_update_changes_rows_in_place_and_keeps_expansion_and_selection(qtbot):
    model = DocumentTreeModel()
    _tester(model)
    view = QTreeView()
    qtbot.addWidget(view)
    view.setModel(model)
    snap = ss.make_snapshot(n_cells=30, n_comms=10)
    model.set_snapshot(snap)
    slider = model.index_for_path(f"comms/{ss.comm_id(6)}")
    view.expand(model.index_for_path("comms"))
    view.expand(slider)
    value_idx = model.index_for_path(f"comms/{ss.comm_id(6)}/state/value")
    view.setCurrentIndex(value_idx)
    resets = []
    model.modelReset.connect(lambda: resets.append(1))
    for v in range(51, 80):
        snap = ss.set_comm_value(snap, 6, v)
        model.set_snapshot(snap)
    assert resets == []
    assert view.isExpanded(model.index_for_path(f"comms/{ss.comm_id(6)}"))
    cur = view.currentIndex()
    assert cur.isValid() and cur.data() == "value"
    assert cur.siblingAtColumn(1).data() == "79"
    # the changed row is highlighted, and the highlight fades away
    node = model.node_at(f"comms/{ss.comm_id(6)}/state/value")
    assert model.data(model.index_of(node), Qt.ItemDataRole.BackgroundRole) is not None
    qtbot.waitUntil(lambda: model.data(model.index_of(node), Qt.ItemDataRole.BackgroundRole) is None, timeout=4000)


def test_a_value_update_signals_its_row_and_ancestors_not_the_unchanged_keys(qtbot):
    """Each signal is a repaint and a pass of the filter proxy: a dragged slider must not
    announce its 20 unchanged keys on every value."""
    model = DocumentTreeModel()
    _tester(model)
    snap = ss.make_snapshot(n_cells=5, n_comms=10)
    model.set_snapshot(snap)
    changed: list[str] = []
    model.dataChanged.connect(lambda tl, br, roles=(): changed.append(model.node(tl).path))
    model.set_snapshot(ss.set_comm_value(snap, 6, 4242))
    comm = f"comms/{ss.comm_id(6)}"
    assert f"{comm}/state/value" in changed
    assert set(changed) <= {f"{comm}/state/value", comm, "comms"}, changed
    assert len(model.node_at(comm).children) > 5  # there were unchanged keys to skip
    assert model.index_for_path(f"{comm}/state/value").siblingAtColumn(1).data() == "4242"
    # a divergence reported again 10 ms older: every key's inputs moved, nothing shown did
    model.set_snapshot(ss.diverge(model.snapshot, 6, 1, 2, since_ms=4200.0))
    changed.clear()
    model.set_snapshot(ss.diverge(model.snapshot, 6, 1, 2, since_ms=4210.0))
    assert changed == []


def test_structural_changes_insert_remove_and_move_rows(qtbot):
    model = DocumentTreeModel()
    _tester(model)
    snap = ss.make_snapshot(n_cells=10, n_comms=5)
    model.set_snapshot(snap)
    inserted, removed, moved = [], [], []
    model.rowsInserted.connect(lambda p, a, b: inserted.append((a, b)))
    model.rowsRemoved.connect(lambda p, a, b: removed.append((a, b)))
    model.rowsMoved.connect(lambda *a: moved.append(a))
    cells = list(snap.cells)
    # delete cell 3, move the last cell to the front, add a new cell at the end
    del cells[3]
    cells.insert(0, cells.pop())
    cells.append(ss.make_cell(99))
    comms = snap.comms + (ss.make_comm(7),)
    feed = msgspec.structs.replace(snap.feed, comms=snap.feed.comms + (ss.feed_of(comms[-1]),))
    snap2 = msgspec.structs.replace(snap, cells=tuple(cells), comms=comms, feed=feed)
    model.set_snapshot(snap2)
    assert _texts(model, model.index_for_path("cells"), 3) == [c.id for c in cells]
    assert len(_texts(model, model.index_for_path("comms"))) == 6
    assert inserted and removed and moved
    # and back again, comm closed
    model.set_snapshot(snap)
    assert _texts(model, model.index_for_path("cells"), 3) == [c.id for c in snap.cells]
    assert len(_texts(model, model.index_for_path("comms"))) == 5


def test_divergence_colours_icon_and_tooltip(qtbot):
    model = DocumentTreeModel()
    _tester(model)
    snap = ss.make_snapshot(n_cells=4, n_comms=4)
    snap = ss.diverge(snap, 0, 10, 42, status="diverged")
    snap = ss.diverge(snap, 1, 1.5, 2.5, status="pending")
    model.set_snapshot(snap)
    t = th.theme()
    bad = model.index_for_path(f"comms/{ss.comm_id(0)}")
    soft = model.index_for_path(f"comms/{ss.comm_id(1)}")
    fine = model.index_for_path(f"comms/{ss.comm_id(2)}")
    assert bad.data(Qt.ItemDataRole.ForegroundRole) == t.diverged_fg
    assert not bad.data(Qt.ItemDataRole.DecorationRole).isNull()
    assert bad.siblingAtColumn(2).data() == "diverged: state_mismatch"
    tip = bad.data(Qt.ItemDataRole.ToolTipRole)
    assert "state_mismatch" in tip and "doc: 10" in tip and "feed: 42" in tip
    assert soft.siblingAtColumn(2).data() == "pending: state_mismatch"
    assert soft.data(Qt.ItemDataRole.ForegroundRole) == t.pending_fg
    assert fine.data(Qt.ItemDataRole.ForegroundRole) is None
    assert fine.siblingAtColumn(2).data() == "in sync"
    key = model.index_for_path(f"comms/{ss.comm_id(0)}/state/value")
    assert key.data(Qt.ItemDataRole.ForegroundRole) == t.diverged_fg
    # it settles: colour goes away in place
    model.set_snapshot(ss.set_comm_value(msgspec.structs.replace(snap, divergence=()), 0, 42))
    assert model.index_for_path(f"comms/{ss.comm_id(0)}").data(Qt.ItemDataRole.ForegroundRole) is None


def test_search_and_only_divergent_filter(qtbot):
    model = DocumentTreeModel()
    proxy = TreeFilterProxy()
    proxy.setSourceModel(model)
    _tester(model)
    _tester(proxy)
    snap = ss.make_snapshot(n_cells=10, n_comms=8)
    model.set_snapshot(ss.diverge(snap, 3, 1, 2))
    proxy.set_text("DropdownModel")
    comms = proxy.mapFromSource(model.index_for_path("comms"))
    assert [proxy.index(r, 0, comms).data() for r in range(proxy.rowCount(comms))] == ["#2 DropdownModel"]
    proxy.set_text(ss.comm_id(5)[:12])
    assert proxy.rowCount(comms) == 1
    proxy.set_text("")
    proxy.set_only_divergent(True)
    assert proxy.rowCount(QModelIndex()) == 1  # only the Comms group remains
    comms = proxy.mapFromSource(model.index_for_path("comms"))
    assert [proxy.index(r, 3, comms).data() for r in range(proxy.rowCount(comms))] == [ss.comm_id(3)]
    # live updates keep going through the filtered view
    model.set_snapshot(ss.diverge(model.snapshot, 5, 7, 8))
    assert proxy.rowCount(comms) == 2


def test_feed_only_comm_and_unparsable_state_are_shown(qtbot):
    model = DocumentTreeModel()
    _tester(model)
    snap = ss.make_snapshot(n_cells=2, n_comms=2)
    extra = ss.make_comm(9)
    broken = CommView(comm_id="broken", seq=5, target_name="jupyter.widget", model_module=None, model_name=None,
                      state="{not json", state_error="invalid JSON", outputs=())
    snap = msgspec.structs.replace(snap, comms=snap.comms + (broken,),
                                   feed=msgspec.structs.replace(snap.feed, comms=snap.feed.comms + (ss.feed_of(extra),)))
    model.set_snapshot(snap)
    comms = model.index_for_path("comms")
    names = _texts(model, comms, 2)
    assert names[-1] == "feed only"
    assert model.index_for_path("comms/broken").siblingAtColumn(2).data() == "doc only"


def test_initial_sync_is_not_highlighted_and_fading_rows_repaint_in_runs(qtbot):
    model = DocumentTreeModel(fade_ms=300)
    _tester(model)
    bg = Qt.ItemDataRole.BackgroundRole
    # attaching: an empty document first, then the whole notebook arrives with the sync
    model.set_snapshot(ss.make_snapshot(n_cells=0, n_comms=0, connection="syncing"))
    full = ss.make_snapshot(n_cells=300, n_comms=40, connection="syncing")
    model.set_snapshot(full)
    cell = model.index_for_path(f"cells/{full.cells[7].id}")
    assert model.data(cell, bg) is None  # loading is not a change
    # live: new and changed rows light up
    live = msgspec.structs.replace(full, connection="live")
    model.set_snapshot(live)
    grown = msgspec.structs.replace(live, cells=live.cells + tuple(ss.make_cell(i) for i in range(300, 600)),
                                    comms=live.comms + tuple(ss.make_comm(i) for i in range(40, 80)))
    model.set_snapshot(grown)
    new_cell = model.index_for_path(f"cells/{grown.cells[450].id}")
    assert model.data(new_cell, bg) is not None
    # each fade step repaints the 340 fading rows with one signal per parent, not one per row
    # (the view pays a search through its rows per signal: per-row signals froze the window)
    signals = []
    model.dataChanged.connect(lambda *a: signals.append(a))
    model._fade_tick()
    assert 1 <= len(signals) <= 2
    qtbot.waitUntil(lambda: model.data(new_cell, bg) is None, timeout=3000)


def test_two_far_apart_changes_fade_with_a_signal_each_not_the_rows_between(qtbot):
    """A storm moving the first and the last comm: each fade step repaints those two rows, not
    the span between them (that span was the whole viewport: 15 ms a step at 1,000 cells)."""
    model = DocumentTreeModel(fade_ms=300)
    _tester(model)
    base = ss.make_snapshot(n_cells=5, n_comms=40, connection="live")
    model.set_snapshot(base)
    comms = list(base.comms)
    comms[0] = ss.make_comm(0, value=101)
    comms[-1] = ss.make_comm(len(comms) - 1, value=102)
    model.set_snapshot(msgspec.structs.replace(base, comms=tuple(comms)))
    signals: list[tuple[int, int, str]] = []
    model.dataChanged.connect(lambda tl, br, *_: signals.append((tl.row(), br.row(), model.node(tl.parent()).path)))
    model._fade_tick()
    under_comms = sorted((a, b) for a, b, parent in signals if parent == "comms")
    assert len(under_comms) == 2 and all(b - a <= 3 for a, b in under_comms), signals
    first, last = model.index_for_path(f"comms/{comms[0].comm_id}"), model.index_for_path(f"comms/{comms[-1].comm_id}")
    assert under_comms[0][0] <= first.row() <= under_comms[0][1]
    assert under_comms[1][0] <= last.row() <= under_comms[1][1]
