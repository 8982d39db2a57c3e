"""The daemon's CommState rules (comm_state.rs at the protocol-v2 era), written once and shared by
the testbed daemon, the feed view and the kernel view."""

from __future__ import annotations

from inspector.comm_table import CommTable, apply_iopub_comm

SLIDER = {"_model_name": "IntSliderModel", "_model_module": "@jupyter-widgets/controls", "value": 1,
          "layout": {"width": "1px"}}


def test_open_update_close_and_reopen_reseq() -> None:
    t = CommTable()
    a = t.open("a", "jupyter.widget", SLIDER)
    t.open("b", "jupyter.widget", {"_model_name": "LayoutModel"})
    assert (a.seq, t.comms["b"].seq) == (0, 1)
    assert (a.model_module, a.model_name) == ("@jupyter-widgets/controls", "IntSliderModel")
    # shallow merge: nested values replaced whole, null stored (never a delete), others kept
    assert t.update("a", {"layout": {"height": "2px"}, "value": None}) == ["layout", "value"]
    assert a.state == {**SLIDER, "layout": {"height": "2px"}, "value": None}
    # model fields are frozen at open
    t.update("a", {"_model_name": "Other"})
    assert a.model_name == "IntSliderModel"
    # the caller's dicts are never aliased
    assert SLIDER["value"] == 1
    # re-open of an id: replaced, moved to the end with a new seq
    again = t.open("a", "jupyter.widget", {"_model_name": "IntSliderModel", "value": 9})
    assert [r.comm_id for r in t.ordered()] == ["b", "a"] and again.seq == 2 and again.state["value"] == 9
    assert t.close("b") is not None and t.close("b") is None
    t.clear()
    assert t.comms == {} and t.next_seq == 0 and t.open("c", "x", {}).seq == 0


def test_updates_to_unknown_comms_are_dropped_and_counted() -> None:
    t = CommTable()
    assert t.update("ghost", {"v": 1}) is None
    assert "ghost" not in t.comms and t.orphans == {"ghost": {"update": 1}}
    assert apply_iopub_comm(t, "comm_msg", {"comm_id": "ghost", "data": {"method": "custom"}}, []) == "orphan"
    assert t.orphans["ghost"] == {"update": 1, "custom": 1}


def test_non_update_methods_never_change_state() -> None:
    t = CommTable()
    apply_iopub_comm(t, "comm_open", {"comm_id": "a", "target_name": "jupyter.widget",
                                      "data": {"state": {"value": 1}}}, [b"\x01"])
    assert apply_iopub_comm(t, "comm_msg", {"comm_id": "a", "data": {"method": "echo_update",
                                                                      "state": {"value": 5}}}, []) == "echo"
    assert apply_iopub_comm(t, "comm_msg", {"comm_id": "a", "data": {"method": "custom",
                                                                      "content": {"x": 1}}}, []) == "custom"
    rec = t.comms["a"]
    assert rec.state == {"value": 1} and rec.echo_shadow == {"value": 5} and rec.open_buffers == [b"\x01"]
    # an update without a state key is not an update
    assert apply_iopub_comm(t, "comm_msg", {"comm_id": "a", "data": {"method": "update"}}, []) == "custom"


def test_output_capture_stack_nests_and_survives_a_reopen() -> None:
    t = CommTable()
    for cid in ("o1", "o2"):
        t.open(cid, "jupyter.widget", {"_model_name": "OutputModel", "msg_id": ""})
    t.open("s", "jupyter.widget", {"_model_name": "IntSliderModel"})
    t.update("o1", {"msg_id": "m"})
    t.update("o2", {"msg_id": "m"})
    t.update("s", {"msg_id": "m"})  # not an Output widget: ignored for capture
    assert t.capture_target("m") == "o2"
    t.update("o2", {"msg_id": ""})  # the inner one stops: the outer takes over
    assert t.capture_target("m") == "o1"
    t.open("o1", "jupyter.widget", {"_model_name": "OutputModel"})  # re-open keeps the registration
    assert t.capture_target("m") == "o1" and t.comms["o1"].capture_msg_id == "m"
    t.close("o1")
    assert t.capture_target("m") is None
    # an Output opened with a msg_id already set is not registered (only updates register)
    t.open("o3", "jupyter.widget", {"_model_name": "OutputModel", "msg_id": "z"})
    assert t.capture_target("z") is None


def test_captured_outputs_follow_clear_output_wait() -> None:
    t = CommTable()
    t.open("o", "jupyter.widget", {"_model_name": "OutputModel"})
    t.capture_output("o", {"text": "1"})
    t.capture_clear("o", wait=True)
    assert t.comms["o"].captured == [{"text": "1"}]  # deferred
    t.capture_output("o", {"text": "2"})
    assert t.comms["o"].captured == [{"text": "2"}]
    t.capture_clear("o", wait=False)
    assert t.comms["o"].captured == []
