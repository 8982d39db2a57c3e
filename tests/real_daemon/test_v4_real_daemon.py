"""The inspector attached to the real runtimed 2.9.0 (protocol v4), read-only."""

from __future__ import annotations

import contextlib

import pytest
from waiting import wait_until

from inspector.divergence import DivergenceOptions
from inspector.errors import WouldLaunchKernel
from inspector.pool import PoolClient
from inspector.protocol import messages as m
from inspector.session import PeerSession, SessionConfig

SYNC_TYPES = {0x00, 0x05, 0x06, 0x09, 0x0A}


@contextlib.asynccontextmanager
async def attached(socket_path: str, notebook_id: str):
    s = PeerSession(SessionConfig(socket_path, notebook_id, divergence=DivergenceOptions()))
    async with s.running():
        await s.wait_settled(0.3, 30)
        yield s


async def until(pred, timeout: float, what: str):
    return await wait_until(pred, what, timeout, poll=0.05)


async def settled_divergences(s: PeerSession) -> tuple:
    """The divergences once the engine has nothing left to re-evaluate (past every settle window)."""
    await s.wait_settled(0.3, 20)
    await until(lambda: s.divergence.engine.next_deadline() is None, 10, "the divergence engine to settle")
    return s.snapshot().divergence


def slider_of(snap):
    (c,) = [c for c in snap.comms if c.model_name == "IntSliderModel"]
    return c


async def test_tree_matches_the_daemon(real_socket, widget_room):
    nb = widget_room.notebook_id
    async with PoolClient(real_socket, 4) as pool:
        state = await pool.request(m.InspectNotebook(notebook_id=nb))
    assert isinstance(state, m.NotebookState)
    async with attached(real_socket, nb) as s:
        snap = s.snapshot()
        assert snap.daemon.protocol_version == 4
        assert snap.daemon.actor_label.endswith("/inspector")
        assert snap.schema_version == 5
        # cells and their outputs agree with the daemon's own (non-joining) projection
        assert [c.id for c in snap.cells] == [c["id"] for c in state.cells]
        for cell in snap.cells:
            expected = (state.outputs_by_cell or {}).get(cell.id, [])
            assert [o.ref for o in cell.outputs] == [o["output_id"] for o in expected]
            for view, raw in zip(cell.outputs, expected, strict=True):
                for mime, ref in (raw.get("data") or {}).items():
                    if "inline" in ref and not mime.endswith("json"):
                        assert view.resolved[mime] == ref["inline"]
        # comms: topology order, state from the comms document, kernel provenance
        models = [c.model_name for c in snap.comms]
        assert models == ["LayoutModel", "SliderStyleModel", "IntSliderModel", "LayoutModel", "OutputModel"]
        assert [c.seq for c in snap.comms] == [0, 1, 2, 3, 4]
        slider = slider_of(snap)
        assert slider.state["value"] == 3 and slider.state["description"] == "n"
        assert slider.key_writers["value"].startswith("rt:kernel:")
        layout = snap.comms[0]
        assert slider.state["layout"] == f"IPY_MODEL_{layout.comm_id}"
        out = snap.comms[4]
        assert [o.resolved.get("text") for o in out.outputs] == ["captured\n"]
        assert out.state["outputs"][0]["output_id"] == out.outputs[0].ref
        assert snap.kernel.lifecycle == "Running" and snap.kernel.status == "idle"
        docs = {d.name: d for d in snap.documents}
        assert set(docs) == {"notebook", "runtime_state", "pool_state", "comms", "comments"}
        assert "uv" in docs["pool_state"].tree
        assert snap.divergence == ()  # check passes on a healthy room


async def test_slider_change_from_the_kernel_shows_up_live(real_socket, widget_room):
    async with attached(real_socket, widget_room.notebook_id) as s:
        before = slider_of(s.snapshot()).state["value"]
        target = 9 if before != 9 else 8
        await widget_room.acall(op="run", source=f"s.value = {target}")
        await until(lambda: slider_of(s.snapshot()).state["value"] == target, 20, f"value {target}")
        slider = slider_of(s.snapshot())
        assert slider.key_writers["value"].startswith("rt:kernel:")
        changed = [e for e in s.log.events() if e.kind == "doc_changed" and e.data.get("doc") == "comms"]
        assert changed, "the CommsDoc change is in the timeline"
        assert await settled_divergences(s) == ()


