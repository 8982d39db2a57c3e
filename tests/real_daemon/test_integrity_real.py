"""Widget integrity on the real runtimed 2.9.0: a box filled after display (its references
resolve, no finding), a child closed while its box lists it (a finding that stays), an `Image`
widget with PNG bytes (size, hash, media type through the blob server, a preview and a hex
view), a kernel shutdown (every comm becomes replay-only) and a notebook saved by a normal
client whose widget state then differs from the room.

The inspector session only reads; the room driver (the wheel's own client) runs the code,
shuts the kernel down and saves the file. Snapshots are taken while waiting, as the window
takes them at its refresh rate: the integrity tracker times references by them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest
from waiting import wait_until

from inspector.divergence import DivergenceOptions
from inspector.integrity import IntegrityOptions
from inspector.session import PeerSession, SessionConfig

from .conftest import RoomDriver

pytestmark = pytest.mark.real_daemon

PNG_SOURCE = '''
import struct, zlib
def make_png(w=12, h=8):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    rows = b"".join(b"\\x00" + b"".join(bytes((x * 20 % 256, y * 30 % 256, 160)) for x in range(w)) for y in range(h))
    return (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))
'''


def make_png() -> bytes:
    scope: dict = {}
    exec(PNG_SOURCE, scope)  # the very code the kernel runs: the same bytes
    return scope["make_png"]()


@pytest.fixture
def room(real_socket):
    drv = RoomDriver(real_socket)
    try:
        drv.notebook_id = drv.call(op="create")["notebook_id"]
        yield drv
    finally:
        drv.close()


def session(socket_path: str, notebook_id: str, saved: str | None = None) -> PeerSession:
    return PeerSession(SessionConfig(socket_path, notebook_id, divergence=DivergenceOptions(),
                                     integrity=IntegrityOptions(saved_path=saved)))


async def until(s: PeerSession, pred, what: str, timeout: float = 30.0):
    """Poll a fresh snapshot's integrity report until `pred(report, snapshot)` holds."""
    def check():
        snap = s.snapshot()
        return (snap.integrity, snap) if snap.integrity is not None and pred(snap.integrity, snap) else None
    return await wait_until(check, what, timeout, poll=0.1)


def model_id(snap, model: str, **state) -> str:
    (c,) = [c for c in snap.comms if c.model_name == model and isinstance(c.state, dict)
            and all(c.state.get(k) == v for k, v in state.items())]
    return c.comm_id


async def test_a_box_filled_after_display_resolves_without_a_finding(real_socket, room):
    s = session(real_socket, room.notebook_id)
    async with s.running():
        await s.wait_settled(0.3, 30)
        assert (await room.acall(op="run", source="import ipywidgets as w\nbox = w.HBox()\ndisplay(box)"))["success"]
        assert (await room.acall(op="run", source="box.children = [w.Button(description='late'), "
                                                   "w.IntSlider(value=4, description='late')]"))["success"]

        def filled(rep, snap):
            boxes = [c for c in snap.comms if c.model_name == "HBoxModel" and isinstance(c.state, dict)
                     and len(c.state.get("children") or []) == 2]
            if not boxes:
                return False
            refs = [r for r in rep.references.references_from(boxes[0].comm_id) if r.path.startswith("state/children")]
            return len(refs) == 2 and all(r.target_status == "ok" for r in refs)

        rep, snap = await until(s, filled, "the box's two children resolved")
        box = model_id(snap, "HBoxModel")
        started = time.monotonic()
        # past the settle window nothing about the box is a finding
        rep, snap = await until(s, lambda _r, _s: time.monotonic() - started > 2.5, "the settle window")
        assert [f for f in rep.references.findings if f.holder == box] == []
        assert all(r.target_status == "ok" for r in rep.references.references_from(box))
        assert {r.holder for r in rep.references.referenced_by(model_id(snap, "ButtonModel"))} == {box}
        assert not any("HBox" in w or box in w for w in rep.warnings())
        # each forward reference that was seen unresolved resolved inside the window
        assert all(r.within_settle for r in rep.references.resolved if r.holder == box)


