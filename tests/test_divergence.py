"""The divergence engine over hand-built views: the CommSync feed fed with real broadcast
messages, the document view fed with CommViews, an optional kernel view, and a clock we move."""

from __future__ import annotations

from typing import Any

import pytest

from inspector import divergence as dv
from inspector.comm_table import CommTable, apply_iopub_comm
from inspector.feed import CommFeed
from inspector.protocol import messages as m
from inspector.snapshot import CommView, OutputView

WIDGET = "jupyter.widget"


def wstate(name: str = "IntSliderModel", **kw: Any) -> dict[str, Any]:
    return {"_model_module": "@jupyter-widgets/controls", "_model_name": name, **kw}


class Room:
    """A doc view and a feed view of one room, driven by hand with an explicit clock."""

    def __init__(self, kernel: bool = False, **config: Any) -> None:
        self.t = 1000.0
        self.feed = CommFeed()
        self.feed_src = dv.FeedSource(self.feed)
        self.doc_src = dv.DocSource()
        self.doc: dict[str, CommView] = {}
        self.doc_seq = 0
        self.transitions: list[dv.Transition] = []
        self.engine = dv.DivergenceEngine(dv.SettleConfig(**config), on_transition=self.transitions.append)
        self.engine.add_source(self.doc_src)
        self.engine.add_source(self.feed_src)
        self.kernel_table: CommTable | None = None
        if kernel:
            self.kernel_table = CommTable()
            self.kernel_src = dv.TableSource("kernel", self.kernel_table, partial=True)
            self.engine.add_source(self.kernel_src)

    # -- feed side: real broadcasts through CommFeed -----------------------------------------

    def bc(self, bc: Any) -> None:
        self.feed.apply(bc, now=self.t)
        self.feed_src.on_broadcast(bc, now=self.t)

    def feed_sync(self, comms: list[tuple[str, dict]]) -> None:
        snaps = [m.CommSnapshot(comm_id=c, target_name=WIDGET, state=s, model_module=s.get("_model_module"),
                                model_name=s.get("_model_name")) for c, s in comms]
        self.bc(m.CommSync(comms=snaps))

    def feed_open(self, cid: str, state: dict, target: str = WIDGET) -> None:
        self.bc(m.Comm(msg_type="comm_open", content={"comm_id": cid, "target_name": target,
                                                     "data": {"state": state, "buffer_paths": []}}))

    def feed_update(self, cid: str, **delta: Any) -> None:
        self.bc(m.Comm(msg_type="comm_msg", content={"comm_id": cid, "data": {"method": "update", "state": delta}}))

    def feed_msg(self, cid: str, data: dict) -> None:
        self.bc(m.Comm(msg_type="comm_msg", content={"comm_id": cid, "data": data}))

    def feed_close(self, cid: str) -> None:
        self.bc(m.Comm(msg_type="comm_close", content={"comm_id": cid, "data": {}}))

    def kernel_status(self, status: str) -> None:
        self.bc(m.KernelStatus(status=status))

    # -- doc side: CommViews as the document reader builds them ----------------------------

    def doc_put(self, cid: str, state: dict, seq: int | None = None, outputs: tuple = (),
                model_name: str | None = None, target: str = WIDGET, writer: str = "runtimed") -> None:
        if seq is None:
            seq, self.doc_seq = self.doc_seq, self.doc_seq + 1
        self.doc[cid] = CommView(comm_id=cid, seq=seq, target_name=target,
                                 model_module=state.get("_model_module", ""),
                                 model_name=model_name if model_name is not None else state.get("_model_name", ""),
                                 state=state, state_error=None, outputs=outputs, writer=writer)
        self._doc_changed()

    def doc_update(self, cid: str, **delta: Any) -> None:
        v = self.doc[cid]
        self.doc[cid] = CommView(comm_id=cid, seq=v.seq, target_name=v.target_name, model_module=v.model_module,
                                 model_name=v.model_name, state={**v.state, **delta}, state_error=None,
                                 outputs=v.outputs, writer=v.writer)
        self._doc_changed()

    def doc_set(self, cid: str, **fields: Any) -> None:
        v = self.doc[cid]
        d = {f: getattr(v, f) for f in v.__struct_fields__}
        d.update(fields)
        self.doc[cid] = CommView(**d)
        self._doc_changed()

    def doc_remove(self, cid: str) -> None:
        del self.doc[cid]
        self._doc_changed()

    def doc_clear(self) -> None:
        self.doc.clear()
        self.doc_seq = 0
        self._doc_changed()

    def _doc_changed(self) -> None:
        self.doc_src.refresh(list(self.doc.values()), now=self.t)

    # -- both sides (the daemon working as #808 says) --------------------------------------

    def open(self, cid: str, state: dict, outputs: tuple = ()) -> None:
        self.feed_open(cid, state)
        self.doc_put(cid, state, outputs=outputs)
        self.kernel("comm_open", {"comm_id": cid, "target_name": WIDGET, "data": {"state": state}})

    def update(self, cid: str, **delta: Any) -> None:
        self.feed_update(cid, **delta)
        self.doc_update(cid, **delta)
        self.kernel("comm_msg", {"comm_id": cid, "data": {"method": "update", "state": delta}})

    def close(self, cid: str) -> None:
        self.feed_close(cid)
        self.doc_remove(cid)
        self.kernel("comm_close", {"comm_id": cid, "data": {}})

    def kernel(self, msg_type: str, content: dict) -> None:
        if self.kernel_table is not None:
            apply_iopub_comm(self.kernel_table, msg_type, content, [], now=self.t)
            self.kernel_src.sync([content["comm_id"]], now=self.t)

    # -- clock ------------------------------------------------------------------------------

    def run(self, dt: float = 0.0) -> list[dv.Transition]:
        self.t += dt
        return self.engine.update(self.t)

    def settle(self) -> tuple:
        """Advance past every settle window and return what is reported."""
        self.run(0.0)
        for _ in range(10):
            due = self.engine.next_deadline()
            if due is None:
                break
            self.t = max(self.t, due)
            self.engine.update(self.t)
        return self.engine.divergences(self.t)

    def kinds(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for d in self.engine.divergences(self.t):
            out.setdefault(d.comm_id, set()).add(d.kind)
        return out


def only(room: Room) -> Any:
    divs = room.settle()
    assert len(divs) == 1, divs
    return divs[0]


# -- in sync and transients ---------------------------------------------------------------------


def test_agreeing_views_are_in_sync() -> None:
    r = Room()
    r.feed_sync([])
    r.open("layout", wstate("LayoutModel", width=None))
    r.open("slider", wstate(value=50, layout="IPY_MODEL_layout"))
    r.run(0.05)
    r.update("slider", value=72)
    assert r.settle() == ()
    assert r.engine.status("slider") == ("in_sync",)


def test_broadcast_before_doc_change_is_pending_then_settles_without_report() -> None:
    # T2: the broadcast arrives, the doc change follows 80 ms later.
    r = Room()
    r.feed_sync([])
    r.open("s", wstate(value=1))
    r.settle()
    r.feed_update("s", value=2)
    r.run(0.0)
    assert [d.kind for d in r.engine.divergences(r.t)] == ["pending"]
    r.run(0.08)
    r.doc_update("s", value=2)
    r.run(0.0)
    assert r.settle() == ()
    kinds_seen = {k for tr in r.transitions for k in tr.after}
    assert kinds_seen <= {"pending", "in_sync"}


def test_join_window_feed_before_doc_settles() -> None:
    # T1: comm_sync lists three comms, the doc arrives in later sync rounds.
    r = Room()
    states = [("a", wstate("LayoutModel")), ("b", wstate("StyleModel")), ("c", wstate(value=5))]
    r.feed_sync(states)
    r.run(0.02)
    for cid, s in states:
        r.doc_put(cid, s)
        r.run(0.03)
    assert r.settle() == ()


def test_sync_batching_intermediate_states_are_not_reported() -> None:
    # T3: 30 feed updates, the doc jumps straight to the last value.
    r = Room()
    r.feed_sync([])
    r.open("s", wstate(value=0))
    r.settle()
    for i in range(1, 31):
        r.feed_update("s", value=i)
        r.run(0.003)
    r.run(0.05)
    r.doc_update("s", value=30)
    assert r.settle() == ()
    assert not any(set(tr.after) - {"pending", "in_sync"} for tr in r.transitions)


def test_join_overlap_duplicate_open_and_close_of_unknown_are_absorbed() -> None:
    # T5: a comm in comm_sync is opened again; a close arrives for an id never seen.
    r = Room()
    r.feed_sync([("a", wstate(value=1))])
    r.doc_put("a", wstate(value=1))
    r.feed_open("a", wstate(value=1))
    r.feed_close("never-seen")
    assert r.settle() == ()


def test_kernel_restart_clear_settles() -> None:
    # T6: kernel starting clears the feed; the doc clear arrives a second later.
    r = Room()
    r.feed_sync([])
    r.open("a", wstate(value=1))
    r.open("b", wstate(value=2))
    r.settle()
    r.kernel_status("shutdown")
    r.run(0.3)
    r.kernel_status("starting")
    r.run(1.0)
    r.doc_clear()
    assert r.settle() == ()
    r.open("c", wstate(value=3))
    assert r.settle() == ()


def test_orphan_traffic_and_non_state_messages_are_not_divergence() -> None:
    # T8 / T9: control-comm replies, custom messages and echo_update never reach the doc.
    r = Room()
    r.feed_sync([])
    r.open("s", wstate(value=1))
    r.feed_msg("control-comm", {"method": "update_states", "states": {}})
    r.feed_msg("s", {"method": "custom", "content": {"event": "click"}})
    r.feed_msg("s", {"method": "echo_update", "state": {"value": 9}})
    assert r.settle() == ()


def test_representation_differences_are_normalised() -> None:
    # T11: 1 == 1.0, key order, "" vs None model fields; true is not 1.
    r = Room()
    r.feed_sync([])
    r.feed_open("s", {"_model_name": "FloatSliderModel", "value": 1, "opts": {"b": 2, "a": [1, 2.0]}})
    r.doc_put("s", {"opts": {"a": [1.0, 2], "b": 2.0}, "value": 1.0, "_model_name": "FloatSliderModel"})
    assert r.settle() == ()
    r.feed_update("s", value=True)
    r.doc_update("s", value=1)
    d = only(r)
    assert d.kind == "state_mismatch" and d.keys[0].key == "value"


def test_non_widget_comm_compares_membership_only() -> None:
    r = Room()
    r.feed_sync([])
    r.feed_open("ctl", {}, target="jupyter.widget.control")
    r.doc_put("ctl", {}, target="jupyter.widget.control", model_name="")
    assert r.settle() == ()


def test_reopen_moves_comm_to_the_end_of_both_orders() -> None:
    # T12: a re-opened id gets a new, larger seq on both sides.
    r = Room()
    r.feed_sync([])
    r.open("a", wstate(value=1))
    r.open("b", wstate(value=2))
    r.settle()
    r.open("a", wstate(value=3))
    assert r.settle() == ()


# -- every kind ------------------------------------------------------------------------------


def test_state_mismatch_names_keys_values_ages_and_lag() -> None:
    r = Room()
    r.feed_sync([])
    r.open("s", wstate(value=50, max=100))
    r.settle()
    for v in (60, 70, 72):
        r.feed_update("s", value=v)
        r.run(0.01)
    t_last = r.t - 0.01
    d = only(r)
    assert (d.comm_id, d.kind, d.severity, d.status) == ("s", "state_mismatch", "error", "diverged")
    (k,) = d.keys
    assert (k.key, k.doc, k.feed) == ("value", 50, 72)
    assert k.feed_age_ms == pytest.approx((r.t - t_last) * 1000, abs=1)
    assert k.doc_age_ms > k.feed_age_ms
    assert "doc behind feed by 3 updates" in d.detail
    assert d.moved == "feed" and d.model_name == "IntSliderModel"
    assert d.since_ms >= 250


def test_state_mismatch_under_stale_doc_configuration_is_info() -> None:
    # T14: a daemon that does not dual-write updates.
    r = Room(updates_dual_written=False)
    r.feed_sync([])
    r.open("s", wstate(value=1))
    r.feed_update("s", value=2)
    d = only(r)
    assert (d.kind, d.severity, d.status) == ("state_mismatch", "info", "info")


def test_missing_in_doc() -> None:
    r = Room()
    r.feed_sync([])
    r.feed_open("x", wstate(value=1))
    d = only(r)
    assert (d.comm_id, d.kind, d.severity) == ("x", "missing_in_doc", "error")


def test_missing_in_feed_and_feed_gap() -> None:
    r = Room()
    r.feed_sync([])
    r.doc_put("x", wstate(value=1))
    d = only(r)
    assert (d.kind, d.severity) == ("missing_in_feed", "error")
    # An update for it on the feed means the feed lost the open: FEED_GAP, information only.
    r.feed_update("x", value=2)
    d = only(r)
    assert (d.kind, d.severity) == ("missing_in_feed", "info") and "FEED_GAP" in d.detail


def test_closed_but_in_doc() -> None:
    r = Room()
    r.feed_sync([])
    r.open("x", wstate(value=1))
    r.settle()
    r.feed_close("x")
    d = only(r)
    assert (d.comm_id, d.kind, d.severity) == ("x", "closed_but_in_doc", "error")


def test_model_mismatch() -> None:
    r = Room()
    r.feed_sync([])
    r.feed_open("x", wstate(value=1))
    r.doc_put("x", wstate(value=1), model_name="FloatSliderModel")
    d = only(r)
    assert d.kind == "model_mismatch" and "model_name" in d.detail


def test_outputs_mismatch_on_output_widget() -> None:
    r = Room()
    r.feed_sync([])
    r.open("out", wstate("OutputModel", msg_id="", outputs=[]))
    r.settle()
    r.feed_msg("out", {"method": "custom", "content": {"method": "output",
                                                      "output": {"output_type": "stream", "text": "hi"}}})
    r.feed_msg("out", {"method": "custom", "content": {"method": "output",
                                                      "output": {"output_type": "stream", "text": "ho"}}})
    r.doc_set("out", outputs=(OutputView(ref="a" * 64, output_type="stream"),))
    d = only(r)
    assert d.kind == "outputs_mismatch" and "doc has 1" in d.detail and "feed has 2" in d.detail
    r.doc_set("out", outputs=(OutputView(ref="a" * 64, output_type="stream"),
                              OutputView(ref="b" * 64, output_type="stream")))
    assert r.settle() == ()


def test_outputs_on_non_output_comm() -> None:
    r = Room()
    r.feed_sync([])
    r.open("s", wstate(value=1), outputs=(OutputView(ref="c" * 64),))
    assert only(r).kind == "outputs_mismatch"


def test_seq_duplicate_blames_the_later_comm() -> None:
    r = Room()
    r.feed_sync([])
    r.open("a", wstate("LayoutModel"))
    r.feed_open("b", wstate(value=1))
    r.doc_put("b", wstate(value=1), seq=0)
    d = only(r)
    assert (d.comm_id, d.kind, d.severity) == ("b", "seq_anomaly", "warn") and "duplicated" in d.detail


def test_seq_order_differs_from_feed_open_order() -> None:
    r = Room()
    r.feed_sync([])
    for cid in "abc":
        r.open(cid, wstate("LayoutModel"))
    r.feed_open("d", wstate(value=1))
    r.doc_put("d", wstate(value=1), seq=1)  # orders d before b and c; gaps elsewhere are fine
    r.doc_set("b", seq=5)
    r.doc_set("c", seq=9)
    d = only(r)
    assert (d.comm_id, d.kind) == ("d", "seq_anomaly")


def test_seq_gaps_are_normal() -> None:
    r = Room()
    r.feed_sync([])
    r.open("a", wstate("LayoutModel"))
    r.open("gone", wstate("LayoutModel"))
    r.open("b", wstate("LayoutModel"))
    r.close("gone")
    assert r.settle() == ()


def test_dangling_and_forward_refs() -> None:
    r = Room()
    r.feed_sync([])
    r.open("box", wstate("VBoxModel", children=["IPY_MODEL_kid", "IPY_MODEL_nowhere"]))
    r.open("kid", wstate(value=1))
    d = only(r)
    assert (d.comm_id, d.kind, d.severity) == ("box", "dangling_ref", "warn") and "nowhere" in d.detail
    r.update("box", children=["IPY_MODEL_kid"])
    d = only(r)
    assert (d.comm_id, d.kind) == ("box", "forward_ref") and "kid" in d.detail


def test_stale_after_kernel_launch_is_error_and_after_death_is_info() -> None:
    r = Room()
    r.feed_sync([])
    r.open("s", wstate(value=1))
    r.settle()
    r.kernel_status("error")
    d = only(r)
    assert (d.kind, d.severity, d.status) == ("stale_after_kernel_exit", "info", "info")
    r.kernel_status("shutdown")
    r.kernel_status("starting")  # the doc never clears
    d = only(r)
    assert (d.kind, d.severity) == ("stale_after_kernel_exit", "error")


def test_kernel_exit_without_request_keeps_comms_without_report() -> None:
    # A "shutdown" the kernel sent itself does not clear (comm-semantics §5).
    r = Room()
    r.feed_sync([])
    r.open("s", wstate(value=1))
    r.kernel_status("shutdown")
    assert r.settle() == ()


def test_kernel_death_severity_is_configurable() -> None:
    r = Room(kernel_death_severity="warn")
    r.feed_sync([])
    r.open("s", wstate(value=1))
    r.kernel_status("error")
    assert only(r).severity == "warn"


# -- the kernel view ----------------------------------------------------------------------


def test_kernel_view_tells_which_side_is_wrong() -> None:
    r = Room(kernel=True)
    r.feed_sync([])
    r.open("s", wstate(value=1))
    r.feed_update("s", value=2)  # the doc missed it, the kernel agrees with the feed
    r.kernel("comm_msg", {"comm_id": "s", "data": {"method": "update", "state": {"value": 2}}})
    d = only(r)
    assert d.kind == "state_mismatch" and set(d.sides) == {"doc", "feed", "kernel"}
    assert (d.keys[0].doc, d.keys[0].feed, d.keys[0].kernel) == (1, 2, 2)
    assert "the kernel's last word agrees with feed: doc is wrong" in d.detail


def test_comms_opened_before_the_tap_are_unknown_to_the_kernel_not_missing() -> None:
    r = Room(kernel=True)
    r.feed_sync([("old", wstate(value=1))])
    r.doc_put("old", wstate(value=1))
    r.kernel("comm_msg", {"comm_id": "old", "data": {"method": "update", "state": {"value": 1}}})
    assert r.settle() == ()


def test_kernel_shutdown_request_then_stale_doc_is_error() -> None:
    r = Room(kernel=True)
    r.feed_sync([])
    r.open("s", wstate(value=1))
    r.settle()
    r.kernel_status("shutdown")
    r.kernel_src.clear("shutdown_request", now=r.t)  # the tap saw the kernel's shutdown_reply
    d = only(r)
    assert (d.kind, d.severity) == ("stale_after_kernel_exit", "error") and "shutdown request" in d.detail


# -- settling rules -------------------------------------------------------------------------


def test_settle_window_is_configurable_and_transitions_are_timestamped() -> None:
    r = Room(quiet_s=1.0, membership_quiet_s=0.0)  # membership's own floor off: the quiet window alone
    r.feed_sync([])
    r.feed_open("x", wstate(value=1))
    t0 = r.t
    r.run(0.0)
    r.run(0.5)
    assert r.engine.divergences(r.t)[0].kind == "pending"
    r.run(0.6)
    assert r.engine.divergences(r.t)[0].kind == "missing_in_doc"
    times = [(tr.t, tr.after) for tr in r.transitions if tr.comm_id == "x"]
    assert times == [(t0, ("pending",)), (t0 + 1.1, ("missing_in_doc",))]


def test_busy_neighbour_does_not_hide_a_divergence_forever() -> None:
    r = Room()
    r.feed_sync([])
    r.open("busy", wstate(value=0))
    r.feed_open("lost", wstate(value=1))
    for i in range(1, 200):  # updates every 40 ms keep both sources busy
        r.run(0.04)
        r.update("busy", value=i)
        if r.t - 1000.0 > 6.0:
            break
    assert r.kinds() == {"lost": {"missing_in_doc"}}


def test_clear_window_holds_reports_back() -> None:
    r = Room()
    r.feed_sync([])
    r.open("s", wstate(value=1))
    r.settle()
    r.kernel_status("starting")
    r.run(1.0)
    assert r.engine.divergences(r.t)[0].kind == "pending"
    r.run(1.1)
    assert r.engine.divergences(r.t)[0].kind == "stale_after_kernel_exit"


def test_only_changed_comms_are_compared() -> None:
    r = Room()
    r.feed_sync([])
    for i in range(500):
        r.open(f"c{i}", wstate(value=i))
    r.settle()
    before = r.engine.evaluations
    r.update("c7", value=-1)
    r.settle()
    assert r.engine.evaluations - before <= 3
