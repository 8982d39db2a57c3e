"""Testbed daemon with a real ipykernel and real ipywidgets: the document's comms, the CommSync
feed view, the daemon's CommState and the kernel agree; each fault makes exactly the
difference it names."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import pytest
from testbed_peer import RawPeer, call_in_testbed, running_testbed

from inspector.protocol import messages as m
from inspector.session import PeerSession, SessionConfig
from inspector.snapshot import Snapshot
from inspector.testbed import TestbedThread

pytestmark = pytest.mark.kernel

SCENARIO = [
    "import ipywidgets as w\ns = w.IntSlider(value=1, description='s')\ns",
    "box = w.VBox([w.Label('a'), w.Checkbox(value=True)])\nbox",
    "out = w.Output()\nwith out:\n    print('captured')\nout",
    "s.value = 7",
    "b = w.Button(description='gone')\nb.close()",
]
KERNEL_WIDGETS = (
    "import json\nfrom ipywidgets.widgets.widget import _instances\n"
    "print(json.dumps({k: [v._model_name, v.get_state().get('value')] for k, v in _instances.items()}))"
)


@pytest.fixture(scope="module")
def bed():
    yield from running_testbed("tbk")


call = call_in_testbed


class Room:
    """One room on the shared testbed with an inspector peer attached."""

    def __init__(self, bed: TestbedThread, cells: list[str]) -> None:
        self.bed = bed
        self.tb = bed.testbed
        self.cells = cells
        self.nid = ""
        self.session: PeerSession | None = None
        self._run: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Room:
        self.nid = await call(self.bed, self.tb.create_room, self.cells)
        self.session = PeerSession(SessionConfig(self.bed.socket_path, self.nid, allow_kernel_launch=True))
        await self.session.connect()  # joining the trusted room auto-launches its kernel
        self._run = asyncio.create_task(self.session.run())
        await call(self.bed, self.tb.wait_kernel, self.nid)
        return self

    async def run_all(self) -> None:
        for index in range(len(self.cells)):
            await call(self.bed, self.tb.run_cell, self.nid, index)

    async def settle(self) -> Snapshot:
        assert self.session is not None
        await self.session.wait_settled(0.3, 20)
        return self.session.snapshot()

    async def kernel_widgets(self) -> dict[str, list[Any]]:
        cid = await call(self.bed, self.tb.run_cell, self.nid, KERNEL_WIDGETS)
        (entry,) = (await call(self.bed, self.tb.cells, self.nid))[-1]["outputs"]
        assert (await call(self.bed, self.tb.cells, self.nid))[-1]["id"] == cid
        return json.loads(self.tb.manifest(entry)["text"]["inline"])

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.stop()
        if self._run is not None:
            self._run.cancel()
        await call(self.bed, self.tb.shutdown_kernel, self.nid)


def differences(snap: Snapshot) -> set[tuple[Any, ...]]:
    """What separates the document's comms from the feed view, after settling."""
    doc = {c.comm_id: c for c in snap.comms}
    feed = {c.comm_id: c for c in snap.feed.comms}
    diffs: set[tuple[Any, ...]] = set()
    for cid in feed.keys() - doc.keys():
        diffs.add(("missing_in_doc", feed[cid].model_name))
    for cid in doc.keys() - feed.keys():
        diffs.add(("missing_in_feed", doc[cid].model_name))
    for cid in doc.keys() & feed.keys():
        d, f = doc[cid], feed[cid]
        if d.model_name != f.model_name:
            diffs.add(("model", f.model_name, d.model_name))
        if d.state != f.state:
            keys = {k for k in set(d.state) | set(f.state) if d.state.get(k) != f.state.get(k)}
            diffs.add(("state", f.model_name, tuple(sorted(keys))))
        if f.captured is not None and len(d.outputs) != len(f.captured):
            diffs.add(("outputs", f.model_name, len(d.outputs), len(f.captured)))
    seqs = [c.seq for c in doc.values()]
    if len(set(seqs)) != len(seqs):
        diffs.add(("seq_duplicate",))
    else:
        by_seq = [cid for cid in sorted(doc, key=lambda c: (doc[c].seq, c)) if cid in feed]
        if by_seq != [cid for cid in feed if cid in doc]:
            diffs.add(("seq_order",))
    return diffs


