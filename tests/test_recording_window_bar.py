"""The live window's recorder bar against the testbed (real kernel): the ring's bounds shown,
"Record" writes the session to a file that replays to the room the window showed, "Save the
last N minutes" writes the ring as a recording that opens."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import shutil
import tempfile
from typing import Any

import pytest

pytest.importorskip("PySide6")
qasync = pytest.importorskip("qasync")

from PySide6.QtTest import QAbstractItemModelTester  # noqa: E402
from waiting import qt_loop, until  # noqa: E402

from inspector.replay_driver import Replay  # noqa: E402
from inspector.testbed import TestbedThread  # noqa: E402
from inspector.ui.main_window import InspectorWindow  # noqa: E402
from inspector.ui.recent import RecentConnections  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.kernel]

CELLS = ["import ipywidgets as w\ns = w.IntSlider(value=1, description='speed')\ns"]
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="testbed-call")


@pytest.fixture(scope="module")
def loop(qapp):
    yield from qt_loop(qapp)


@pytest.fixture(scope="module")
def bed():
    d = tempfile.mkdtemp(prefix="tbrec", dir="/tmp")
    thread = TestbedThread(os.path.join(d, "rt.sock"), keep_alive=60.0).start()
    yield thread
    thread.stop()
    shutil.rmtree(d, ignore_errors=True)


def tb(loop, bed: TestbedThread, fn: Any, *args: Any) -> Any:
    return loop.run_until_complete(asyncio.wrap_future(_POOL.submit(bed.call, fn, *args)))


def test_record_and_save_the_ring(qtbot, tmp_path, loop, bed) -> None:
    win = InspectorWindow(recent=RecentConnections(tmp_path / "recent.json"))
    win.session_options = argparse.Namespace(allow_kernel_launch=True, quiet_ms=250, clear_ms=2000)
    qtbot.addWidget(win)
    win.show()
    QAbstractItemModelTester(win.model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    bar = win.recorder_bar
    assert not bar.record.isEnabled()  # no session yet
    asked: list[str] = []
    target = {"path": str(tmp_path / "rec.rtirec")}
    bar.ask = lambda title, name: asked.append(title) or target["path"]
    try:
        nid = tb(loop, bed, bed.testbed.create_room, CELLS)
        win.attach(bed.socket_path, nid)
        until(loop, lambda: win.state == "live", what="live state")
        until(loop, lambda: bar.record.isEnabled(), what="the recorder bar enabled")
        assert "the last 10 min, at most 64 MiB" in bar.limits.text()
        bar.record.setChecked(True)  # Record
        loop.run_until_complete(bar.pending)  # the session's core answers from its own process
        assert bar.record.text() == "■ Stop recording" and asked
        tb(loop, bed, bed.testbed.run_cell, nid, 0)
        tb(loop, bed, bed.testbed.run_cell, nid, "s.value = 4")

        def slider_value() -> Any:
            snap = win.controller.session.snapshot() if win.controller.session else None
            return next((c.state.get("value") for c in (snap.comms if snap else ()) if c.model_name == "IntSliderModel"),
                        None)

        until(loop, lambda: slider_value() == 4, what="value 4")
        heads = win.controller.session.snapshot().heads
        bar.record.setChecked(False)  # Stop
        loop.run_until_complete(bar.pending)
        assert bar.record.text() == "● Record"
        # the file starts mid-session (at Record): it opens from its checkpoint, to the same room
        core = Replay(target["path"]).run()
        snap = core.snapshot()
        assert snap.heads == heads
        assert [c.state.get("value") for c in snap.comms if c.model_name == "IntSliderModel"] == [4]
        # save the last minute of the ring
        target["path"] = str(tmp_path / "ring.rtirec")
        bar.minutes.setValue(1)
        assert loop.run_until_complete(bar.save_ring()) == target["path"]
        ring = Replay(target["path"]).run().snapshot()
        assert ring.heads == heads
    finally:
        loop.run_until_complete(win.shutdown())
