"""Widget integrity on the testbed (real ipykernel, real ipywidgets, real Unix socket): the
reference graph over successive snapshots, liveness across a kernel death, an Image widget's
PNG buffer, and a saved notebook's widget state against the live room."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import signal
import struct
import time
import zlib
from collections.abc import Callable

import msgspec
import pytest
from testbed_peer import call_in_testbed, running_testbed
from waiting import wait_until

from inspector import events as ev
from inspector import liveness, references, saved_state, widget_buffers
from inspector.blobs import BlobResolver
from inspector.kernel_tap import KernelTap
from inspector.protocol import messages as m
from inspector.session import PeerSession, SessionConfig
from inspector.snapshot import CommView, Snapshot
from inspector.testbed import TestbedThread

pytestmark = pytest.mark.kernel


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid RGB PNG, so the widget carries real image bytes."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bed():
    yield from running_testbed("tbi")


call = call_in_testbed


class Room:
    """One room on the testbed with an inspector peer attached; `on_snapshot` sees every
    snapshot the session produces as frames arrive."""

    def __init__(self, bed: TestbedThread, cells: list[str]) -> None:
        self.bed, self.tb, self.cells = bed, bed.testbed, cells
        self.nid = ""
        self.session: PeerSession | None = None
        self._run: asyncio.Task[None] | None = None
        self.on_snapshot: Callable[[Snapshot], None] | None = None
        self.comm_messages: list[m.Comm] = []

    async def __aenter__(self) -> Room:
        self.nid = await call(self.bed, self.tb.create_room, self.cells)
        self.session = PeerSession(SessionConfig(self.bed.socket_path, self.nid, allow_kernel_launch=True))
        self.session.add_listener(lambda _paths: self.on_snapshot and self.on_snapshot(self.session.snapshot()))
        self.session.log.subscribe(self._on_event)
        await self.session.connect()
        self._run = asyncio.create_task(self.session.run())
        await call(self.bed, self.tb.wait_kernel, self.nid)
        return self

    def _on_event(self, event: ev.Event) -> None:
        # the `comm` broadcasts as the daemon sent them (every field is kept in the event)
        if event.kind == ev.BROADCAST and event.data.get("event") == "comm":
            bc = m.decode_broadcast(m.encode_json(event.data["message"]))
            if isinstance(bc, m.Comm):
                self.comm_messages.append(bc)

    async def run(self, cell: str | int) -> str:
        return await call(self.bed, self.tb.run_cell, self.nid, cell)

    async def settle(self) -> Snapshot:
        assert self.session is not None
        await self.session.wait_settled(0.3, 30)
        return self.session.snapshot()

    async def printed(self, source: str) -> str:
        """Run a cell and return what it printed (the stream output's text)."""
        cid = await self.run(source)
        cell = next(c for c in await call(self.bed, self.tb.cells, self.nid) if c["id"] == cid)
        (entry,) = cell["outputs"]
        text = self.tb.manifest(entry)["text"]
        if "inline" in text:
            return text["inline"]
        return self.tb.daemon.blobs.get(text["blob"]).decode()

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.stop()
        if self._run is not None:
            self._run.cancel()
        if self.tb.room(self.nid).kernel is not None:
            await call(self.bed, self.tb.shutdown_kernel, self.nid)


def by_model(snap: Snapshot, name: str) -> list[CommView]:
    return [c for c in snap.comms if c.model_name == name]


async def test_box_filled_after_display_resolves_forward_references_without_a_finding(bed):
    # The comm writes land 600 ms after the cell's widget-view output: the view points forward.
    await call(bed, bed.testbed.set_faults, ["doc-delay-ms=600"])
    tracker = references.ReferenceTracker(settle_s=3.0)
    graphs: list[references.ReferenceGraph] = []
    try:
        async with Room(bed, ["import ipywidgets as w\nbox = w.VBox([])\nbox",
                              "box.children = [w.Label('late')]"]) as room:
            room.on_snapshot = lambda s: graphs.append(tracker.update(s, now=time.time()))
            await room.run(0)
            await wait_until(lambda: graphs and any(r.holder.startswith("cell:") and r.target_status == "ok"
                                                    for r in graphs[-1].references), "the view to resolve")
            await room.run(1)
            snap = await room.session.wait_for(  # the delayed writes have landed
                lambda s: by_model(s, "LabelModel") and by_model(s, "VBoxModel")[0].state.get("children"), 30)
    finally:
        await call(bed, bed.testbed.set_faults, [])
    final = tracker.update(snap, now=time.time())
    (box,) = by_model(snap, "VBoxModel")
    (label,) = by_model(snap, "LabelModel")
    # the view was seen unresolved, then resolved within the settle window
    view = [r for r in final.resolved if r.holder.startswith("cell:") and r.target == box.comm_id]
    assert view and view[0].within_settle and 0.3 < view[0].unresolved_for_s < 3.0
    # the box now lists its late child, and both edges are navigable
    (child,) = [r for r in final.references_from(box.comm_id) if r.path == "state/children/0"]
    assert child.target == label.comm_id and child.target_status == "ok" and child.kind == "state"
    assert {r.holder for r in final.referenced_by(label.comm_id)} == {box.comm_id}
    assert final.findings == () and final.unresolved == ()
    assert json.loads(msgspec.json.encode(final))["findings"] == []


async def test_jslink_pairs_and_a_widget_shown_inside_an_output_widget(bed):
    async with Room(bed, ["import ipywidgets as w\na = w.IntSlider()\nb = w.IntSlider()\n"
                          "link = w.jslink((a, 'value'), (b, 'max'))\n"
                          "out = w.Output()\nwith out:\n    display(w.Button(description='inner'))\nout"]) as room:
        await room.run(0)
        snap = await room.settle()
    g = references.build_graph(snap)
    (link,) = by_model(snap, "LinkModel")
    a, b = sorted(by_model(snap, "IntSliderModel"), key=lambda c: c.seq)
    pairs = sorted((r.path, r.kind, r.target, r.trait) for r in g.references_from(link.comm_id))
    assert pairs == [("state/source", "link", a.comm_id, "value"), ("state/target", "link", b.comm_id, "max")]
    (out,) = by_model(snap, "OutputModel")
    (button,) = by_model(snap, "ButtonModel")
    (inner,) = [r for r in g.references_from(out.comm_id) if r.kind == "view"]
    assert (inner.path, inner.target, inner.target_status) == ("outputs/0", button.comm_id, "ok")
    assert out.comm_id in {r.target for r in g.references if r.holder.startswith("cell:")}
    assert {r.holder for r in g.referenced_by(a.comm_id)} == {link.comm_id}
    assert g.findings == () and all(r.resolved for r in g.references)


async def test_a_closed_child_still_listed_by_its_box_is_a_finding_that_stays(bed):
    tracker = references.ReferenceTracker(settle_s=0.5)
    async with Room(bed, ["import ipywidgets as w\nb = w.Button(description='x')\nbox = w.HBox([b])\nbox",
                          "b.close()"]) as room:
        await room.run(0)
        snap = await room.settle()
        assert tracker.update(snap, now=time.time()).findings == ()
        (button,) = by_model(snap, "ButtonModel")
        await room.run(1)
        snap = await room.settle()
        assert by_model(snap, "ButtonModel") == []  # the comm closed
        graph = await wait_until(lambda: (g := tracker.update(room.session.snapshot(), now=time.time())).findings
                                 and g, "the dangling child to outlive the settle window")
        (finding,) = graph.findings
        (box,) = by_model(snap, "HBoxModel")
        assert (finding.kind, finding.holder, finding.path, finding.target, finding.target_status) == \
            ("dangling_state", box.comm_id, "state/children/0", button.comm_id, "missing")
        assert finding.unresolved_for_s > 0.5 and button.comm_id in finding.detail
        # it stays: later snapshots keep it, older
        later = await wait_until(lambda: (g := tracker.update(room.session.snapshot(), now=time.time())).findings
                                 and g.findings[0].unresolved_for_s > finding.unresolved_for_s and g, "time to pass")
        assert later.findings[0].first_seen == finding.first_seen
        assert tracker.resolutions == []


async def test_image_widget_png_buffer_size_hash_and_media_type(bed):
    image = png(3, 2, (200, 30, 60))
    async with Room(bed, [f"import ipywidgets as w\nimg = w.Image(value=bytes.fromhex('{image.hex()}'), "
                          "format='png')\nimg"]) as room:
        await room.run(0)
        snap = await room.settle()
        (img,) = by_model(snap, "ImageModel")
        # v2 era: the document's state lacks the binary key; the bytes came with comm_open
        assert "value" not in img.state
        (fc,) = [f for f in snap.feed.comms if f.comm_id == img.comm_id]
        assert fc.buffers == (len(image),)
        (opened,) = [c for c in room.comm_messages if c.msg_type == "comm_open"
                     and c.content.get("comm_id") == img.comm_id]
        (buf,) = widget_buffers.from_comm_message(img.comm_id, opened.content, [bytes(b) for b in opened.buffers])
        assert buf.path == ("value",) and buf.origin == "open_buffer" and buf.author == "kernel"
        assert (buf.size, buf.sha256, buf.media_type) == (len(image), hashlib.sha256(image).hexdigest(), "image/png")
        assert (buf.width, buf.height) == (3, 2)
        dump = widget_buffers.hex_dump(image, limit=16)
        assert dump.startswith("00000000  89 50 4e 47 0d 0a 1a 0a") and dump.endswith(f"{len(image) - 16} more bytes")

    # The v4 shape of the same buffer (runtimed-v4 §10.3: a blob ref at the buffer's path),
    # resolved through the blob resolver against the testbed's real blob HTTP server.
    digest = await call(bed, bed.testbed.daemon.blobs.put, image, "application/octet-stream")
    v4_comm = msgspec.structs.replace(img, state={**img.state, "value": {
        "blob": digest, "media_type": "application/octet-stream", "size": len(image)}},
        key_writers={"value": "rt:kernel:3f1c2a9b"})
    (ref,) = widget_buffers.find_buffer_refs(msgspec.structs.replace(snap, comms=(v4_comm,)))
    assert (ref.path, ref.origin, ref.blob, ref.declared_size, ref.author) == (
        ("value",), "content_ref", digest, len(image), "kernel")
    ((got, data),) = await widget_buffers.resolve([ref], BlobResolver(bed.testbed.blob_port))
    assert data == image
    assert (got.size, got.sha256, got.hash_matches, got.media_type, got.served_media_type, got.error) == (
        len(image), digest, True, "image/png", "application/octet-stream", None)
    missing = msgspec.structs.replace(ref, blob="0" * 64)
    ((bad, none),) = await widget_buffers.resolve([missing], BlobResolver(bed.testbed.blob_port))
    assert none is None and "404" in (bad.error or "")


async def test_kernel_death_makes_comms_replay_only(bed):
    async with Room(bed, ["import ipywidgets as w\ns = w.IntSlider(value=4)\ns"]) as room:
        await room.run(0)
        snap = await room.settle()
        report = liveness.classify(snap)
        assert report.kernel_alive and report.counts()["live-bound"] == 3
        assert {c.evidence for c in report.comms} == {"feed"}
        kernel = bed.testbed.room(room.nid).kernel
        assert kernel is not None and kernel.pid
        os.kill(kernel.pid, signal.SIGKILL)
        await room.session.wait_for(lambda s: s.kernel.status == "error", 30)
        snap = await room.settle()
        report = liveness.classify(snap)
        assert len(snap.comms) == 3 and not report.kernel_alive
        assert report.counts() == {"live-bound": 0, "replay-only": 3, "orphaned": 0, "not-yet-loaded": 0}
        assert {c.reason for c in report.comms} == {"kernel error"}
        # the kernel's own view, when known, overrides nothing once the kernel is gone
        tapped = liveness.classify(snap, liveness.KernelEvidence(comms={c.comm_id: "jupyter.widget"
                                                                         for c in snap.comms}))
        assert tapped.counts()["replay-only"] == 3


async def test_kernel_tap_evidence_and_the_reserved_namespace(bed):
    # doc-skip-open: the daemon does not write these comm_opens into the doc, so the slider and
    # the reserved nteract.dx.* comm (the 4th opened) are missing from the room; only the
    # slider may be reported: the reserved namespace is filtered out of the room by design.
    await call(bed, bed.testbed.set_faults, ["doc-skip-open:IntSliderModel", "doc-skip-open:every=4"])
    try:
        async with Room(bed, ["1"]) as room:
            conn = bed.testbed.room(room.nid).kernel.km.connection_file
            tap = KernelTap(conn)
            task = asyncio.create_task(tap.run())
            try:
                while tap.received == 0:  # the SUB socket sees only what is published after it joined
                    await room.run(0)
                await room.run("import ipywidgets as w\nfrom comm import create_comm\n"
                               "s = w.IntSlider(value=2)\n"
                               "dx = create_comm(target_name='nteract.dx.probe', data={})\ns")
                snap = await room.settle()
                await wait_until(lambda: len(tap.table.comms) == 4, "the tap to see the four comm_opens")
                evidence = liveness.KernelEvidence(
                    comms={cid: r.target_name for cid, r in tap.table.comms.items()}, complete=True)
                report = liveness.classify(snap, evidence)
            finally:
                tap.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await call(bed, bed.testbed.set_faults, [])
    (slider_id,) = [cid for cid, r in tap.table.comms.items() if r.model_name == "IntSliderModel"]
    (dx_id,) = [cid for cid, r in tap.table.comms.items() if r.target_name == "nteract.dx.probe"]
    assert report.missing_in_room == (slider_id,) and report.reserved == (dx_id,)
    bound = report.by_id()
    # the layout and style were written: the kernel's own view confirms them
    assert {c.comm_id for c in snap.comms} == set(tap.table.comms) - {slider_id, dx_id}
    for cid in set(tap.table.comms) - {slider_id, dx_id}:
        assert (bound[cid].liveness, bound[cid].evidence) == ("live-bound", "kernel_tap")


async def test_a_shutdown_request_leaves_this_daemon_nothing_to_replay(bed):
    async with Room(bed, ["import ipywidgets as w\ns = w.IntSlider(value=4)\ns"]) as room:
        await room.run(0)
        snap = await room.settle()
        assert liveness.classify(snap).counts()["live-bound"] == 3
        await call(bed, bed.testbed.shutdown_kernel, room.nid)
        snap = await room.session.wait_for(lambda s: s.kernel.status == "shutdown" and not s.comms, 30)
        report = liveness.classify(snap)
        assert report.comms == () and not report.kernel_alive


async def test_a_saved_notebook_whose_widget_state_differs_from_the_room(bed, tmp_path):
    dump_state = ("import json\nfrom ipywidgets import Widget\n"
                  "print(json.dumps(Widget.get_manager_state(drop_defaults=False)))")
    async with Room(bed, ["import ipywidgets as w\ns = w.IntSlider(value=3)\n"
                          "gone = w.Checkbox(value=True)\nimg = w.Image(value=b'\\x89PNG\\r\\n\\x1a\\nxyz')\ns"]) as room:
        await room.run(0)
        await room.settle()
        # what a notebook save stores: ipywidgets' own serialisation of the kernel's widgets
        manager_state = json.loads(await room.printed(dump_state))
        nb = {"cells": [], "metadata": {"widgets": {saved_state.WIDGET_STATE: manager_state}},
              "nbformat": 4, "nbformat_minor": 5}
        path = tmp_path / "saved.ipynb"
        path.write_text(json.dumps(nb))
        await room.run("s.value = 9\ngone.close()\nt = w.Text(value='new')")
        snap = await room.settle()
    saved = saved_state.read_saved_state(path)
    assert saved.present and saved.version == "2.0" and saved.problems == ()
    cmp = saved_state.compare_saved(saved, snap)
    by_id = {c.comm_id: c for c in cmp.comms}
    (slider,) = by_model(snap, "IntSliderModel")
    (text,) = by_model(snap, "TextModel")
    (img,) = by_model(snap, "ImageModel")
    gone = [mid for mid, mod in saved.models.items() if mod.model_name == "CheckboxModel"]
    assert by_id[slider.comm_id].status == "differs"
    assert [(k.key, k.saved, k.room) for k in by_id[slider.comm_id].keys] == [("value", 3, 9)]
    assert by_id[text.comm_id].status == "missing_in_saved"
    assert [by_id[g].status for g in gone] == ["missing_in_room"]
    # the saved image buffer cannot be checked against a v2 room (no bytes in its state)
    (ik,) = by_id[img.comm_id].keys
    assert (ik.key, ik.status, by_id[img.comm_id].status) == ("value", "unverifiable", "same")
    assert ik.saved == {"sha256": hashlib.sha256(b"\x89PNG\r\n\x1a\nxyz").hexdigest()}
    # every other saved widget (layouts, styles, the text's own) restores exactly what the room holds
    others = {c.status for c in cmp.comms if c.comm_id not in {slider.comm_id, text.comm_id, img.comm_id, *gone}}
    assert others <= {"same", "missing_in_saved"}
    assert base64.b64decode(manager_state["state"][img.comm_id]["buffers"][0]["data"]).startswith(b"\x89PNG")