async def test_doc_feed_commstate_and_kernel_agree(bed: TestbedThread) -> None:
    async with Room(bed, SCENARIO) as room:
        await room.run_all()
        snap = await room.settle()
        assert differences(snap) == set()
        doc = {c.comm_id: c for c in snap.comms}
        feed = {c.comm_id: c for c in snap.feed.comms}
        table = {r.comm_id: r for r in bed.testbed.comm_state(room.nid)}
        kernel = await room.kernel_widgets()
        assert set(doc) == set(feed) == set(table) == set(kernel)
        models = sorted(c.model_name for c in doc.values())
        assert models.count("IntSliderModel") == 1 and "VBoxModel" in models and "OutputModel" in models
        assert "ButtonModel" not in models  # closed
        for cid, c in doc.items():
            assert c.state == feed[cid].state == table[cid].state
            assert c.seq == table[cid].seq  # doc seq is CommState's seq
            assert kernel[cid][0] == c.model_name
        (slider,) = [c for c in doc.values() if c.model_name == "IntSliderModel"]
        assert slider.state["value"] == feed[slider.comm_id].state["value"] == kernel[slider.comm_id][1] == 7
        # the VBox references its children, which were opened (and sequenced) first
        (vbox,) = [c for c in doc.values() if c.model_name == "VBoxModel"]
        children = [ref.removeprefix("IPY_MODEL_") for ref in vbox.state["children"]]
        assert all(doc[ch].seq < vbox.seq for ch in children)
        # the Output widget's capture: one manifest in the doc, one synthetic output in the feed
        (out,) = [c for c in doc.values() if c.model_name == "OutputModel"]
        assert [bed.testbed.manifest(o.ref) for o in out.outputs] == [
            {"output_type": "stream", "name": "stdout", "text": {"inline": "captured\n"}}]
        assert feed[out.comm_id].captured == ({"output_type": "stream", "name": "stdout", "text": "captured\n"},)
        # the captured print did not go to its cell; the widget displays did
        cells = {c.id: c for c in snap.cells}
        out_cell = cells[bed.testbed.cell_ids(room.nid)[2]]
        assert [o.output_type for o in out_cell.outputs] == ["execute_result"]
        assert snap.kernel.status == "idle"


async def test_late_joiner_gets_one_comm_sync_matching_the_doc(bed: TestbedThread) -> None:
    async with Room(bed, SCENARIO[:3]) as room:
        await room.run_all()
        snap = await room.settle()
        late = RawPeer(bed.socket_path)
        await late.connect({"channel": "notebook_sync", "notebook_id": room.nid, "protocol": "v2"})
        first = await late.read_one()
        assert first is not None and first[0] == 0x00
        await late.pump_until(lambda: late.broadcasts, 10)
        sync = late.broadcasts[0]
        assert sync["event"] == "comm_sync"
        assert [c["comm_id"] for c in sync["comms"]] == [c.comm_id for c in sorted(snap.comms, key=lambda c: c.seq)]
        assert all("buffers" not in c for c in sync["comms"])
        await late.pump_quiet(0.3)
        assert sum(b["event"] == "comm_sync" for b in late.broadcasts) == 1
        doc_comms = late.root()["comms"]
        for c in sync["comms"]:
            assert json.loads(doc_comms[c["comm_id"]]["state"]) == c["state"]
            assert doc_comms[c["comm_id"]]["model_name"] == c["model_name"]
        await late.close()


async def test_restart_clears_doc_and_feed_and_kernel_death_keeps_comms(bed: TestbedThread) -> None:
    async with Room(bed, SCENARIO[:1]) as room:
        await room.run_all()
        snap = await room.settle()
        assert len(snap.comms) == 3 and len(snap.feed.comms) == 3
        await call(bed, bed.testbed.restart_kernel, room.nid)
        snap = await room.settle()
        assert snap.comms == () and snap.feed.comms == () and bed.testbed.comm_state(room.nid) == []
        await call(bed, bed.testbed.run_cell, room.nid, 0)
        snap = await room.settle()
        assert sorted(c.seq for c in snap.comms) == [0, 1, 2]  # seq restarts after the clear
        assert differences(snap) == set()
        # a dead kernel keeps its comms (seed-era daemon) and reports "error"
        kernel = bed.testbed.room(room.nid).kernel
        assert kernel is not None and kernel.pid
        os.kill(kernel.pid, signal.SIGKILL)
        assert room.session is not None
        await bed.testbed.wait_until(lambda: room.session.feed.kernel_dead, 20)
        snap = await room.settle()
        assert len(snap.comms) == 3 and all(c.status == "kernel_dead" for c in snap.feed.comms)
        info = await room.session.request(m.GetKernelInfo())
        assert info.status == "error"


