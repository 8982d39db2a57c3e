"""The history pane offscreen: the table model (checked by QAbstractItemModelTester), the key
plot (steps for numbers, bands for strings and booleans, divergence shading), the latency
histogram, jumping between a history row and its timeline event, and a 60-updates/s storm."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
pytestqt = pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtTest import QAbstractItemModelTester  # noqa: E402

from inspector.key_history import ENTRY_OVERHEAD, KeyHistory  # noqa: E402
from inspector.ui.history_pane import COLUMNS, HistoryPane, HistoryTableModel  # noqa: E402

pytestmark = pytest.mark.gui

def add_pane(qtbot, pane) -> None:
    """Closed at teardown and deleted by Qt right then, not whenever the garbage collector
    gets to it during a later test."""
    pane.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    qtbot.addWidget(pane)



def _tester(model):
    return QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Fatal)


def filled(n: int = 20, lag: float = 0.3) -> KeyHistory:
    store = KeyHistory()
    for i in range(n):
        store.append("kernel", "c1", "value", i, i * 0.1, writer="kernel", carrier=f"msg m{i}")
        store.append("doc", "c1", "value", i, i * 0.1 + lag, writer="runtimed", carrier=f"frame {i}",
                     event_seq=100 + i)
    return store


def test_table_model_rows_append_and_trim(qtbot) -> None:
    model = HistoryTableModel()
    _tester(model)
    store = filled(5)
    rows = store.series("c1", "value")
    model.reset(rows[:4])
    model.append(rows[4:])
    assert model.rowCount() == 10 and model.columnCount() == len(COLUMNS)
    assert [model.index(1, c).data() for c in (2, 3, 4, 6, 7)] == ["doc", "0", "runtimed", "frame 0", "100"]
    assert model.index(0, 7).data() == "" and model.index(0, 5).data() == "—"
    model.trim_head(3)
    assert model.rowCount() == 3 and model.index(0, 3).data() == "3"


def test_pane_shows_the_key_and_jumps_both_ways(qtbot) -> None:
    store = filled()
    pane = HistoryPane(store)
    add_pane(qtbot, pane)
    _tester(pane.model)
    pane.set_key("c1", "value")
    assert pane.model.rowCount() == 40
    assert pane.plot.mode == "steps" and set(pane.plot.series) == {"kernel", "doc"}
    qtbot.waitUntil(lambda: pane.analysed and "kernel→doc" in pane.latency.bars, timeout=5000)
    assert pane.findings.count() == 0  # 300 ms is under the slow-hop threshold
    assert "40 value(s) kept · 0 older dropped" in pane.dropped.text()
    with qtbot.waitSignal(pane.jump_to_event, timeout=2000) as sig:
        pane._on_double_click(pane.model.index(3, 0))
    assert sig.args == [101]
    assert pane.show_event(105) and pane.table.selectionModel().selectedRows()[0].row() == 11
    assert not pane.show_event(9999)


def test_bands_for_strings_and_booleans_and_shaded_divergences(qtbot) -> None:
    store = KeyHistory()
    for i, v in enumerate([True, False, True]):
        store.append("kernel", "c", "disabled", v, float(i))
    for i, v in enumerate([True, True]):
        store.append("state", "c", "disabled", v, i + 0.2)
    pane = HistoryPane(store)
    add_pane(qtbot, pane)
    pane.set_key("c", "disabled")
    assert pane.plot.mode == "bands"
    assert all(s.bands is not None and s.curve is None for s in pane.plot.series.values())
    pane.set_divergences([(1.0, 1.2), (2.0, None)])
    assert [tuple(round(x, 3) for x in r.getRegion()) for r in pane.plot.regions] == [(1.0, 1.2), (2.0, 2.0)]


def test_pane_follows_a_live_store_and_counts_what_was_dropped(qtbot) -> None:
    store = KeyHistory(max_bytes=300 * (ENTRY_OVERHEAD + 4))
    pane = HistoryPane(store, refresh_ms=20)
    add_pane(qtbot, pane)
    _tester(pane.model)
    store.append("kernel", "c", "value", 0, 0.0)
    pane.set_key("c", "value")
    for i in range(1, 1000):
        store.append("kernel", "c", "value", i, i * 0.01)
    qtbot.waitUntil(lambda: pane.model.rowCount() and pane.model.rows[-1].value == 999, timeout=5000)
    stats = store.stats("c", "value")
    assert pane.model.rowCount() == stats.entries and stats.dropped > 0
    assert pane.model.rows[0].value == 1000 - stats.entries  # the oldest are gone from the table too
    qtbot.waitUntil(lambda: "older dropped" in pane.dropped.text() and f"{stats.dropped} older" in pane.dropped.text(),
                    timeout=5000)


def test_a_60_per_second_storm_is_drawn_incrementally(qtbot) -> None:
    store = KeyHistory()
    pane = HistoryPane(store, refresh_ms=50)
    add_pane(qtbot, pane)
    pane.show()
    store.append("kernel", "c", "value", 0, 0.0)
    pane.set_key("c", "value")
    sent = [0]

    def tick() -> None:
        sent[0] += 1
        t = sent[0] / 60
        store.append("kernel", "c", "value", sent[0] % 50, t)
        store.append("echo", "c", "value", sent[0] % 50, t + 0.004)

    timer = QTimer()
    timer.setInterval(16)
    timer.timeout.connect(tick)
    timer.start()
    qtbot.waitUntil(lambda: sent[0] >= 90, timeout=10_000)
    timer.stop()
    qtbot.waitUntil(lambda: pane.model.rowCount() == 1 + 2 * sent[0], timeout=5000)
    qtbot.waitUntil(lambda: pane.plot.point_count() == 1 + 2 * sent[0], timeout=5000)
    # redraws are throttled: far fewer than the 180 entries that arrived
    assert 1 <= pane.plot.redraws < sent[0]


def test_band_segments_merge_crowded_columns_and_keep_wide_runs() -> None:
    from inspector.ui.key_plot import MIXED, band_segments

    assert band_segments([0.0, 1.0, 2.0], [True, False, True], float("-inf"), float("inf"), 3.0, 100) == [
        (0.0, 1.0, True), (1.0, 1.0, False), (2.0, 1.0, True)]
    # 10,000 toggles over 100 columns: every column changed many times, and says so
    segs = band_segments([i / 100 for i in range(10_000)], [i % 2 == 0 for i in range(10_000)],
                         float("-inf"), float("inf"), 100.0, 100)
    assert len(segs) == 100 and all(v is MIXED for _x, _w, v in segs)
    assert abs(sum(w for _x, w, _v in segs) - 100.0) < 1e-9  # the lane is covered, no gap, no overlap
    # one long run among crowded ones stays one bar of its own value
    ts = [i / 1000 for i in range(1000)] + [50.0]
    vs = [i % 2 == 0 for i in range(1000)] + ["steady"]
    segs = band_segments(ts, vs, float("-inf"), float("inf"), 100.0, 100)
    assert segs[-1][2] == "steady" and segs[-1][0] == 50.0 and abs(segs[-1][0] + segs[-1][1] - 100.0) < 1e-9
