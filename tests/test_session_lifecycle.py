"""Staying attached and knowing the room's true state, offline: the keep-alive the core emits,
the input boundary, the event log's byte bound, reconnects with gaps, the room gone, the
kernel's lifecycle, and bad input at the command line (scripted daemon on a real Unix socket,
real automerge; recorded real runtimed 2.9.0 frames for the v4 keep-alive)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import tempfile
import threading
import time
from typing import Any

import cbor2
import pytest
from scripted_daemon import ScriptedDaemon, build_doc
from test_core_cli import run_cli
from test_core_document import sync_message, two_changes
from test_core_session import LAYOUT, SLIDER
from test_v4_session_replay import join
from waiting import wait_until

from inspector import events as ev
from inspector.divergence import DivergenceOptions, SettleConfig
from inspector.errors import EXIT_TIMEOUT, EXIT_USAGE
from inspector.protocol.framing import FrameType
from inspector.session import LIVE, PeerSession, SessionConfig
from inspector.session_core import SessionCore
from inspector.ui.tree_nodes import build_top


@pytest.fixture()
def sock_path() -> Any:
    d = tempfile.mkdtemp(prefix="rti-lc-", dir="/tmp")
    yield os.path.join(d, "rt.sock")
    shutil.rmtree(d, ignore_errors=True)


def v4_core(**cfg: Any) -> SessionCore:
    from test_v4_session_replay import ROOM as REC_ROOM

    return SessionCore(SessionConfig("replay.sock", REC_ROOM, resolve_blobs=False, keep_frame_bodies=False,
                                     divergence=DivergenceOptions(SettleConfig()), **cfg))


# -- the keep-alive -----------------------------------------------------------------------------


def test_v4_keepalive_is_a_presence_heartbeat_from_tick_at_the_interval() -> None:
    core = v4_core(keepalive_s=20.0)
    join(core)
    assert core.state in ("syncing", LIVE)  # (this recorded peer never heard `interactive`)
    due = core.next_deadline()
    assert due is not None and due <= core.connected_at + 20.0 + 1e-6
    # nothing before the interval is up
    assert not [s for s in core.tick(core.connected_at + 19.0).send if s[0] == FrameType.PRESENCE]
    step = core.tick(core.connected_at + 20.0)
    assert [(ft, doc) for ft, _b, doc in step.send] == [(FrameType.PRESENCE, None)]
    # what it says: a heartbeat, named as the inspector; no channel, no data, nothing to relay
    assert cbor2.loads(step.send[0][1]) == {"type": "heartbeat", "peer_id": "inspector"}
    assert core.keepalives_sent == 1 and core.next_deadline() <= core.connected_at + 40.0
    assert core.tick(core.connected_at + 40.0).send and core.keepalives_sent == 2


def test_keepalive_off_and_the_v2_profile_sends_none() -> None:
    core = v4_core(keepalive_s=None)
    join(core)
    assert not core.tick(core.connected_at + 1000.0).send and core.keepalives_sent == 0
    v2 = SessionCore(SessionConfig("x.sock", "nb"))
    v2.begin(2, t=0.0)
    assert v2.profile.keepalive() is None


async def test_v2_session_never_sends_anything_but_sync_replies_with_a_short_interval(sock_path: str) -> None:
    doc = build_doc([], schema=3, comms={"sl": SLIDER})
    async with ScriptedDaemon(sock_path, doc) as d:
        s = PeerSession(SessionConfig(d.path, d.notebook_id, keepalive_s=0.05))
        async with s.running():
            await s.wait_settled(0.3, 10)
        assert {ft for ft, _ in d.peers[0].received} == {0}  # the seed-era daemon drops no quiet peer


# -- the input boundary ---------------------------------------------------------------------------


async def test_an_unexpected_exception_in_a_handler_is_recorded_with_the_bytes_and_the_session_goes_on(
        sock_path: str) -> None:
    doc = build_doc([], schema=3, comms={"sl": SLIDER})
    async with ScriptedDaemon(sock_path, doc) as d:
        s = PeerSession(SessionConfig(d.path, d.notebook_id))
        async with s.running():
            await s.wait_settled(0.15, 10)
            real = s.profile.broadcast
            calls = {"n": 0}

            def flaky(session: Any, bc: Any, t: float) -> Any:
                calls["n"] += 1
                if calls["n"] == 1:
                    raise TypeError("a reader bug")
                return real(session, bc, t)

            s.profile.broadcast = flaky
            body = b'{"event":"kernel_status","status":"busy","cell_id":null}'
            await d.broadcast(body)
            await d.broadcast({"event": "kernel_status", "status": "idle", "cell_id": None})
            await wait_until(lambda: s.kernel_state.get("status") == "idle", "the broadcast after the bad one")
            (err,) = [e for e in s.log.events() if e.kind == ev.ERROR and e.data.get("error") == "BadFrame"]
            payload = bytes([FrameType.BROADCAST]) + body
            assert "unexpected TypeError" in err.summary and "frame skipped" in err.summary
            assert err.data["size"] == len(payload) and err.data["sha256"] == hashlib.sha256(payload).hexdigest()
            assert bytes.fromhex(err.data["hex"]) == payload and err.data["decision"] == "continue"
            assert s.state == LIVE and s.input_errors == 1


async def test_a_panic_in_a_sync_is_recorded_and_the_session_reconnects_to_live(sock_path: str) -> None:
    _, c1, _ = two_changes()
    bad = sync_message([], [c1], have=[bytes([1, 0, 7])])  # a bloom filter that makes automerge panic
    sent = {"n": 0}

    async def hostile(daemon: ScriptedDaemon, peer: Any) -> None:
        if sent["n"] == 0:
            sent["n"] += 1
            await asyncio.sleep(0.3)
            await daemon.send_typed(0, bad)

    doc = build_doc([], schema=3, comms={"sl": SLIDER})
    async with ScriptedDaemon(sock_path, doc, after_join=hostile) as d:
        s = PeerSession(SessionConfig(d.path, d.notebook_id))
        task = asyncio.create_task(s.run_forever(retry_initial=0.2))
        try:
            await wait_until(lambda: s.connections >= 2 and s.state == LIVE, "the reconnect after the panic", 20)
        finally:
            await s.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    errs = [e for e in s.log.events() if e.kind == ev.ERROR and e.data.get("decision") == "reconnect"]
    assert errs and "bloom filter" in errs[0].summary and errs[0].data["size"] == len(bad) + 1
    assert errs[0].data["exit_code"] == 8
    assert s.lifecycle().gaps_s and s.lifecycle().connections == 2


# -- the event log's byte bound --------------------------------------------------------------------


def test_event_log_is_bounded_by_bytes_and_says_what_it_holds() -> None:
    log = ev.EventLog(max_bytes=1024 * 1024)
    big = "x" * (300 * 1024)
    for i in range(10):
        log.emit(ev.BROADCAST, f"b{i}", {"message": big})
        log.frame("in", 1, "broadcast", 300 * 1024, b"y" * (60 * 1024))
    assert log.bytes_held <= log.max_bytes
    assert 2 <= len(log) <= 4 and log.dropped >= 6
    assert log.events()[-1].summary == "b9"  # the newest stays
    assert log.frames_in == 10  # counters count everything, kept or not


def test_event_log_counts_what_small_events_really_hold() -> None:
    """A storm's events are small dicts and strings: what the log says it holds is what the
    process holds for them (measured by tracemalloc), not a third of it."""
    import gc
    import tracemalloc

    log = ev.EventLog(maxlen=100_000, max_bytes=1 << 40)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(5_000):
        log.emit(ev.DIVERGENCE, f"comm c{i % 200}: lag -> in_sync",
                 {"comm_id": f"c{i % 200}", "before": ["lag"], "after": ["in_sync"],
                  "divergences": [{"kind": "state_mismatch", "detail": f"value {i} against {i + 1}",
                                   "keys": [{"key": "value", "values": {"doc": i, "feed": i + 1}}]}]},
                 target=f"comms/c{i % 200}")
        log.frame("in", 9, "comms_sync", 180, b"")
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert 0.8 <= log.bytes_held / held <= 1.6, (log.bytes_held, held)


def test_event_log_holds_nothing_the_collector_walks_and_data_reads_back_as_emitted() -> None:
    """A full collection walks every tracked object: a log of storm events must add none (they
    stalled long storms 100-300 ms per pass). Data that would not come back equal stays as is."""
    import gc

    log = ev.EventLog(maxlen=100_000, max_bytes=1 << 40)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(10_000):
        log.emit(ev.DIVERGENCE, f"comm c{i}: lag -> in_sync",
                 {"comm_id": f"c{i}", "before": ["lag"], "after": ["in_sync"], "body": b"\x00\x01",
                  "divergences": [{"kind": "state_mismatch", "keys": [{"key": "value", "values": {"doc": i}}]}]})
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    e = log.events()[-1]
    assert e.data == {"comm_id": "c9999", "before": ["lag"], "after": ["in_sync"], "body": b"\x00\x01",
                      "divergences": [{"kind": "state_mismatch", "keys": [{"key": "value", "values": {"doc": 9999}}]}]}
    assert "body" not in e.to_json()["data"] and e.to_json()["data"]["before"] == ["lag"]
    odd = log.emit(ev.ERROR, "odd", {"pair": ("doc", "feed"), "ids": {1, 2}})
    assert odd.data == {"pair": ("doc", "feed"), "ids": {1, 2}}  # a tuple and a set: held as they were
    assert log.emit(ev.ERROR, "none").data == {}


# -- reconnects, gaps, the room gone -------------------------------------------------------------


async def test_reconnect_after_the_daemon_went_one_row_per_attempt_and_the_gap_measured(sock_path: str) -> None:
    doc = build_doc([], schema=3, comms={"sl": SLIDER, "lay": LAYOUT})
    s = PeerSession(SessionConfig(sock_path, "nb-1"))
    task = asyncio.create_task(s.run_forever(retry_initial=0.2, retry_max=0.4))
    try:
        async with ScriptedDaemon(sock_path, doc):
            await wait_until(lambda: s.state == LIVE, "live", 10)
        await wait_until(lambda: s.attempts >= 3, "three attempts while the daemon is away", 10)
        assert s.snapshot().lifecycle.daemon == "reconnecting"
        assert s.snapshot().lifecycle.disconnected_s > 0
        async with ScriptedDaemon(sock_path, doc):
            await wait_until(lambda: s.state == LIVE and s.connections == 2, "live again", 10)
            lc = s.snapshot().lifecycle
    finally:
        await s.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(lc.gaps_s) == 1 and lc.gaps_s[0] > 0.4 and lc.daemon == "connected" and lc.room == "open"
    rows = [e for e in s.log.events() if e.kind == ev.CONNECTION and e.data.get("state") == "disconnected"]
    attempts = [e for e in rows if "attempt" in e.data.get("detail", "")]
    assert len(attempts) == len(rows) >= 3  # one row per attempt, each saying which
    no_socket = [e for e in s.log.events() if e.kind == ev.ERROR and e.summary.startswith("no socket at")]
    assert len(no_socket) == 1  # the same error attempt after attempt: logged once
    assert any(e.kind == ev.LIFECYCLE and e.data.get("what") == "reconnected" for e in s.log.events())


async def test_a_room_the_daemon_no_longer_lists_is_marked_gone(sock_path: str) -> None:
    doc = build_doc([], schema=3, comms={"sl": SLIDER})
    s = PeerSession(SessionConfig(sock_path, "nb-1"))
    task = asyncio.create_task(s.run_forever(retry_initial=0.2, retry_max=0.4))
    try:
        async with ScriptedDaemon(sock_path, doc):
            await wait_until(lambda: s.state == LIVE, "live", 10)
        async with ScriptedDaemon(sock_path, build_doc([], schema=3), notebook_id="another"):
            await wait_until(lambda: s.snapshot().lifecycle.room == "gone", "the room marked gone", 10)
            snap = s.snapshot()
    finally:
        await s.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [e.data["what"] for e in s.log.events() if e.kind == ev.LIFECYCLE and e.data["what"] == "room_gone"] \
        == ["room_gone"]
    assert snap.connection != LIVE and [c.comm_id for c in snap.comms] == ["sl"]  # its last state stays shown
    comms = next(n for n in build_top(snap) if n.key == "comms")
    assert all("replay-only · room is gone" in n.cols[2] for n in comms.children)


# -- the kernel's lifecycle ------------------------------------------------------------------------


async def test_kernel_death_and_restart_are_events_counted_and_marked_on_comms(sock_path: str) -> None:
    doc = build_doc([], schema=3, comms={"sl": SLIDER})
    async with ScriptedDaemon(sock_path, doc) as d:
        s = PeerSession(SessionConfig(d.path, d.notebook_id))
        async with s.running():
            await s.wait_settled(0.15, 10)
            for status in ("idle", "busy", "idle"):
                await d.broadcast({"event": "kernel_status", "status": status, "cell_id": None})
            await wait_until(lambda: s.snapshot().lifecycle.kernel == "idle", "idle")
            await d.broadcast({"event": "kernel_status", "status": "dead", "cell_id": None})
            snap = await s.wait_for(lambda sn: sn.lifecycle.kernel == "dead", 5)
            comms = next(n for n in build_top(snap) if n.key == "comms")
            assert all(n.cols[2].startswith("replay-only · kernel is dead") for n in comms.children)
            for status in ("starting", "idle"):
                await d.broadcast({"event": "kernel_status", "status": status, "cell_id": None})
            snap = await s.wait_for(lambda sn: sn.lifecycle.kernel_restarts == 1, 5)
            comms = next(n for n in build_top(snap) if n.key == "comms")
            assert not any("replay-only" in n.cols[2] for n in comms.children)
    whats = [e.data["what"] for e in s.log.events() if e.kind == ev.LIFECYCLE and e.target == "kernel"]
    assert whats.count("kernel_restarted") == 1
    assert [e.data["to"] for e in s.log.events() if e.kind == ev.LIFECYCLE and e.target == "kernel"][-5:] == [
        "busy", "idle", "dead", "starting", "idle"]


# -- bad input at the command line -------------------------------------------------------------------


class SilentSocket:
    """A Unix socket that accepts every connection and never answers."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="rti-silent-", dir="/tmp")
        self.path = os.path.join(self.dir, "rt.sock")
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(32)
        self.sock.settimeout(0.2)
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except (TimeoutError, OSError):
                continue

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        for c in self.held:
            c.close()
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


