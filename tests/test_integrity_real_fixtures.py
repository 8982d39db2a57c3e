"""Widget integrity offline, on documents and the saved notebook captured from the real
runtimed 2.9.0 (`tests/fixtures/real-runtimed-2.9.0/`, byte-identical copies of the shared
capture): conn 2 is the room after `shutdown_kernel`, conn 5 the same room while it ran."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import msgspec
import pytest

from inspector import doc_pointers, liveness, references, saved_state, widget_buffers
from inspector.errors import EXIT_USAGE
from inspector.protocol import messages as m
from inspector.snapshot import DaemonView, Snapshot
from inspector.v4.room import load_room

FIX = Path(__file__).resolve().parent / "fixtures" / "real-runtimed-2.9.0"
NB = "d900ce5a-9534-4c83-942f-30ab009399e3"
SLIDER, LAYOUT, STYLE = "ef5b619c16ab471cba317b2a88731725", "11a1b029c01949b48e91e4cb01f036d8", \
    "b41b5123ebe64bb6ae94127866725743"
SLIDER_CELL = "cell-2104aac1-f105-4e1f-b2e3-42e0519326e5"
CAPS = {"comments_doc_id": f"comments:local-room:{NB}"}


def room_snapshot(conn: int, docs: tuple[str, ...] = ("notebook", "runtime_state", "comms", "comments"),
                  taken_at: float = 1000.0) -> Snapshot:
    room = load_room({n: (FIX / "docs" / f"conn{conn}-{n}.automerge").read_bytes() for n in docs}, NB)
    return msgspec.structs.replace(room.snapshot(DaemonView(socket="fixture")), taken_at=taken_at)


@pytest.fixture(scope="module")
def shut() -> Snapshot:
    return room_snapshot(2)


@pytest.fixture(scope="module")
def running() -> Snapshot:
    return room_snapshot(5)


# --------------------------------------------------------------------------- references


def test_reference_graph_of_the_real_room_both_ways(running):
    g = references.build_graph(running)
    assert sorted((r.holder, r.path, r.kind, r.target) for r in g.references) == [
        (f"cell:{SLIDER_CELL}", "outputs/0", "view", SLIDER),
        (SLIDER, "state/layout", "state", LAYOUT),
        (SLIDER, "state/style", "state", STYLE),
    ]
    assert all(r.target_status == "ok" for r in g.references) and g.findings == ()
    assert [r.holder for r in g.referenced_by(SLIDER)] == [f"cell:{SLIDER_CELL}"]
    assert [r.target for r in g.references_from(SLIDER)] == [LAYOUT, STYLE]
    assert g.referenced_by(LAYOUT)[0].holder == SLIDER
    out = json.loads(msgspec.json.encode(g))
    assert out["incoming"][LAYOUT] == [1] and out["outgoing"][SLIDER] == [1, 2]


def test_topology_before_state_is_a_forward_reference_then_a_finding_if_state_never_comes():
    # The runtime state (0x05) synced, the comms document (0x09) not yet: the order a joining
    # peer sees. The cell's view names a model with topology but no state.
    half = room_snapshot(5, ("notebook", "runtime_state", "comments"), taken_at=1000.0)
    tracker = references.ReferenceTracker(settle_s=2.0)
    g = tracker.update(half)
    (view,) = g.references
    assert (view.target, view.target_status, view.resolved) == (SLIDER, "no_state", False)
    assert g.findings == () and view.first_seen == 1000.0
    # the comms document arrives within the window: resolved, normal, no finding
    g = tracker.update(room_snapshot(5, taken_at=1000.8))
    assert g.findings == () and g.unresolved == ()
    (res,) = g.resolved
    assert res.within_settle and res.unresolved_for_s == pytest.approx(0.8)
    # never arriving: a finding past the window, kept while it lasts
    t2 = references.ReferenceTracker(settle_s=2.0)
    t2.update(half)
    (finding,) = t2.update(msgspec.structs.replace(half, taken_at=1003.5)).findings
    assert (finding.kind, finding.target_status, finding.unresolved_for_s) == ("dangling_view", "no_state", 3.5)
    assert "no state in the comms document" in finding.detail


def test_capture_msg_id_is_checked_against_the_executions(running):
    # No Output widget was captured in the fixture run: the slider is turned into one here,
    # with the v4 topology's capture_msg_id naming a real execution, then an unknown one.
    execution = next(c.execution_id for c in running.cells if c.id == SLIDER_CELL)
    out = msgspec.structs.replace(running.comms[2], model_name="OutputModel", capture_msg_id=execution,
                                  state={"_model_name": "OutputModel", "msg_id": execution, "outputs": []})
    snap = msgspec.structs.replace(running, comms=(*running.comms[:2], out))
    (cap,) = [r for r in references.build_graph(snap).references if r.kind == "capture"]
    assert (cap.path, cap.target, cap.target_status) == ("capture_msg_id", execution, "ok")
    stale = msgspec.structs.replace(out, capture_msg_id="0" * 8)
    g = references.build_graph(msgspec.structs.replace(snap, comms=(*running.comms[:2], stale)),
                               first_seen={(SLIDER, "capture_msg_id", "0" * 8): 990.0})
    assert [(f.kind, f.target) for f in g.findings] == [("unknown_execution", "0" * 8)]


def test_link_pairs_keep_the_trait_and_nested_references_are_found():
    state = {"source": ["IPY_MODEL_a", "value"], "target": ["IPY_MODEL_b", "max"],
             "children": ["IPY_MODEL_c", {"deep": ["x", "IPY_MODEL_d"]}], "description": "IPY_MODEL_"}
    assert sorted(references.state_references(state)) == [
        ("children/0", "state", "c", None), ("children/1/deep/1", "state", "d", None),
        ("source", "link", "a", "value"), ("target", "link", "b", "max")]


# --------------------------------------------------------------------------- liveness


def test_liveness_running_is_live_bound_and_after_shutdown_replay_only(running, shut):
    live = liveness.classify(running)
    assert live.counts() == {"live-bound": 3, "replay-only": 0, "orphaned": 0, "not-yet-loaded": 0}
    assert {c.evidence for c in live.comms} == {"kernel_running"}
    # runtimed 2.9.0 keeps both documents' comms after shutdown_kernel: state nothing answers
    assert shut.kernel.lifecycle == "Shutdown" and len(shut.comms) == 3
    gone = liveness.classify(shut)
    assert gone.counts()["replay-only"] == 3 and {c.reason for c in gone.comms} == {"kernel shutdown"}
    # a kernel tap that saw the kernel from its start and lacks a comm: replay-only though running
    ev = liveness.KernelEvidence(comms={SLIDER: "jupyter.widget", LAYOUT: "jupyter.widget"}, complete=True)
    got = liveness.classify(running, ev).by_id()
    assert got[SLIDER].liveness == "live-bound" and got[SLIDER].evidence == "kernel_tap"
    assert got[STYLE].liveness == "replay-only" and got[STYLE].reason == "the kernel does not know this comm"


def test_half_loaded_rooms_not_yet_loaded_then_orphaned():
    topo_only = room_snapshot(5, ("notebook", "runtime_state", "comments"), taken_at=1000.0)
    tracker = liveness.LivenessTracker(window_s=2.0)
    assert tracker.update(topo_only).counts()["not-yet-loaded"] == 3
    later = tracker.update(msgspec.structs.replace(topo_only, taken_at=1002.5))
    assert later.counts()["orphaned"] == 3
    assert {c.reason for c in later.comms} == {"topology without state for 2.5 s"}
    state_only = liveness.classify(room_snapshot(5, ("notebook", "comms", "comments")))
    assert state_only.counts()["orphaned"] == 3
    assert all(c.provisional and not c.has_topology and c.has_state for c in state_only.comms)


def test_reserved_namespace_is_not_missing(running):
    ev = liveness.KernelEvidence(comms={SLIDER: "jupyter.widget", "dx1": "nteract.dx.blob",
                                        "w9": "jupyter.widget"})
    r = liveness.classify(running, ev)
    assert r.missing_in_room == ("w9",) and r.reserved == ("dx1",)


# --------------------------------------------------------------------------- saved notebook


def test_saved_notebook_restores_what_the_comms_document_holds(shut, running):
    saved = saved_state.read_saved_state(FIX / "widget-demo.saved.ipynb")
    assert saved.present and saved.version == "2.0" and set(saved.models) == {SLIDER, LAYOUT, STYLE}
    assert saved.models[SLIDER].model_name == "IntSliderModel"
    assert [(v.cell_id, v.model_id) for v in saved.views] == [(SLIDER_CELL, SLIDER)] and not saved.unrestorable_views
    for snap in (shut, running):
        cmp = saved_state.compare_saved(saved, snap)
        assert {c.comm_id: c.status for c in cmp.comms} == dict.fromkeys((LAYOUT, STYLE, SLIDER), "same")
    # ...which is 7, while the kernel's last answer (the saved notebook's last cell) was 5:
    # the send_comm update reached the kernel but not the comms document (runtimed-v4 §15 I5)
    nb = json.loads((FIX / "widget-demo.saved.ipynb").read_text())
    assert saved.models[SLIDER].state["value"] == 7
    assert nb["cells"][-1]["outputs"][0]["data"]["text/plain"] == ["5"]


def test_saved_state_differs_per_key_and_per_comm(running):
    nb = json.loads((FIX / "widget-demo.saved.ipynb").read_text())
    st = nb["metadata"]["widgets"][saved_state.WIDGET_STATE]["state"]
    st[SLIDER]["state"]["value"] = 2
    del st[SLIDER]["state"]["description"]
    del st[STYLE]
    st["feedface"] = {"model_name": "ButtonModel", "model_module": "@jupyter-widgets/controls", "state": {}}
    saved = saved_state.read_saved_state(nb)
    cmp = saved_state.compare_saved(saved, running)
    by = {c.comm_id: c for c in cmp.comms}
    assert [(k.key, k.status, k.saved, k.room) for k in by[SLIDER].keys] == [
        ("description", "missing_in_saved", None, "n"), ("value", "differs", 2, 7)]
    assert by[STYLE].status == "missing_in_saved" and by["feedface"].status == "missing_in_room"
    assert by[LAYOUT].status == "same"
    assert len(cmp.differences) == 3
    del st[SLIDER]  # the saved slider view would then render "model not found" on reopening
    (lost,) = saved_state.read_saved_state(nb).unrestorable_views
    assert (lost.cell_id, lost.output_index, lost.model_id) == (SLIDER_CELL, 0, SLIDER)


def test_saved_buffers_compare_by_hash_with_room_blob_refs(running):
    data = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
    digest = hashlib.sha256(data).hexdigest()
    nb = {"metadata": {"widgets": {saved_state.WIDGET_STATE: {"version_major": 2, "version_minor": 0, "state": {
        SLIDER: {"model_name": "IntSliderModel", "state": {**running.comms[2].state},
                 "buffers": [{"path": ["value"], "encoding": "base64", "data": base64.b64encode(data).decode()}]}}}}}}
    del nb["metadata"]["widgets"][saved_state.WIDGET_STATE]["state"][SLIDER]["state"]["value"]
    ref = {"blob": digest, "media_type": "application/octet-stream", "size": len(data)}
    room = msgspec.structs.replace(running, comms=(msgspec.structs.replace(
        running.comms[2], state={**running.comms[2].state, "value": ref}),))
    saved = saved_state.read_saved_state(nb)
    assert saved.models[SLIDER].buffers == {("value",): digest}
    (same,) = saved_state.compare_saved(saved, room).comms
    assert same.status == "same"
    other = msgspec.structs.replace(room, comms=(msgspec.structs.replace(
        room.comms[0], state={**room.comms[0].state, "value": {**ref, "blob": "ab" * 32}}),))
    (diff,) = saved_state.compare_saved(saved, other).comms
    assert diff.status == "differs" and [k.key for k in diff.keys] == ["value"]


@pytest.mark.parametrize("content,message", [
    (b"{not json", "is not JSON"),
    (b"[1, 2]", "is not a JSON object"),
    (b"\xff\xfe", "is not JSON"),
])
def test_unreadable_saved_notebooks_are_one_line_errors(tmp_path, content, message):
    p = tmp_path / "bad.ipynb"
    p.write_bytes(content)
    with pytest.raises(saved_state.SavedStateError) as exc:
        saved_state.read_saved_state(p)
    assert message in str(exc.value) and "\n" not in str(exc.value) and exc.value.exit_code == EXIT_USAGE
    with pytest.raises(saved_state.SavedStateError, match="cannot read saved notebook"):
        saved_state.read_saved_state(tmp_path / "missing.ipynb")


def test_malformed_widget_state_is_tolerated_and_named(running):
    assert not saved_state.read_saved_state({"metadata": {}}).present
    assert saved_state.read_saved_state({"metadata": {"widgets": {saved_state.WIDGET_STATE: 3}}}).problems == (
        f"{saved_state.WIDGET_STATE} is not an object",)
    odd = saved_state.read_saved_state({"metadata": {"widgets": {saved_state.WIDGET_STATE: {"state": {
        "a": 1, "b": {"state": "x"}, "c": {"state": {}, "buffers": [{"path": ["v"], "data": "***"}, 5]}}}}}})
    assert odd.problems == ("model a: entry is not an object", "model b: `state` is not an object",
                            "model c: buffer 0 is not valid base64", "model c: buffer 1 lacks path or data")
    assert set(odd.models) == {"b", "c"}
    cmp = saved_state.compare_saved(odd, running)
    assert cmp.problems == odd.problems and {c.status for c in cmp.comms} == {"missing_in_saved", "missing_in_room"}


# --------------------------------------------------------------------------- document pointers


def test_document_pointers_of_the_real_room(running):
    report = doc_pointers.check_snapshot_pointers(running, NB, CAPS)
    assert report.ok and [(c.name, c.status) for c in report.checks] == [
        ("notebook_id", "ok"), ("runtime_state_doc_id", "ok"), ("comms_doc_id", "derived"), ("comments_doc_id", "ok")]


def test_document_pointer_mismatches_and_missing_pointers(running):
    other = "1e78ee9b-e4ae-41ae-953c-b280ca7993d9"
    wrong = doc_pointers.check_snapshot_pointers(running, other, {"comments_doc_id": f"comments:local-room:{other}"})
    assert {c.name: c.status for c in wrong.findings} == {
        "notebook_id": "mismatch", "comms_doc_id": "mismatch", "comments_doc_id": "mismatch"}
    root = {k: v for k, v in running.extra_root.items() if k not in ("runtime_state_doc_id", "comms_doc_id")}
    bare = doc_pointers.check_doc_pointers(NB, {**root, "notebook_id": NB}, {"runtime_state_doc_id": f"runtime:{NB}"},
                                           schema_version=5)
    assert [(c.name, c.status) for c in bare.findings] == [("runtime_state_doc_id", "missing"),
                                                            ("comms_doc_id", "missing")]
    swapped = doc_pointers.check_doc_pointers(NB, {**running.extra_root, "notebook_id": NB},
                                              {"runtime_state_doc_id": f"runtime:{other}"}, schema_version=5)
    (bad,) = swapped.findings
    assert (bad.name, bad.pointer, bad.joined) == ("runtime_state_doc_id", f"runtime:{NB}", f"runtime:{other}")
    v2 = doc_pointers.check_doc_pointers(NB, {"notebook_id": NB}, None, schema_version=2)
    assert v2.ok and {c.status for c in v2.checks[1:]} == {"not_applicable"}


# --------------------------------------------------------------------------- bytes and broadcasts


@pytest.mark.parametrize("data,mt", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
    (b"GIF89a\x02\x00\x03\x00", "image/gif"),
    (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
    (b"\xef\xbb\xbf  <svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
    (b"<?xml version='1.0'?>\n<svg/>", "image/svg+xml"),
    (b"<?xml version='1.0'?><html/>", None),
    (b"hello", None),
    (b"", None),
])
def test_media_types_are_sniffed_from_magic_bytes(data, mt):
    assert widget_buffers.sniff_media_type(data) == mt


def test_hex_dump_is_bounded():
    data = bytes(range(40))
    lines = widget_buffers.hex_dump(data, limit=32).splitlines()
    assert lines[0].startswith("00000000  00 01 02") and lines[1].startswith("00000010  10 11")
    assert lines[-1] == "… 8 more bytes" and len(lines) == 3
    assert widget_buffers.hex_dump(data, offset=38).splitlines() == ["00000026  " + "26 27".ljust(47) + "  &'"]
    assert widget_buffers.hex_dump(data, offset=100) == ""
    assert widget_buffers.hex_dump(data, limit=0) == "… 40 more bytes"


def test_content_refs_in_state_kernel_and_frontend_written(running):
    s = running.comms[2]
    state = {**s.state, "value": {"blob": "ab" * 32, "size": 3, "media_type": "application/octet-stream"},
             "_esm": {"blob": "cd" * 32, "size": 2048, "media_type": "text/javascript"},
             "legacy": {"$blob": "ef" * 32}, "notaref": {"blob": "x", "size": 1, "media_type": "y", "extra": 1}}
    comm = msgspec.structs.replace(s, state=state, key_writers={**s.key_writers, "value": "local:root/desktop:b4d1",
                                                                "_esm": "rt:kernel:6af1882e"})
    refs = {r.path: r for r in widget_buffers.find_buffer_refs(msgspec.structs.replace(running, comms=(comm,)))}
    assert set(refs) == {("value",), ("_esm",), ("legacy",)}
    assert (refs[("value",)].author, refs[("value",)].writer) == ("frontend", "local:root/desktop:b4d1")
    assert (refs[("_esm",)].author, refs[("_esm",)].declared_media_type) == ("kernel", "text/javascript")
    assert refs[("legacy",)].origin == "placeholder"
    assert widget_buffers.find_buffer_refs(running) == ()


BOKEH = {"event": "bokeh_session_patch", "patch": {
    "session_id": "session-1", "transaction_id": "tx-1", "base_revision": 4, "revision": 5,
    "client_patch": {"patch": {"events": [{"kind": "ModelChanged"}]},
                     "buffers": [{"id": "buffer-1", "blob": "abc123", "size": 3, "media_type": "application/octet-stream"}]},
    "checkpoint": {"session_id": "session-1", "revision": 5, "document": {"version": "3.9.1", "roots": []},
                   "buffers": []}}}


def test_bokeh_session_patch_is_decoded_and_not_a_comm():
    # the shape of upstream's own round-trip test (protocol.rs, bokeh_patch_broadcast_round_trip_...)
    bc = m.decode_broadcast(json.dumps(BOKEH).encode())
    assert isinstance(bc, m.BokehSessionPatch) and not isinstance(bc, m.Comm)
    ev = bc.patch
    assert (ev.session_id, ev.base_revision, ev.revision) == ("session-1", 4, 5)
    assert ev.client_patch is not None and ev.client_patch.buffers[0].blob == "abc123"
    assert ev.client_patch.buffers[0].media_type == "application/octet-stream"
    assert ev.summary() == "bokeh session session-1 r4→r5 (client patch, checkpoint, 1 buffer(s))"
    assert m.to_builtins(bc)["patch"]["checkpoint"]["document"] == {"version": "3.9.1", "roots": []}
    with pytest.raises(m.MessageError, match="malformed event='bokeh_session_patch'"):
        m.decode_broadcast(json.dumps({"event": "bokeh_session_patch", "patch": {"session_id": 1}}).encode())


def test_a_bokeh_patch_in_the_session_is_logged_by_its_summary_and_feeds_no_comm_view():
    from inspector import events as ev
    from inspector.divergence import DivergenceOptions
    from inspector.protocol.framing import FrameType
    from inspector.session_core import SessionConfig, SessionCore

    core = SessionCore(SessionConfig("/nowhere.sock", "nb", divergence=DivergenceOptions()))
    core.begin(4, t=0.0)
    core.receive(bytes([FrameType.BROADCAST]) + json.dumps(BOKEH).encode(), 1.0)
    (logged,) = [e for e in core.log.events() if e.kind == ev.BROADCAST]
    assert logged.summary == "bokeh session session-1 r4→r5 (client patch, checkpoint, 1 buffer(s))"
    assert logged.data["known"] is True and logged.target is None
    assert core.snapshot().comms == ()
    views = core.divergence.views
    assert not any(src.comms for src in (views.topology, views.state, views.echo, views.kernel))


def test_one_report_per_snapshot_for_the_json_and_check(shut):
    from inspector.integrity import IntegrityTracker

    saved = saved_state.read_saved_state(FIX / "widget-demo.saved.ipynb")
    half = room_snapshot(2, ("notebook", "runtime_state", "comments"), taken_at=1000.0)
    tracker = IntegrityTracker(settle_s=2.0, window_s=2.0)
    first = tracker.update(half, saved=saved, capabilities=CAPS)
    assert first.warnings() == ()  # topology before state: normal, for now
    late = tracker.update(msgspec.structs.replace(half, taken_at=1004.0), saved=saved, capabilities=CAPS)
    warnings = late.warnings()
    assert any("which has topology but no state in the comms document, for 4.0 s" in w for w in warnings)
    assert sum("is orphaned: topology without state" in w for w in warnings) == 3
    assert not any("saved notebook" in w for w in warnings)  # no room state to compare with: liveness says why
    assert {c.status for c in late.saved.comms} == {"no_room_state"}
    full = tracker.update(msgspec.structs.replace(shut, taken_at=1004.5), saved=saved, capabilities=CAPS)
    assert full.warnings() == () and full.liveness.counts()["replay-only"] == 3
    out = json.loads(msgspec.json.encode(full))
    assert set(out) == {"references", "liveness", "buffers", "pointers", "saved", "saved_views", "saved_error",
                        "taken_at"}
    assert out["saved"]["comms"][0]["status"] == "same"


def test_trackers_reread_a_comm_whose_view_changed_and_only_that_one(running):
    tracker = references.ReferenceTracker(settle_s=1.0)
    assert tracker.update(running).findings == ()
    slider = running.comms[2]
    moved = msgspec.structs.replace(slider, state={**slider.state, "layout": "IPY_MODEL_feed"})
    snap = msgspec.structs.replace(running, comms=(*running.comms[:2], moved))
    tracker.update(snap)
    (f,) = tracker.update(msgspec.structs.replace(snap, taken_at=running.taken_at + 1.5)).findings
    assert (f.holder, f.path, f.target, f.unresolved_for_s) == (SLIDER, "state/layout", "feed", 1.5)
    cache: dict = {}
    assert widget_buffers.find_buffer_refs(snap, cache) == ()
    ref = {"blob": "ab" * 32, "size": 1, "media_type": "application/octet-stream"}
    with_blob = msgspec.structs.replace(snap, comms=(*snap.comms[:2], msgspec.structs.replace(
        moved, state={**moved.state, "value": ref})))
    assert [r.path for r in widget_buffers.find_buffer_refs(with_blob, cache)] == [("value",)]
    assert set(cache) == {SLIDER, LAYOUT, STYLE}


def test_real_traffic_a_forward_reference_resolves_within_the_settle_window():
    """Conn 2 of the capture frame by frame (each prefix replayed at its capture time): the
    runtime-state frame brings the slider's topology and the cell's widget view before the
    comms-document frame brings its state. A forward reference, resolved in milliseconds."""
    from inspector.v4.replay import replay

    lines = [ln for ln in (FIX / "frames.jsonl").read_text().splitlines() if json.loads(ln)["conn"] == 2]
    refs, live = references.ReferenceTracker(), liveness.LivenessTracker()
    seen: list[tuple[float, tuple[str, ...], dict[str, int]]] = []
    for k, line in enumerate(lines, 1):
        rec = json.loads(line)
        if rec["dir"] != "s2c" or rec.get("frame_type") not in (0x00, 0x05, 0x09):
            continue
        snap = msgspec.structs.replace(replay(lines[:k])[2].room.snapshot(DaemonView(socket="fixture")),
                                       taken_at=rec["t"])
        g, lv = refs.update(snap), live.update(snap)
        assert g.findings == ()
        seen.append((rec["t"], tuple(r.target_status for r in g.references), lv.counts()))
    statuses = [s for _, s, _ in seen]
    first = statuses.index(("no_state",))  # topology (0x05) before state (0x09)
    assert statuses[first + 1] == ("ok", "ok", "ok")
    assert seen[first][2]["not-yet-loaded"] == 3 and seen[first + 1][2]["live-bound"] == 3
    assert seen[-1][2]["replay-only"] == 3  # shutdown_kernel at the end of the scenario
    (res,) = refs.resolutions
    assert (res.holder, res.target) == (f"cell:{SLIDER_CELL}", SLIDER)
    assert res.within_settle and 0 < res.unresolved_for_s < 0.1


def test_buffers_without_paths_keep_their_index():
    # a seed-era comm_sync snapshot carries open-time buffers without their paths
    gif = b"GIF89a\x04\x00\x02\x00" + b"\x00" * 6
    a, b = widget_buffers.from_comm_message("c1", {}, [gif, b"\x00\x01"])
    assert (a.path, a.media_type, a.width, a.height, a.size) == (("<buffer 0>",), "image/gif", 4, 2, 16)
    assert (b.path, b.media_type, b.hash_matches) == (("<buffer 1>",), None, None)
    (c,) = widget_buffers.from_comm_message("c2", {"data": {"buffer_paths": [["x", 3]], "state": {}}}, [b"<svg/>"])
    assert (c.path, c.media_type) == (("x", "3"), "image/svg+xml")


@pytest.mark.parametrize("conn", [2, 5])
def test_the_trackers_reuse_gives_what_a_computation_from_scratch_gives(conn):
    """The trackers reuse the last graph and each comm's verdict while the reader hands them
    the same view objects. Through a core fed the real traffic frame by frame (so views are
    reused as live), and each snapshot judged again later (past the settle and liveness
    windows, where reused ages would show), they must equal a computation without reuse."""
    import argparse

    from test_v4_session_replay import s2c

    from inspector.cli import divergence_options
    from inspector.session_core import SessionConfig, SessionCore

    core = SessionCore(SessionConfig("fixture.sock", NB, resolve_blobs=False, keep_frame_bodies=False,
                                     divergence=divergence_options(argparse.Namespace())))
    frames = list(s2c(conn))
    core.begin(4, t=frames[0][1])
    core.bootstrap(frames[0][0], frames[0][1])
    refs, live = references.ReferenceTracker(settle_s=1.0), liveness.LivenessTracker(window_s=2.0)
    judged, reused, last = 0, 0, None
    for payload, t, _f in frames[1:]:
        core.receive(payload, t)
        snap = core.snapshot(history=False)
        for later in (0.0, 0.0, 1.5, 5.0):
            s = msgspec.structs.replace(snap, taken_at=t + later)
            g = refs.update(s)
            reused += last is not None and g.references is last.references
            last = g
            fresh = references.build_graph(s, first_seen=refs.first_seen, now=s.taken_at, settle_s=refs.settle_s)
            assert (g.references, g.findings, g.taken_at) == (fresh.references, fresh.findings, s.taken_at)
            lv = live.update(s)
            assert lv == liveness.classify(s, first_seen=live.first_seen, now=s.taken_at, window_s=live.window_s)
            judged += 1
    assert judged > 20 and reused > judged // 2  # the reuse was exercised, not bypassed
