"""The window's session core in a child process (inspector/core_process.py), without Qt: a real
child process joins a testbed room with a real kernel over the Unix socket, and the parent's
`ProcessSession` shows what a `PeerSession` would (snapshot, log, key history, sync health),
records through the child's recorder, reports a child that dies, and leaves no process behind."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import tempfile
from typing import Any

import pytest
from waiting import wait_until

from inspector import events as ev
from inspector.core_process import ProcessSession
from inspector.replay_driver import Replay
from inspector.testbed import TestbedThread

pytestmark = [pytest.mark.kernel]

SLIDER = "import ipywidgets as w\ns = w.IntSlider(value=3, description='speed')\ns"


@pytest.fixture(scope="module")
def bed():
    d = tempfile.mkdtemp(prefix="tbcore", dir="/tmp")
    thread = TestbedThread(os.path.join(d, "rt.sock"), keep_alive=60.0).start()
    yield thread
    thread.stop()
    shutil.rmtree(d, ignore_errors=True)


async def _tb(bed: TestbedThread, fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(bed.call, fn, *args)


def _session(bed: TestbedThread, nid: str) -> ProcessSession:
    args = argparse.Namespace(socket=bed.socket_path, notebook=nid, allow_other_user=False,
                              allow_kernel_launch=True, no_blobs=False, quiet_ms=250, clear_ms=2000)
    return ProcessSession(args, bed.socket_path, nid)


def _slider(s: ProcessSession) -> Any:
    return next((c for c in s.snapshot().comms if c.model_name == "IntSliderModel"), None)


def test_a_child_core_shows_the_room_and_records_it(bed, tmp_path) -> None:
    async def main() -> None:
        nid = await _tb(bed, bed.testbed.create_room, [SLIDER])
        await _tb(bed, bed.testbed.run_cell, nid, 0)
        s = _session(bed, nid)
        heard: list[int] = []
        s.add_listener(lambda _paths: heard.append(1))
        task = asyncio.create_task(s.run_forever())
        await wait_until(lambda: s.state == "live", "live")
        assert s._proc is not None and s._proc.pid != os.getpid()
        slider = await wait_until(lambda: _slider(s), "the slider")
        assert slider.state["value"] == 3 and heard
        assert s.snapshot().cells[0].source == SLIDER

        # the log: the child's events with their numbers, its frames with their bodies
        kinds = {e.kind for e in s.log.events()}
        assert {ev.CONNECTION, ev.FRAME} <= kinds
        seqs = [e.seq for e in s.log.events()]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert s.log.frames_in > 0 and any(f.body for f in s.log.frames())
        # sync health and the recorder's bounds come with the status
        assert "notebook" in s.replicas and s.replicas["notebook"].messages_in > 0
        assert s.recording is not None and s.recording.recorder.ring is not None

        # record from the child's recorder, move the slider, stop: the file replays to it
        path = str(tmp_path / "child.rtirec")
        await s.recording.start_file(path)
        assert s.recording.file == path
        await _tb(bed, bed.testbed.run_cell, nid, "s.value = 9")
        await wait_until(lambda: (sl := _slider(s)) is not None and sl.state["value"] == 9, "value 9")
        # the key history follows, entry by entry, into the window's own store
        hist = s.history.history
        await wait_until(lambda: any(e.value == 9 for e in hist.series(slider.comm_id, "value")), "9 in the history")
        # the compare table's views: asking watches the comm, the answer follows
        assert s.divergence is not None
        s.divergence.key_views(slider.comm_id)
        views = await wait_until(lambda: s.divergence.key_views(slider.comm_id), "the slider's views")
        assert {"doc", "feed"} <= set(views.sources) and views.values["doc"]["value"][0] == 9
        heads = s.snapshot().heads
        saved = await s.recording.stop_file()
        assert saved == path and s.recording.file is None
        replayed = Replay(path).run().snapshot()
        assert replayed.heads == heads
        assert [c.state["value"] for c in replayed.comms if c.model_name == "IntSliderModel"] == [9]
        # a failure in the child comes back as the error the window shows
        with pytest.raises(OSError, match="No such file or directory"):
            await s.recording.start_file(str(tmp_path / "no-such-dir" / "x.rtirec"))

        proc = s._proc
        await s.stop()
        await asyncio.wait_for(task, 10)
        assert proc.returncode == 0  # asked to stop: it ended its session itself
        assert s.state != "error"

    asyncio.run(main())


def test_a_child_that_dies_is_reported_and_nothing_is_left_running(bed) -> None:
    async def main() -> None:
        nid = await _tb(bed, bed.testbed.create_room, [SLIDER])
        s = _session(bed, nid)
        task = asyncio.create_task(s.run_forever())
        await wait_until(lambda: s.state == "live", "live")
        before = len(s.log)
        os.kill(s._proc.pid, signal.SIGKILL)
        await asyncio.wait_for(task, 10)  # run_forever ends: the controller shows the error
        assert s.state == "error" and "exited with code -9" in (s.error or "")
        tail = s.log.events()[before:]
        assert any(e.kind == ev.ERROR and "exited with code -9" in e.summary for e in tail)
        assert any(e.kind == ev.CONNECTION and e.data.get("state") == "error" for e in tail)
        assert len(s.log) > before  # what it logged before it died is still there
        with pytest.raises(RuntimeError, match="not running"):
            await s.call("blob_bytes", "00")
        await s.stop()  # stopping a dead child is quiet

    asyncio.run(main())


def test_a_log_adopts_another_logs_records_with_their_numbers() -> None:
    from inspector.events import EventLog

    child, window = EventLog(), EventLog(max_bytes=4096)
    for i in range(50):
        child.frame("in", 0x03, "broadcast", 100 + i, b"x" * 64)
        child.emit(ev.BROADCAST, f"b{i}", {"n": i})
    new = child.frames_since(45)
    assert [f.seq for f in new] == [46, 47, 48, 49, 50] and child.frames_since(50) == []
    for f in child.frames():
        window.adopt_frame(f)
    for e in child.events():
        window.adopt(e)
    assert window.frames_in == 50 and window.bytes_in == sum(100 + i for i in range(50))
    assert window.bytes_held <= 4096 and window.dropped > 0  # the window's own bound holds
    kept = window.events()
    assert kept[-1].seq == 50 and kept[-1].summary == "b49"
    assert window.frame_by_seq(50) is not None and window.frame_by_seq(50).body == b"x" * 64
    assert window.emit(ev.ERROR, "next").seq == 51  # numbering goes on from the adopted ones