async def test_a_child_closed_while_its_box_lists_it_is_a_finding_that_stays(real_socket, room):
    s = session(real_socket, room.notebook_id)
    async with s.running():
        await s.wait_settled(0.3, 30)
        src = ("import ipywidgets as w\nc = w.Button(description='gone')\nkeep = w.Label('kept')\n"
               "vbox = w.VBox([c, keep])\ndisplay(vbox)")
        assert (await room.acall(op="run", source=src))["success"]
        rep, snap = await until(s, lambda _r, sn: any(c.model_name == "VBoxModel" for c in sn.comms), "the box")
        vbox = model_id(snap, "VBoxModel")
        child = model_id(snap, "ButtonModel", description="gone")
        assert (await room.acall(op="run", source="c.close()"))["success"]

        def dangling(rep, _snap):
            return [f for f in rep.references.findings if f.holder == vbox and f.target == child]

        rep, snap = await until(s, dangling, "the closed child to become a finding")
        (f,) = dangling(rep, snap)
        assert f.kind == "dangling_state" and f.target_status == "missing" and f.unresolved_for_s > 2.0
        first = f.first_seen
        # it stays, with the same first-seen time, and the unresolved time moves on
        rep, snap = await until(s, lambda r, sn: dangling(r, sn) and dangling(r, sn)[0].unresolved_for_s
                                > f.unresolved_for_s + 1.0, "the finding to age")
        (g,) = dangling(rep, snap)
        assert g.first_seen == first
        assert any(child in w and "missing" in w or child in w for w in rep.warnings())
        # the kept child is fine
        keep = model_id(snap, "LabelModel")
        assert [r.target_status for r in rep.references.references_from(vbox) if r.target == keep] == ["ok"]


async def test_an_image_widget_shows_size_hash_media_type_and_a_preview(real_socket, room, qapp):
    png = make_png()
    digest = hashlib.sha256(png).hexdigest()
    s = session(real_socket, room.notebook_id)
    async with s.running():
        await s.wait_settled(0.3, 30)
        src = PNG_SOURCE + "\nimport ipywidgets as w\nimg = w.Image(value=make_png(), format='png')\ndisplay(img)"
        res = await room.acall(op="run", source=src)
        assert res["success"], res

        def resolved(rep, _snap):
            return [b for b in rep.buffers if b.path == ("value",) and b.size is not None]

        rep, snap = await until(s, resolved, "the image's bytes through the blob server")
        (b,) = resolved(rep, snap)
        img = model_id(snap, "ImageModel")
        assert b.comm_id == img and b.origin == "content_ref" and b.author == "kernel"
        assert (b.size, b.sha256, b.blob) == (len(png), digest, digest)
        assert (b.media_type, b.width, b.height, b.hash_matches, b.error) == ("image/png", 12, 8, True, None)
        assert b.declared_media_type == "application/octet-stream"  # what ipywidgets says of a buffer
        data = s.integrity.blob_bytes(digest)
        assert data == png
        # the window's Buffers tab on these facts: preview and hex view
        from inspector.ui.buffer_view import BufferView

        view = BufferView()
        view.blob_bytes = s.integrity.blob_bytes
        view.show_buffers(list(rep.buffers))
        assert view.model.index(0, 2).data() == "image/png 12×8" and view.model.index(0, 6).data() == "hash ok"
        pm = view.preview.pixmap()
        assert not pm.isNull() and pm.width() == 12 * 8  # a tiny image is shown 8x, not smoothed
        assert view.hex.toPlainText().startswith("00000000  89 50 4e 47 0d 0a 1a 0a")
        view.deleteLater()


async def test_a_kernel_shutdown_makes_every_comm_replay_only(real_socket, room):
    s = session(real_socket, room.notebook_id)
    async with s.running():
        await s.wait_settled(0.3, 30)
        assert (await room.acall(op="run", source="import ipywidgets as w\ns = w.IntSlider(value=2)\n"
                                                   "display(s)"))["success"]
        rep, snap = await until(s, lambda r, sn: any(c.model_name == "IntSliderModel" for c in sn.comms)
                                and all(c.liveness == "live-bound" for c in r.liveness.comms), "live-bound comms")
        n = len(rep.liveness.comms)
        assert n >= 3 and rep.liveness.kernel_alive
        await room.acall(op="stop_runtime")
        rep, snap = await until(s, lambda r, _sn: not r.liveness.kernel_alive
                                and len(r.liveness.comms) == n
                                and all(c.liveness == "replay-only" for c in r.liveness.comms),
                                "every comm replay-only after the shutdown")
        assert all(c.evidence == "kernel_status" for c in rep.liveness.comms)
        assert rep.liveness.kernel_status in ("shutdown", "not_started", "none", None) or \
            not rep.liveness.kernel_alive
        # the state is still there to replay: a frontend would render it, nothing answers it
        assert model_id(snap, "IntSliderModel", value=2)