SLIDER = "IntSliderModel"


@pytest.mark.parametrize(("fault", "expected"), [
    ("doc-skip-open:IntSliderModel", {("missing_in_doc", SLIDER)}),
    ("doc-drop-update:IntSliderModel", {("state", SLIDER, ("value",))}),
    ("doc-skip-close:ButtonModel", {("missing_in_feed", "ButtonModel")}),
    ("feed-drop-update:IntSliderModel", {("state", SLIDER, ("value",))}),
    ("feed-drop-close:ButtonModel", {("missing_in_doc", "ButtonModel")}),
    ("doc-wrong-model:IntSliderModel", {("model", SLIDER, "DOMWidgetModel")}),
    ("doc-seq-duplicate:IntSliderModel", {("seq_duplicate",)}),
    ("doc-seq-reorder:IntSliderModel", {("seq_order",)}),
    ("doc-drop-output", {("outputs", "OutputModel", 0, 1)}),
])
async def test_fault_produces_exactly_its_difference(bed: TestbedThread, fault: str, expected: set) -> None:
    bed.set_faults([fault])
    try:
        async with Room(bed, SCENARIO) as room:
            await room.run_all()
            snap = await room.settle()
            assert differences(snap) == expected
            doc = {c.comm_id: c for c in snap.comms}
            feed = {c.comm_id: c for c in snap.feed.comms}
            slider = next(c for c in snap.feed.comms if c.model_name == SLIDER)
            if fault.startswith("doc-drop-update"):
                assert (doc[slider.comm_id].state["value"], slider.state["value"]) == (1, 7)
            if fault.startswith("feed-drop-update"):
                assert (doc[slider.comm_id].state["value"], slider.state["value"]) == (7, 1)
            if fault.startswith("doc-seq-"):
                table = [r.comm_id for r in bed.testbed.comm_state(room.nid)]
                i = table.index(slider.comm_id)
                if fault.startswith("doc-seq-duplicate"):
                    assert doc[slider.comm_id].seq == doc[table[i - 1]].seq
                else:
                    by_seq = sorted(doc, key=lambda c: doc[c].seq)
                    assert by_seq == table[:i - 1] + [table[i], table[i - 1]] + table[i + 1:]
            assert set(feed) | set(doc) >= {r.comm_id for r in bed.testbed.comm_state(room.nid)}
    finally:
        bed.set_faults([])


async def test_every_nth_selector(bed: TestbedThread) -> None:
    bed.set_faults(["doc-skip-open:every=2"])
    try:
        async with Room(bed, SCENARIO[:2]) as room:
            await room.run_all()
            snap = await room.settle()
            table = bed.testbed.comm_state(room.nid)
            assert len(table) >= 4
            assert {c.comm_id for c in snap.comms} == {r.comm_id for r in table if (r.seq + 1) % 2 != 0}
            assert {c.comm_id for c in snap.feed.comms} == {r.comm_id for r in table}
    finally:
        bed.set_faults([])


async def test_doc_delay_applies_writes_late_but_in_order(bed: TestbedThread) -> None:
    bed.set_faults(["doc-delay-ms=1500:IntSliderModel"])
    try:
        async with Room(bed, SCENARIO[:1] + ["s.value = 9"]) as room:
            await call(bed, bed.testbed.run_cell, room.nid, 0)
            assert room.session is not None
            # the slider's put_comm lands late (and the writes queued behind it with it)
            assert SLIDER not in {c.model_name for c in room.session.snapshot().comms}
            await bed.testbed.wait_until(lambda: len(room.session.snapshot().comms) == 3, 10)
            assert differences(await room.settle()) == set()
            await call(bed, bed.testbed.run_cell, room.nid, 1)
            await bed.testbed.wait_until(
                lambda: next(c for c in room.session.snapshot().feed.comms if c.model_name == SLIDER).state["value"] == 9,
                10)
            doc_slider = next(c for c in room.session.snapshot().comms if c.model_name == SLIDER)
            assert doc_slider.state["value"] == 1  # still stale right after execution_done
            await bed.testbed.wait_until(
                lambda: next(c for c in room.session.snapshot().comms if c.model_name == SLIDER).state["value"] == 9, 10)
            assert differences(await room.settle()) == set()
    finally:
        bed.set_faults([])
