"""The v4 parser on traffic captured from the real runtimed 2.9.0, without a daemon.

Frames of `frames.jsonl` go through the frame codec, the message models and one set of
Automerge replicas per connection; the rebuilt documents must equal the ones captured with
the reference Automerge implementation, and the snapshot must show what the scenario did.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspector.document import to_json
from inspector.protocol import messages as m
from inspector.snapshot import DaemonView
from inspector.v4.replay import replay_file
from inspector.v4.room import load_room

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "real-runtimed-2.9.0"

pytestmark = pytest.mark.skipif(not (FIX / "frames.jsonl").is_file(),
                                reason=f"real-runtimed fixtures not found at {FIX}")

SLIDER = "ef5b619c16ab471cba317b2a88731725"
LAYOUT = "11a1b029c01949b48e91e4cb01f036d8"
STYLE = "b41b5123ebe64bb6ae94127866725743"


def norm(x):
    """The captured JSON writes Uint values as strings; compare numbers as text."""
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, int | float):
        return str(x)
    if isinstance(x, dict):
        return {k: norm(v) for k, v in x.items()}
    if isinstance(x, list):
        return [norm(v) for v in x]
    return x


@pytest.fixture(scope="module")
def conns():
    return replay_file(str(FIX / "frames.jsonl"))


@pytest.fixture(scope="module")
def report():
    return json.loads((FIX / "scenario-report.json").read_text())


@pytest.mark.parametrize("conn,names", [
    (2, ("notebook", "runtime_state", "comms", "comments")),
    (5, ("notebook", "runtime_state", "comms", "comments", "pool_state")),
    (6, ("notebook", "runtime_state", "comms", "comments", "pool_state")),
])
def test_replayed_documents_equal_the_captured_ones(conns, conn, names):
    rc = conns[conn]
    assert rc.preamble_version == 4
    for name in names:
        expected = json.loads((FIX / "docs" / f"conn{conn}-{name}.json").read_text())
        assert norm(to_json(rc.room.replica(name).doc)) == norm(expected), f"conn {conn} {name}"


def test_connection_metadata_and_frames(conns):
    join = conns[5]
    assert join.handshake == {"channel": "notebook_sync", "notebook_id": "d900ce5a-9534-4c83-942f-30ab009399e3",
                              "protocol": "v4"}
    assert join.bootstrap["protocol_version"] == 4 and join.bootstrap["actor_label"].startswith("local:")
    assert {c["type"] for c in join.control} >= {"sync_status", "hosted_bridge_status"}
    assert join.control[-1]["runtime_state"] == "ready"
    # every document arrived on its own frame type
    assert set(join.doc_messages) == {"notebook", "runtime_state", "comms", "comments", "pool_state"}
    assert conns[2].bootstrap["type"] == "notebook_connection_info"
    assert any(isinstance(r, m.Ok) for r in join.responses)


def test_slider_state_comm_order_and_outputs(conns, report):
    snap = conns[2].room.snapshot(DaemonView(socket="replay"))
    assert snap.schema_version == 5
    assert snap.notebook_id == report["notebook_id"]
    # comms in seq order from the topology (Int), state from the comms document
    assert [c.comm_id for c in snap.comms] == [LAYOUT, STYLE, SLIDER]
    assert [c.seq for c in snap.comms] == [0, 1, 2]
    assert {c.seq_type for c in snap.comms} == {"Int"}
    slider = snap.comms[2]
    assert slider.model_name == "IntSliderModel" and slider.target_name == "jupyter.widget"
    # the CommsDoc keeps 7 although the kernel holds 5 after send_comm (runtimed-v4 §15 I5)
    assert slider.state == report["widgets_after_set_7"][SLIDER]["state"]
    assert slider.state["value"] == 7
    assert slider.key_writers["value"].startswith("rt:kernel:")
    assert slider.flags == ()
    # cells in position order with their outputs from the executions
    by_id = {c.id: c for c in snap.cells}
    ids = [c.id for c in snap.cells]
    order = [report[k]["cell_id"] for k in ("cell_add", "cell_slider", "cell_set_7", "cell_read_value")]
    assert [i for i in ids if i in order] == order
    assert by_id[report["cell_add"]["cell_id"]].outputs[0].resolved == {"text/plain": "2"}
    assert by_id[report["cell_read_value"]["cell_id"]].outputs[0].resolved == {"text/plain": "5"}
    view = by_id[report["cell_slider"]["cell_id"]].outputs[0]
    assert view.output_type == "execute_result"
    assert view.resolved["application/vnd.jupyter.widget-view+json"]["model_id"] == SLIDER
    assert [by_id[i].execution_count for i in order] == [1, 2, 3, 4]
    assert snap.kernel.lifecycle == "Shutdown" and snap.kernel.status == "shutdown"


def test_echo_update_broadcast_of_send_comm(conns):
    (bc,) = conns[5].broadcasts
    assert isinstance(bc, m.Comm)
    assert bc.content["comm_id"] == SLIDER
    assert bc.content["data"] == {"method": "echo_update", "state": {"value": 5}, "buffer_paths": []}


def test_provenance_labels(conns):
    snap = conns[2].room.snapshot(DaemonView(socket="replay"))
    docs = {d.name: d for d in snap.documents}
    assert "nteract:notebook-schema:v5" in docs["notebook"].actors
    assert "runtimed" in docs["notebook"].actors
    assert any(a.startswith("runtime-agent:") for a in docs["runtime_state"].actors)
    assert any(a.startswith("rt:kernel:") for a in docs["comms"].actors)
    assert docs["comments"].tree["comments_doc_id"].startswith("comments:local-room:")


def test_node_peer_client_write_is_attributed(conns):
    """conn 6: a node peer wrote value=4 into the CommsDoc; its actor is a random id, not a label."""
    snap = conns[6].room.snapshot(DaemonView(socket="replay"))
    (slider,) = [c for c in snap.comms if c.model_name == "IntSliderModel"]
    assert slider.state["value"] == 6  # the kernel's later `s.value = 6`
    assert slider.key_writers["value"].startswith("rt:kernel:")
    docs = {d.name: d for d in snap.documents}
    others = [a for a in docs["comms"].actors if not a.startswith(("rt:kernel:", "nteract:"))]
    assert len(others) == 1 and len(others[0]) == 32  # shown as hex: the bytes are not a label


@pytest.mark.parametrize("folder,prefix", [("docs", "conn5-"), ("node-client", "")])
def test_saved_automerge_files_load_and_read(folder, prefix):
    names = ("notebook", "runtime_state", "comms", "comments", "pool_state")
    saved = {n: (FIX / folder / f"{prefix}{n}.automerge").read_bytes() for n in names}
    room = load_room(saved)
    snap = room.snapshot(DaemonView(socket="file"))
    for n in names:
        expected = json.loads((FIX / folder / f"{prefix}{n}.json").read_text())
        assert norm(to_json(room.replica(n).doc)) == norm(expected)
    assert snap.schema_version == 5
    assert any(c.model_name == "IntSliderModel" for c in snap.comms)
    assert all(c.state is not None for c in snap.comms)
    docs = {d.name: d for d in snap.documents}
    assert set(docs["pool_state"].tree) >= {"uv", "conda", "pixi"}
    assert all(d.heads for d in snap.documents)


def test_get_doc_bytes_file_loads():
    room = load_room({"notebook": (FIX / "notebook-doc.get_doc_bytes.automerge").read_bytes()})
    snap = room.snapshot(DaemonView(socket="file"))
    assert snap.schema_version == 5
    assert snap.extra_root["comms_doc_id"].startswith("comms:")
    # cells refer to executions the (absent) runtime state would hold: flagged, not dropped
    ran = [c for c in snap.cells if c.execution_id]
    assert ran and all(any("not in the runtime state" in f for f in c.flags) for c in ran)
