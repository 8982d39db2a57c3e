"""After the daemon restarts, a session that reconnects equals a fresh attach: the divergence
engine is per connection, so the old connection's comms leave no phantom `missing_in_feed` or
`seq_anomaly` (testbed daemon, real ipykernel and ipywidgets, real Unix socket)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable

import pytest

from inspector.divergence import DivergenceOptions, SettleConfig
from inspector.session import PeerSession, SessionConfig
from inspector.testbed import Testbed

pytestmark = pytest.mark.kernel

ROOM = "0b5e9a1c-7d3f-4c2e-9a61-5f0c2d8e4b17"


def sliders(n: int) -> str:
    return f"import ipywidgets as w\nss = [w.IntSlider(value=i) for i in range({n})]"


@contextlib.asynccontextmanager
async def daemon(sock: str, n_sliders: int) -> AsyncIterator[Testbed]:
    tb = Testbed(sock, auto_launch=False, write_daemon_json=False)
    await tb.start()
    try:
        tb.create_room(notebook_id=ROOM)
        await tb.launch_kernel(ROOM)
        await tb.wait_kernel(ROOM)
        await tb.run_cell(ROOM, tb.add_cell(ROOM, sliders(n_sliders)))
        yield tb
    finally:
        await tb.stop()


async def until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def settled(s: PeerSession, n_comms: int) -> bool:
    snap = s.snapshot()
    return (s.state == "live" and len(snap.comms) == n_comms and s.divergence is not None
            and s.divergence.next_deadline() is None and s.settled(0.3))


async def test_a_reconnect_after_a_daemon_restart_equals_a_fresh_attach() -> None:
    d = tempfile.mkdtemp(prefix="rti-rc-", dir="/tmp")
    sock = os.path.join(d, "rt.sock")
    opts = DivergenceOptions(SettleConfig())
    s = PeerSession(SessionConfig(sock, ROOM, divergence=opts))
    task = None
    try:
        async with daemon(sock, 4) as tb:
            n_first = len(tb.comm_state(ROOM))
            assert n_first >= 12  # each slider brings its layout and style
            task = asyncio.create_task(s.run_forever(retry_initial=0.2, retry_max=0.5))
            await until(lambda: settled(s, n_first), 30, "the first join")
            assert s.snapshot().divergence == ()
            first_ids = {c.comm_id for c in s.snapshot().comms}
        await until(lambda: s.state == "disconnected", 10, "the disconnect")
        async with daemon(sock, 2) as tb:
            n_second = len(tb.comm_state(ROOM))
            await until(lambda: s.connections == 2 and settled(s, n_second), 30, "the second join")
            after = s.snapshot()
            fresh = PeerSession(SessionConfig(sock, ROOM, divergence=opts))
            async with fresh.running():
                await until(lambda: settled(fresh, n_second), 30, "a fresh attach")
                ref = fresh.snapshot()
            assert {c.comm_id for c in after.comms} == {c.comm_id for c in ref.comms}
            assert not first_ids & {c.comm_id for c in after.comms}
            assert after.divergence == ref.divergence == ()
            assert after.sources == ref.sources == ("doc", "feed")
            # no transition of the old connection's comms was reported after the reconnect
            reconnected = [e.seq for e in s.log.events() if e.kind == "connection" and e.data.get("state") == "live"][-1]
            late = [e for e in s.log.events() if e.kind == "divergence" and e.seq > reconnected
                    and e.data["comm_id"] in first_ids]
            assert late == []
    finally:
        await s.stop()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        shutil.rmtree(d, ignore_errors=True)
