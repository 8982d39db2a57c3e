"""Recording as a session option, replayed by `inspector.replay_driver`: the testbed daemon (real
kernel and widgets) with each injected fault, recorded by the inspector's own session
(`SessionConfig.recording`), then replayed offline. Replay gives the kinds, comms and keys the
live session reported, and `--at` before a comm's first event shows the room without it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inspector import events as ev
from inspector.divergence import DivergenceOptions, SettleConfig
from inspector.integrity import IntegrityOptions
from inspector.recording.session_recording import RecordingOptions
from inspector.replay_driver import At, Replay
from inspector.session import PeerSession, SessionConfig
from inspector.testbed import Testbed

pytestmark = pytest.mark.kernel

SLIDER = "import ipywidgets as w\ns = w.IntSlider(value=1)"
OUTPUT = "import ipywidgets as w\nout = w.Output()"

# (fault, setup cell, action cell or None, model of the faulty comm, kind, differing keys)
CASES = [
    ("doc-skip-open:IntSliderModel", SLIDER, None, "IntSliderModel", "missing_in_doc", set()),
    ("doc-drop-update:IntSliderModel", SLIDER, "s.value = 7", "IntSliderModel", "state_mismatch", {"value"}),
    ("doc-skip-close:IntSliderModel", SLIDER, "s.close()", "IntSliderModel", "closed_but_in_doc", set()),
    ("feed-drop-update:IntSliderModel", SLIDER, "s.value = 7", "IntSliderModel", "state_mismatch", {"value"}),
    ("feed-drop-close:IntSliderModel", SLIDER, "s.close()", "IntSliderModel", "missing_in_doc", set()),
    ("doc-wrong-model:IntSliderModel", SLIDER, None, "IntSliderModel", "model_mismatch", set()),
    ("doc-seq-duplicate:IntSliderModel", SLIDER, None, "IntSliderModel", "seq_anomaly", set()),
    ("doc-seq-reorder:IntSliderModel", SLIDER, None, "IntSliderModel", "seq_anomaly", set()),
    ("doc-drop-output:OutputModel", OUTPUT, "with out:\n    print('captured')", "OutputModel",
     "outputs_mismatch", {"outputs"}),
]


def verdict(divs: object) -> set[tuple[str, str, frozenset[str]]]:
    """What a user compares: comm, kind and differing keys of each settled divergence."""
    return {(d.comm_id, d.kind, frozenset(k.key for k in d.keys)) for d in divs  # type: ignore[attr-defined]
            if d.status != "pending"}


@dataclass
class Run:
    tb: Testbed
    nid: str
    session: PeerSession
    path: str

    async def settle(self, timeout: float = 15.0) -> None:
        """Ticks through the core (recorded) until nothing is pending and the room is quiet."""
        sd = self.session.divergence
        assert sd is not None
        start = time.monotonic()
        while not (sd.engine.next_deadline() is None and self.session.settled(0.2)):
            assert time.monotonic() - start < timeout, "the session did not settle"
            self.session.tick(time.monotonic())
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def recorded(fault: str | None, kernel_tap: bool = False, integrity: bool = False) -> AsyncIterator[Run]:
    d = tempfile.mkdtemp(prefix="rti-rp-", dir="/tmp")
    tb = Testbed(os.path.join(d, "rt.sock"), faults=[fault] if fault else [], auto_launch=False,
                 write_daemon_json=False)
    await tb.start()
    session = task = None
    try:
        nid = tb.create_room()
        await tb.launch_kernel(nid)
        await tb.wait_kernel(nid)
        conn = tb.room(nid).kernel.km.connection_file if kernel_tap else None
        path = os.path.join(d, "s.rtirec")
        session = PeerSession(SessionConfig(tb.socket_path, nid, allow_kernel_launch=True,
                                            divergence=DivergenceOptions(SettleConfig(), conn),
                                            recording=RecordingOptions(file=path),
                                            integrity=IntegrityOptions() if integrity else None))
        task = asyncio.create_task(session.run())
        await session.wait_settled(0.1, 30)
        yield Run(tb, nid, session, path)
    finally:
        if session is not None:
            await session.stop()
            if session.recording is not None:
                session.recording.finish()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await tb.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("fault,setup,action,model,kind,keys", CASES, ids=[c[0].split(":")[0] for c in CASES])
async def test_replay_gives_the_live_verdict(fault: str, setup: str, action: str | None, model: str, kind: str,
                                             keys: set[str]) -> None:
    async with recorded(fault) as r:
        await r.tb.run_cell(r.nid, setup)
        await r.settle()
        comm = {c.model_name: c.comm_id for c in r.tb.comm_state(r.nid)}[model]
        if action is not None:
            await r.tb.run_cell(r.nid, action)
        await r.settle()
        sd = r.session.divergence
        assert sd is not None
        now = time.monotonic()
        r.session.tick(now)
        live = verdict(sd.divergences(include_pending=False, now=now))
        assert (comm, kind, frozenset(keys)) in live
        live_tree = r.session.snapshot()
        path = r.path
        shutil.copy(path, path + ".copy")
        # the file is complete while the session is still connected: replay its end state
        rp = Replay(path + ".copy")
        core = rp.run()
        assert core.divergence is not None
        replayed = verdict(core.divergence.divergences(include_pending=False, now=core.now))
        assert replayed == live
        # the same event log, seq for seq (what `watch` printed live is what `watch FILE` prints)
        replay_log = [(e.seq, e.kind, e.summary) for e in core.log.events()]
        live_log = [(e.seq, e.kind, e.summary) for e in r.session.log.events()]
        assert replay_log == live_log[:len(replay_log)] and len(replay_log) >= len(live_log) - 2
        snap = core.snapshot()
        assert snap.heads == live_tree.heads
        assert {c.comm_id: c.model_name for c in snap.comms} == {c.comm_id: c.model_name for c in live_tree.comms}


async def test_at_before_a_comms_first_event_lacks_it(tmp_path: Path) -> None:
    async with recorded(None) as r:
        await r.tb.run_cell(r.nid, SLIDER)
        await r.settle()
        comm = next(c.comm_id for c in r.session.snapshot().comms if c.model_name == "IntSliderModel")
        await r.tb.run_cell(r.nid, "s.value = 5")
        await r.settle()
        path = str(tmp_path / "s.rtirec")
        shutil.copy(r.path, path)
    rp = Replay(path)
    events: list[ev.Event] = []
    rp.core.log.subscribe(events.append)
    rp.run()
    # the first event that names the comm: a document change of comms/ID, a broadcast, ...
    first = min(e.seq for e in events if comm in f"{e.target} {e.data}")
    before = Replay(path).run(At(seq=first - 1)).snapshot()
    assert comm not in {c.comm_id for c in before.comms}
    after = Replay(path).run(At(seq=first + 40)).snapshot()
    assert comm in {c.comm_id for c in after.comms}
    end = Replay(path).run().snapshot()
    slider = next(c for c in end.comms if c.comm_id == comm)
    assert slider.state.get("value") == 5


async def test_outputs_resolved_live_are_resolved_in_the_replay(tmp_path: Path) -> None:
    """The blob server is HTTP, not the socket: what it answered is recorded (`Manifest`), so the
    replay shows the outputs the live session resolved, from when it had them, and a redacted
    copy keeps their structure but not their text."""
    from inspector.recording import Manifest, RecordingReader
    from inspector.recording.redact import redact_file

    async with recorded(None) as r:
        await r.tb.run_cell(r.nid, "print('OUTPUT_TEXT_4711')")
        await r.settle()
        deadline = time.monotonic() + 15
        while True:
            live = r.session.snapshot()
            outs = [o for c in live.cells for o in c.outputs]
            if outs and all(o.manifest is not None for o in outs):
                break
            assert time.monotonic() < deadline, f"outputs not resolved live: {outs}"
            await asyncio.sleep(0.05)
        path = str(tmp_path / "s.rtirec")
        shutil.copy(r.path, path)
    recs = [rec for rec in RecordingReader(path) if isinstance(rec, Manifest)]
    assert recs and all(rec.manifest is not None for rec in recs)
    end = Replay(path).run().snapshot()
    replayed = {o.ref: o for c in end.cells for o in c.outputs}
    for o in outs:
        assert replayed[o.ref].manifest == o.manifest and replayed[o.ref].resolved == o.resolved
    assert "OUTPUT_TEXT_4711" in json.dumps([o.manifest for o in replayed.values()])
    # before the live session had the manifest, the replay does not pretend to have it
    first = min(rec.mono for rec in recs)
    before = Replay(path).run(At(mono=first - 1e-6)).snapshot()
    for c in before.cells:
        for o in c.outputs:
            assert o.manifest is None and "not resolved at this point" in (o.error or "")
    red = str(tmp_path / "red.rtirec")
    redact_file(path, red)
    assert b"OUTPUT_TEXT_4711" not in Path(red).read_bytes()
    red_end = Replay(red).run().snapshot()  # the redacted copy replays, with no text in its outputs
    assert "OUTPUT_TEXT_4711" not in json.dumps(red_end.to_json())
    red_recs = [rec for rec in RecordingReader(red) if isinstance(rec, Manifest)]
    assert [rec.ref for rec in red_recs] == [rec.ref for rec in recs]
    assert "OUTPUT_TEXT_4711" not in json.dumps([rec.manifest for rec in red_recs])


async def test_replay_of_a_tapped_session_gives_the_live_integrity_report(tmp_path: Path) -> None:
    """The kernel's comm table and state come back from the recorded IOPub messages, so the
    replayed integrity report (liveness by the kernel's evidence) is the live one."""
    async with recorded(None, kernel_tap=True, integrity=True) as r:
        await r.tb.run_cell(r.nid, SLIDER)
        await r.settle()
        live = r.session.snapshot()
        path = str(tmp_path / "s.rtirec")
        shutil.copy(r.path, path)
    assert live.integrity is not None
    live_view = {c.comm_id: (c.liveness, c.evidence) for c in live.integrity.liveness.comms}
    assert any(ev == "kernel_tap" for _, ev in live_view.values()), live_view
    snap = Replay(path).run().snapshot()
    assert snap.integrity is not None
    assert {c.comm_id: (c.liveness, c.evidence) for c in snap.integrity.liveness.comms} == live_view