@pytest.fixture()
def silent() -> Any:
    s = SilentSocket()
    yield s
    s.close()


def test_watch_for_on_a_socket_that_never_answers_exits_10_saying_so(silent: SilentSocket) -> None:
    res = run_cli("watch", "--socket", silent.path, "--notebook", "nb", "--for", "3")
    assert res.returncode == EXIT_TIMEOUT, res
    (line,) = res.stderr.strip().splitlines()
    assert "never live in 3 s" in line and "Traceback" not in res.stderr


def test_snapshot_timeout_is_respected_on_a_socket_that_never_answers(silent: SilentSocket) -> None:
    t0 = time.monotonic()
    res = run_cli("snapshot", "--socket", silent.path, "--notebook", "nb", "--timeout", "3")
    took = time.monotonic() - t0
    assert res.returncode in (5, EXIT_TIMEOUT), res  # 5: it accepted but never answered a ping
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert took < 3 + 2.5, took  # the interpreter's start-up included


@pytest.mark.parametrize("command", ["watch", "check", "snapshot"])
def test_a_wrong_kernel_connection_path_is_one_line_and_exit_2(command: str, silent: SilentSocket) -> None:
    res = run_cli(command, "--socket", silent.path, "--notebook", "nb", "--kernel-connection",
                  "/nonexistent/kernel-1.json")
    assert res.returncode == EXIT_USAGE, res
    assert res.stderr.strip() == ("runtimed-inspector: --kernel-connection: no kernel connection file at "
                                  "/nonexistent/kernel-1.json")


async def test_check_reconnects_and_reports_the_gap(sock_path: str) -> None:
    from inspector.check import _gap_line, watch_room

    doc = build_doc([], schema=3, comms={"sl": SLIDER, "lay": LAYOUT})
    s = PeerSession(SessionConfig(sock_path, "nb-1", divergence=DivergenceOptions()))
    d1 = ScriptedDaemon(sock_path, doc)
    await d1.__aenter__()
    check = asyncio.create_task(watch_room(s, 4.0, 10))
    await wait_until(lambda: s.state == LIVE, "live", 10)
    await d1.__aexit__(None, None, None)  # the daemon goes away during the check...
    await wait_until(lambda: s.attempts >= 1, "a reconnect attempt", 10)
    async with ScriptedDaemon(sock_path, doc):  # ...and comes back
        watched = await asyncio.wait_for(check, 30)
    lc = watched.lifecycle
    assert len(lc.gaps_s) == 1 and lc.gaps_s[0] > 0 and s.connections == 2
    assert _gap_line(lc) == f"; disconnected for {lc.disconnected_s:.1f} s (1 gap)"
    assert watched.lifecycle_counts.get("reconnected") == 1