async def test_a_saved_notebook_whose_widget_state_differs_from_the_room(real_socket, room, tmp_path):
    assert (await room.acall(op="run", source="import ipywidgets as w\ns = w.IntSlider(value=3, "
                                               "description='saved')\ndisplay(s)"))["success"]
    path = str(tmp_path / "saved.ipynb")
    saved_to = (await room.acall(op="save", path=path))["path"]
    assert Path(saved_to).resolve() == Path(path).resolve()
    nb = json.loads(Path(path).read_text())
    assert "application/vnd.jupyter.widget-state+json" in nb["metadata"]["widgets"]
    assert (await room.acall(op="run", source="s.value = 9\nnew = w.Button(description='after the save')\n"
                                               "display(new)"))["success"]
    s = session(real_socket, room.notebook_id, saved=path)
    async with s.running():
        await s.wait_settled(0.3, 30)

        def compared(rep, snap):
            if rep.saved is None or not any(c.model_name == "ButtonModel" for c in snap.comms):
                return False
            slider = next((c for c in rep.saved.comms if c.model_name == "IntSliderModel"), None)
            return slider is not None and slider.status == "differs"

        rep, snap = await until(s, compared, "the saved notebook compared with the room")
        slider = next(c for c in rep.saved.comms if c.model_name == "IntSliderModel")
        (value,) = [k for k in slider.keys if k.key == "value"]
        assert (value.saved, value.room, value.status) == (3, 9, "differs")
        button = model_id(snap, "ButtonModel", description="after the save")
        assert {c.comm_id: c.status for c in rep.saved.comms}[button] == "missing_in_saved"
        assert any(f"saved notebook {path}" in w and "differ from the room" in w for w in rep.warnings())
        # the window's compare table gets the file's values as one more view
        saved = s.integrity.saved_state()
        assert saved is not None and saved.models[slider.comm_id].state["value"] == 3
    # after the save, list_rooms names the room's file: compared with no option at all
    assert s.probe is not None
    named = s.probe.room(room.notebook_id)
    assert named is not None and Path(named.notebook_path or "").resolve() == Path(path).resolve()
    auto = session(real_socket, room.notebook_id)
    async with auto.running():
        await auto.wait_settled(0.3, 30)
        rep, _snap = await until(auto, lambda r, _sn: r.saved is not None, "the room's own file compared")
        assert Path(rep.saved.source).resolve() == Path(path).resolve() and rep.saved.differences


# -- the window on the same facts ------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop(qapp):
    from waiting import qt_loop

    yield from qt_loop(qapp)


def test_the_window_previews_a_real_image_buffer_and_jumps_along_references(qtbot, tmp_path, loop, real_socket,
                                                                             room):
    """Attached to the room like a user: the Image widget's value row, its Buffers tab with the
    bytes the blob server gave, then References from the image to its layout and back. Set
    RUNTIMED_INSPECTOR_SHOTS to keep the screenshot."""
    import os

    from PySide6.QtTest import QAbstractItemModelTester
    from PySide6.QtWidgets import QApplication

    from inspector.ui.main_window import InspectorWindow
    from inspector.ui.recent import RecentConnections

    win = InspectorWindow(recent=RecentConnections(tmp_path / "recent.json"))
    win.resize(1500, 900)
    qtbot.addWidget(win)
    win.show()
    for model in (win.model, win.proxy, win.detail.references.model, win.detail.buffers.model):
        QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    png = make_png()
    digest = hashlib.sha256(png).hexdigest()

    async def scenario() -> None:
        src = PNG_SOURCE + "\nimport ipywidgets as w\nimg = w.Image(value=make_png(), format='png')\ndisplay(img)"
        assert (await room.acall(op="run", source=src))["success"]
        win.attach(real_socket, room.notebook_id)
        await wait_until(lambda: win.state == "live", "the live state", 30)

        def value_row():
            snap = win.snapshot
            img = [c for c in snap.comms if c.model_name == "ImageModel"] if snap is not None else []
            node = win.model.node_at(f"comms/{img[0].comm_id}/state/value") if img else None
            return node if node is not None and node.cols[1].startswith("blob ") and "image/png" in node.cols[1] \
                else None

        node = await wait_until(value_row, "the image's value row resolved", 30)
        img_id = node.path.split("/")[1]
        assert node.cols[1].startswith(f"blob {len(png)} B image/png 12×8 {digest[:12]}")
        assert win.select_path(node.path)
        bufs = win.detail.buffers
        assert win.detail.tabs.currentWidget() is bufs
        await wait_until(lambda: not bufs.preview.pixmap().isNull(), "the preview", 10)
        assert bufs.hex.toPlainText().startswith("00000000  89 50 4e 47")
        assert bufs.model.index(0, 6).data() == "hash ok"
        QApplication.processEvents()
        shots = os.environ.get("RUNTIMED_INSPECTOR_SHOTS")
        if shots:
            assert win.grab().save(os.path.join(shots, "integrity-buffer-real.png"))
        # from the image to its layout and back
        assert win.select_path(f"comms/{img_id}")
        refs = win.detail.references
        row = next(i for i, r in enumerate(refs.model.rows) if r.path == "state/layout")
        layout_path = refs.model.rows[row].nav
        assert refs.follow(row) and win.current_node().path == layout_path
        assert [r.direction for r in refs.model.rows] == ["referenced by"]
        refs.go_back()
        assert win.current_node().path == f"comms/{img_id}"

    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), 90))
    finally:
        loop.run_until_complete(win.shutdown())
