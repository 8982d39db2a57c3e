"""The divergence engine in a live session against the testbed daemon with a real ipykernel and
real ipywidgets: each fault yields exactly its kind on the right comm and keys within the settle
window, and a fast slider sweep without faults settles with no report."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from inspector import events as ev
from inspector.divergence import DivergenceOptions, SessionDivergence, SettleConfig
from inspector.session import PeerSession, SessionConfig
from inspector.testbed import Testbed

pytestmark = pytest.mark.kernel

SETTLE = SettleConfig()
MARGIN = 1.5  # seconds on top of the settle window (a loaded CI machine)

SLIDER = "import ipywidgets as w\ns = w.IntSlider(value=1)"
OUTPUT = "import ipywidgets as w\nout = w.Output()"


@dataclass
class Live:
    tb: Testbed
    nid: str
    session: PeerSession
    sd: SessionDivergence
    events: list[ev.Event] = field(default_factory=list)

    def comm_id(self, model: str) -> str:
        ids = [r.comm_id for r in self.tb.comm_state(self.nid) if r.model_name == model]
        assert len(ids) == 1, ids
        return ids[0]

    def reported(self) -> dict[tuple[str, str], Any]:
        return {(d.comm_id, d.kind): d for d in self.sd.engine.divergences(include_pending=False)}

    def ever_reported(self) -> set[tuple[str, str]]:
        out = set()
        for e in self.events:
            for d in e.data.get("divergences", ()):
                if d["status"] != "pending":
                    out.add((d["comm_id"], d["kind"]))
        return out

    async def until(self, pred: Any, timeout: float) -> float:
        """Wait for a condition (evaluating the engine as time passes); return the time taken."""
        start = time.monotonic()
        while not pred():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"condition not met within {timeout:.1f} s; reported {sorted(self.reported())}")
            self.sd.run()
            await asyncio.sleep(0.01)
        return time.monotonic() - start

    async def settled(self, timeout: float = 10.0) -> None:
        """Until the views agree or every difference has been classified (nothing pending)."""
        await self.until(lambda: self.sd.engine.next_deadline() is None and self.session.settled(0.05), timeout)


@contextlib.asynccontextmanager
async def live_room(fault: str | None = None, kernel_tap: bool = False) -> AsyncIterator[Live]:
    d = tempfile.mkdtemp(prefix="rti-dv-", dir="/tmp")
    tb = Testbed(os.path.join(d, "rt.sock"), faults=[fault] if fault else [], auto_launch=False,
                 write_daemon_json=False)
    await tb.start()
    session = None
    task = None
    try:
        nid = tb.create_room()
        await tb.launch_kernel(nid)
        await tb.wait_kernel(nid)
        conn = tb.room(nid).kernel.km.connection_file if kernel_tap else None
        session = PeerSession(SessionConfig(tb.socket_path, nid, allow_kernel_launch=True,
                                            divergence=DivergenceOptions(SETTLE, conn)))
        events: list[ev.Event] = []
        session.log.subscribe(lambda e: events.append(e) if e.kind == ev.DIVERGENCE else None)
        task = asyncio.create_task(session.run())
        await session.wait_settled(0.1, 30)
        assert session.divergence is not None
        live = Live(tb, nid, session, session.divergence, events)
        sd = live.sd
        if kernel_tap:  # the SUB socket only sees what is published after it joined
            while sd.tap.received == 0:
                await tb.run_cell(nid, "1")
        yield live
    finally:
        if session is not None:
            await session.stop()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await tb.stop()
        shutil.rmtree(d, ignore_errors=True)


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


@pytest.mark.parametrize("fault,setup,action,model,kind,keys", CASES, ids=[c[0].split(":")[0] for c in CASES])
async def test_each_fault_yields_exactly_its_kind(fault: str, setup: str, action: str | None, model: str,
                                                  kind: str, keys: set[str]) -> None:
    async with live_room(fault) as r:
        await r.tb.run_cell(r.nid, setup)
        target = r.comm_id(model)
        if action is not None:
            await r.settled()
            assert r.reported() == {}
            await r.tb.run_cell(r.nid, action)
        # membership, outputs and close findings wait their own longer quiet (docs/verdicts.md)
        slow = kind in ("missing_in_doc", "missing_in_feed", "closed_but_in_doc", "outputs_mismatch")
        limit = (max(SETTLE.quiet_s, SETTLE.membership_quiet_s) if slow else SETTLE.quiet_s) + MARGIN
        took = await r.until(lambda: (target, kind) in r.reported(), limit)
        assert took <= limit
        await r.settled()
        assert set(r.reported()) == {(target, kind)}
        assert r.ever_reported() == {(target, kind)}
        d = r.reported()[(target, kind)]
        assert {k.key for k in d.keys} == keys
        # a seq anomaly is a fact about one view's numbering: a warning (docs/verdicts.md)
        assert d.severity == ("warn" if kind == "seq_anomaly" else "error") and d.model_name == model
        if fault.startswith("doc-drop-update"):
            (k,) = d.keys
            assert (k.doc, k.feed) == (1, 7) and k.doc_age_ms > k.feed_age_ms
            assert "doc behind feed by 1 update" in d.detail
        if fault.startswith("feed-drop-update"):
            (k,) = d.keys
            assert (k.doc, k.feed) == (7, 1)


async def test_kernel_view_names_the_wrong_side() -> None:
    async with live_room("feed-drop-update:IntSliderModel", kernel_tap=True) as r:
        await r.tb.run_cell(r.nid, SLIDER)
        await r.settled()
        assert r.reported() == {}
        target = r.comm_id("IntSliderModel")
        await r.until(lambda: target in r.sd.tap.table.comms, 5)
        await r.tb.run_cell(r.nid, "s.value = 9")
        await r.until(lambda: (target, "state_mismatch") in r.reported(), SETTLE.quiet_s + MARGIN)
        d = r.reported()[(target, "state_mismatch")]
        (k,) = d.keys
        assert (k.key, k.doc, k.feed, k.kernel) == ("value", 9, 1, 9)
        assert "the kernel's last word agrees with doc: feed is wrong" in d.detail
        snap = r.session.snapshot()
        assert set(snap.sources) == {"doc", "feed", "kernel"}
        assert [(x.comm_id, x.kind) for x in snap.divergence] == [(target, "state_mismatch")]
        assert r.sd.tap.rejected == 0 and r.sd.tap.received > 0


async def test_fast_slider_sweep_without_fault_settles_without_report() -> None:
    async with live_room(kernel_tap=True) as r:
        await r.tb.run_cell(r.nid, SLIDER)
        target = r.comm_id("IntSliderModel")
        start = time.monotonic()
        await r.tb.run_cell(r.nid, "import time\ns.max = 1000\nfor i in range(200):\n    s.value = i\n    time.sleep(0.01)")
        assert time.monotonic() - start < 10
        await r.settled()
        assert r.reported() == {} and r.ever_reported() == set()
        snap = r.session.snapshot()
        assert snap.divergence == ()
        assert {c.comm_id: c.state.get("value") for c in snap.comms}[target] == 199
        assert r.sd.tap.table.comms[target].state["value"] == 199
        # the sweep was seen as pending differences that settled, never as divergence
        assert all(set(e.data["after"]) <= {"pending", "in_sync"} for e in r.events)
