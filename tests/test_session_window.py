"""The window and the session's lifecycle (pytest-qt, offscreen; a scripted daemon on a real Unix
socket on the window's own qasync loop, real automerge): after a sync message that makes
automerge panic it shows the error and reconnects (it used to freeze on "Live"); a kernel
that dies marks its comms replay-only with a banner; a room the daemon no longer lists is
shown gone."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from typing import Any

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("qasync")

from PySide6.QtTest import QAbstractItemModelTester  # noqa: E402
from scripted_daemon import ScriptedDaemon, build_doc  # noqa: E402
from test_core_document import sync_message, two_changes  # noqa: E402
from test_core_session import LAYOUT, SLIDER  # noqa: E402
from waiting import qt_loop, until, wait_until  # noqa: E402

from inspector.ui.main_window import InspectorWindow  # noqa: E402
from inspector.ui.recent import RecentConnections  # noqa: E402


@pytest.fixture(scope="module")
def loop(qapp):
    yield from qt_loop(qapp)


@pytest.fixture
def sock_path() -> Any:
    d = tempfile.mkdtemp(prefix="rti-win-", dir="/tmp")
    yield os.path.join(d, "rt.sock")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def window(qtbot, tmp_path, loop):
    win = InspectorWindow(recent=RecentConnections(tmp_path / "recent.json"))
    win.resize(1280, 800)
    # shut down before pytest-qt closes and deletes the window (its teardown runs before ours)
    qtbot.addWidget(win, before_close_func=lambda w: loop.run_until_complete(w.shutdown()))
    win.show()
    QAbstractItemModelTester(win.model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    yield win


def comm_badges(win: InspectorWindow) -> list[str]:
    comms = win.model.index_for_path("comms")
    return [win.model.index(i, 2, comms).data() for i in range(win.model.rowCount(comms))]


def test_after_a_panic_the_window_shows_the_error_and_reconnects(window, loop, sock_path):
    _, c1, _ = two_changes()
    bad = sync_message([], [c1], have=[bytes([1, 0, 7])])
    once = {"sent": False}

    async def hostile(daemon: ScriptedDaemon, peer: Any) -> None:
        if not once["sent"]:
            once["sent"] = True
            await asyncio.sleep(0.3)
            await daemon.send_typed(0, bad)

    states: list[tuple[str, str]] = []
    window.controller.state_changed.connect(lambda st, detail: states.append((st, detail)))
    d = ScriptedDaemon(sock_path, build_doc([], schema=3, comms={"sl": SLIDER}), after_join=hostile)
    loop.run_until_complete(d.__aenter__())
    try:
        window.attach(sock_path, d.notebook_id)
        until(loop, lambda: any(st == "disconnected" and "bloom filter" in detail for st, detail in states),
              20, "the panic shown as the reason of a disconnect")
        until(loop, lambda: "bloom filter" in window.banner.text(), 5, "the error in the banner")
        until(loop, lambda: window.state == "live" and d.connections >= 2, 20, "live again")
        assert comm_badges(window) and window.controller.session.connections == 2
    finally:
        loop.run_until_complete(d.__aexit__(None, None, None))


def test_a_dead_kernel_marks_comms_replay_only_and_a_room_gone_is_shown(window, loop, sock_path):
    doc = build_doc([], schema=3, comms={"sl": SLIDER, "lay": LAYOUT})

    async def scenario() -> None:
        # one coroutine, so the loop runs while the daemon goes and another comes
        async with ScriptedDaemon(sock_path, doc) as d:
            window.attach(sock_path, d.notebook_id)
            await wait_until(lambda: window.state == "live" and len(comm_badges(window)) == 2, "live", 20)
            await d.broadcast({"event": "kernel_status", "status": "idle", "cell_id": None})
            await wait_until(lambda: not any("replay-only" in b for b in comm_badges(window)), "idle kernel", 10)
            await d.broadcast({"event": "kernel_status", "status": "dead", "cell_id": None})
            await wait_until(lambda: all(b.startswith("replay-only · kernel is dead") for b in comm_badges(window)),
                             "comms marked replay-only", 10)
            assert window.banner.isVisible() and "kernel is dead" in window.banner.text()
        async with ScriptedDaemon(sock_path, build_doc([], schema=3), notebook_id="another-room"):
            await wait_until(lambda: "evicted or closed" in window.banner.text() and window.banner.isVisible(),
                             "the room shown gone", 30)
            assert all(b.startswith("replay-only") for b in comm_badges(window))  # its last state stays, marked

    loop.run_until_complete(scenario())
