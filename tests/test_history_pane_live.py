"""The history pane on a live session (offscreen Qt, asyncio on the Qt loop): the testbed daemon
with a real ipykernel, the session, its divergence binding and kernel tap, the history adapter,
and the pane following one slider's value as a kernel loop moves it."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
qasync = pytest.importorskip("qasync")

from PySide6.QtTest import QAbstractItemModelTester  # noqa: E402
from test_history_ui import add_pane  # noqa: E402
from waiting import qt_loop, wait_until  # noqa: E402

from inspector import events as ev  # noqa: E402
from inspector.divergence import DivergenceOptions, SettleConfig  # noqa: E402
from inspector.history_feed import HistoryOptions  # noqa: E402
from inspector.session import PeerSession, SessionConfig  # noqa: E402
from inspector.testbed import Testbed  # noqa: E402
from inspector.ui.history_pane import HistoryPane  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.kernel]


@pytest.fixture
def loop(qapp):
    yield from qt_loop(qapp)
    gc.collect()  # the closed loop's Qt objects go now, on this thread (not in a later test's thread)



def test_pane_follows_a_kernel_loop_and_jumps_to_real_timeline_events(qtbot, loop) -> None:
    async def scenario() -> None:
        d = tempfile.mkdtemp(prefix="rti-khp-", dir="/tmp")
        tb = Testbed(os.path.join(d, "rt.sock"), auto_launch=False, write_daemon_json=False)
        await tb.start()
        session = None
        try:
            nid = tb.create_room()
            await tb.launch_kernel(nid)
            await tb.wait_kernel(nid)
            session = PeerSession(SessionConfig(
                tb.socket_path, nid, allow_kernel_launch=True, history=HistoryOptions(),
                divergence=DivergenceOptions(SettleConfig(), tb.room(nid).kernel.km.connection_file)))
            hist = session.history
            assert hist is not None
            async with session.running():
                await session.wait_settled(0.1, 30)
                while session.tap is None or session.tap.received == 0:  # the SUB socket only sees what is published after it joined
                    await tb.run_cell(nid, "1")
                await tb.run_cell(nid, "import ipywidgets as w\ns = w.IntSlider(value=1, max=1000)")
                (cid,) = [c.comm_id for c in tb.comm_state(nid) if c.model_name == "IntSliderModel"]
                await wait_until(lambda: hist.history.last(cid, "value", "doc"), "the doc to hold the slider")
                pane = HistoryPane(hist.history, refresh_ms=50)
                add_pane(qtbot, pane)
                QAbstractItemModelTester(pane.model, QAbstractItemModelTester.FailureReportingMode.Fatal)
                pane.resize(1000, 700)
                pane.show()
                pane.set_key(cid, "value")
                await tb.run_cell(nid, "for i in range(50):\n    s.value = 100 + i")

                def shown(source: str) -> list:
                    return [e.value for e in pane.model.rows if e.source == source]

                await wait_until(lambda: shown("doc")[-1:] == [149] and shown("feed")[-1:] == [149],
                                 "the pane to show 149 from the doc and the feed", timeout=30)
                assert shown("kernel") == [1] + list(range(100, 150))
                assert {"kernel", "doc", "feed"} <= set(pane.plot.series)
                # a doc row's event is the session's own DOC_CHANGED event for this comm
                row = next(i for i, e in enumerate(pane.model.rows) if e.source == "doc" and e.value == 149)
                seq = pane.model.rows[row].event_seq
                (event,) = [e for e in session.log.events() if e.seq == seq]
                assert event.kind == ev.DOC_CHANGED and f"comms/{cid}" in event.data["paths"]
                with qtbot.waitSignal(pane.jump_to_event, timeout=2000) as sig:
                    pane._on_double_click(pane.model.index(row, 0))
                assert sig.args == [seq]
                assert pane.show_event(seq) and pane.table.selectionModel().selectedRows()[0].row() == row
                pane.tabs.setCurrentWidget(pane.latency)
                await wait_until(lambda: pane.analysed and "kernel→feed" in pane.latency.bars,
                                 "the latency histogram", timeout=10)
        finally:
            if session is not None:
                await session.stop()
            await tb.stop()
            shutil.rmtree(d, ignore_errors=True)

    loop.run_until_complete(scenario())