async def test_send_comm_divergence_is_reported_on_that_comm_and_key(real_socket, widget_room):
    async with attached(real_socket, widget_room.notebook_id) as s:
        slider = slider_of(s.snapshot())
        old = slider.state["value"]
        new = 5 if old != 5 else 6
        await widget_room.acall(op="send_comm", comm_id=slider.comm_id, state={"value": new})
        echo = await until(lambda: [e for e in s.log.events() if e.kind == "broadcast"
                                    and e.data["message"]["content"].get("comm_id") == slider.comm_id], 20,
                           "the echo_update broadcast")
        assert echo[0].data["message"]["content"]["data"]["method"] == "echo_update"

        def diverged():
            return [d for d in s.snapshot().divergence if d.status == "diverged"]

        (d,) = await until(diverged, 10, "a settled divergence")
        assert d.comm_id == slider.comm_id and d.kind == "state_mismatch" and d.moved == "kernel"
        assert d.model_name == "IntSliderModel"
        (k,) = d.keys
        assert (k.key, k.doc, k.feed) == ("value", old, new)
        assert slider_of(s.snapshot()).state["value"] == old  # the CommsDoc kept the old value
        # putting the kernel back in line with the document heals it (through the doc route)
        await widget_room.acall(op="run", source=f"s.value = {old + 1}")
        await until(lambda: not s.snapshot().divergence, 20, "the divergence to clear")


async def test_closing_a_widget_removes_it(real_socket, widget_room):
    async with attached(real_socket, widget_room.notebook_id) as s:
        n = len(s.snapshot().comms)
        await widget_room.acall(op="run", source="tmp = w.Button(description='x')")
        await until(lambda: any(c.model_name == "ButtonModel" for c in s.snapshot().comms), 20, "the button")
        (b,) = [c for c in s.snapshot().comms if c.model_name == "ButtonModel"]
        await widget_room.acall(op="run", source="tmp.close()")
        await until(lambda: all(c.comm_id != b.comm_id for c in s.snapshot().comms), 20, "the button to go")
        assert not [d for d in await settled_divergences(s) if d.comm_id == b.comm_id]
        snap = s.snapshot()
        assert len(snap.comms) >= n  # its style (ButtonStyle) and layout stay: only the widget closed


async def test_read_only_no_change_carries_the_inspector_actor(real_socket, widget_room):
    async with attached(real_socket, widget_room.notebook_id) as s:
        label = s.capabilities["actor_label"]
        out_types = {f.frame_type for f in s.log.frames() if f.direction == "out" and f.frame_type is not None}
        assert out_types <= SYNC_TYPES  # no request, no presence, no blob upload
        await widget_room.acall(op="run", source="s.value = 2")
        await until(lambda: slider_of(s.snapshot()).state["value"] == 2, 20, "value 2")
        await s.wait_settled(0.3, 10)
        for doc in s.snapshot().documents:
            assert label not in doc.actors, doc.name
            assert not any(a.endswith("/inspector") for a in doc.actors), doc.name


async def test_inactive_room_is_not_joined_without_permission(real_socket, inactive_room):
    async with PoolClient(real_socket, 4) as pool:
        rooms = await pool.list_rooms()
    inactive = [r for r in rooms if r.state == "inactive"]
    if not inactive:
        pytest.skip("no inactive room on this daemon right now")
    s = PeerSession(SessionConfig(real_socket, inactive[0].notebook_id, divergence=DivergenceOptions()))
    with pytest.raises(WouldLaunchKernel):
        await s.run()
    async with PoolClient(real_socket, 4) as pool:
        again = {r.notebook_id: r for r in await pool.list_rooms()}
    assert again[inactive[0].notebook_id].state == "inactive"
