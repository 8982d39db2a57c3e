"""Integrity through the session core, on the traffic captured from the real runtimed 2.9.0:
the declared option fills every snapshot's `integrity` block (the CLI prints it, the window
shows it), the core wakes up when a forward reference outstays the settle window although
no frame arrives, and the reserved `nteract.dx.*` kernel comms are not missing from the room."""

from __future__ import annotations

import json
from pathlib import Path

from test_v4_session_replay import JOINED_AT, LAYOUT, ROOM, SLIDER, FileDriver, interactive_status, join, s2c

from inspector.divergence import DivergenceOptions, SettleConfig
from inspector.integrity import IntegrityOptions, IntegrityReport
from inspector.protocol.framing import FrameType
from inspector.session_core import SessionConfig, SessionCore

FIX = Path(__file__).resolve().parent / "fixtures" / "real-runtimed-2.9.0"


def make_core(kernel_connection: str | None = None, saved: str | None = None) -> SessionCore:
    return SessionCore(SessionConfig("replay.sock", ROOM, resolve_blobs=False, keep_frame_bodies=False,
                                     divergence=DivergenceOptions(SettleConfig(), kernel_connection),
                                     integrity=IntegrityOptions(saved_path=saved)))


def test_the_snapshot_json_carries_the_integrity_block_of_the_joined_room() -> None:
    core = make_core()
    drv, rest = join(core)
    drv.feed(interactive_status(), JOINED_AT)
    snap = core.snapshot()
    rep = snap.integrity
    assert isinstance(rep, IntegrityReport)
    out = json.loads(snap.encode())["integrity"]
    assert {r["target"] for r in out["references"]["references"]} >= {SLIDER, LAYOUT}
    assert all(r["target_status"] == "ok" for r in out["references"]["references"])
    assert {c["comm_id"]: c["liveness"] for c in out["liveness"]["comms"]}[SLIDER] == "live-bound"
    assert {c["name"]: c["status"] for c in out["pointers"]["checks"]}["runtime_state_doc_id"] == "ok"
    assert out["saved"] is None and rep.warnings() == ()
    # the same block in the CLI's JSON: one snapshot type
    assert json.loads(json.dumps(snap.to_json(), default=str))["integrity"] == out


def test_a_view_whose_state_never_arrives_becomes_a_finding_without_another_frame() -> None:
    # the join without the comms document: the cell shows the slider, its state never lands
    core = make_core()
    drv = FileDriver(core)
    frames = list(s2c(5))
    core.begin(4, t=frames[0][1])
    core.bootstrap(frames[0][0], frames[0][1])
    last = 0.0
    for payload, t, f in frames[1:]:
        if t >= JOINED_AT:
            break
        if f.get("frame_type") != FrameType.COMMS_SYNC:
            drv.feed(payload, t)
            last = t
    first = core.snapshot().integrity
    (view,) = [r for r in first.references.references if r.kind == "view"]
    assert (view.target, view.target_status) == (SLIDER, "no_state")
    assert first.references.findings == ()  # inside the settle window: a forward reference
    due = core.next_deadline()
    assert due is not None and last < due <= last + 2.1
    drv.until(last + 3.0)  # nothing arrives; the core's own deadline makes the snapshot stale
    late = core.snapshot().integrity
    kinds = {(f.kind, f.target) for f in late.references.findings}
    assert ("dangling_view", SLIDER) in kinds
    (f,) = [f for f in late.references.findings if f.kind == "dangling_view"]
    assert 2.0 <= f.unresolved_for_s <= 3.0
    assert any("orphaned" in w for w in late.warnings())  # topology without state, past the window


def test_reserved_nteract_dx_kernel_comms_are_not_missing_from_the_room() -> None:
    core = make_core(kernel_connection="kernel.json")
    drv, _rest = join(core)
    drv.feed(interactive_status(), JOINED_AT)
    t = JOINED_AT + 0.1
    core.kernel_comm("comm_open", {"comm_id": "d" * 32, "target_name": "nteract.dx.blob",
                                   "data": {"state": {"x": 1}}}, [], t)
    core.kernel_comm("comm_msg", {"comm_id": "d" * 32, "data": {"method": "update", "state": {"x": 2}}}, [], t)
    core.kernel_comm("comm_open", {"comm_id": "k" * 32, "target_name": "jupyter.widget",
                                   "data": {"state": {"_model_name": "IntSliderModel", "value": 1}}}, [], t)
    drv.until(t + 2.5)  # a missing comm is reported after 2 s of quiet (docs/verdicts.md)
    found = {(d.comm_id, d.kind) for d in core.snapshot().divergence if d.status != "pending"}
    assert ("k" * 32, "missing_in_doc") in found
    assert not any(cid == "d" * 32 for cid, _kind in found)


def test_a_saved_notebook_given_by_path_is_compared_and_reread_when_it_changes(tmp_path: Path) -> None:
    nb = json.loads((FIX / "widget-demo.saved.ipynb").read_text())
    path = tmp_path / "demo.ipynb"
    path.write_text(json.dumps(nb))
    core = make_core(saved=str(path))
    drv, _rest = join(core)
    drv.feed(interactive_status(), JOINED_AT)
    first = core.snapshot().integrity
    assert first.saved is not None and first.saved.source == str(path)
    before = {c.comm_id: c.status for c in first.saved.comms}
    assert before[SLIDER] in ("same", "differs")
    # the file changes on disk (a save): the next snapshot reads it again
    state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    state[SLIDER]["state"]["value"] = 99
    path.write_text(json.dumps(nb))
    core.notify({"test"})
    again = core.snapshot().integrity
    (slider,) = [c for c in again.saved.comms if c.comm_id == SLIDER]
    assert slider.status == "differs" and any(k.key == "value" and k.saved == 99 for k in slider.keys)
    assert any("differ from the room" in w for w in again.warnings())
    # the file goes away: one line, no traceback, the rest of the report unchanged
    path.unlink()
    core.notify({"test"})
    gone = core.snapshot().integrity
    assert gone.saved is None and gone.saved_error and "No such file" in gone.saved_error


def test_a_box_with_two_children_references_both_and_a_link_pair_keeps_its_trait() -> None:
    from inspector.references import state_references

    a, b = "a" * 32, "b" * 32
    # seen on runtimed 2.9.0: HBox(children=[Button, IntSlider]) was once read as a link pair
    assert state_references({"children": [f"IPY_MODEL_{a}", f"IPY_MODEL_{b}"]}, "state") == [
        ("state/children/0", "state", a, None), ("state/children/1", "state", b, None)]
    assert state_references({"source": [f"IPY_MODEL_{a}", "value"]}, "state") == [
        ("state/source", "link", a, "value")]
