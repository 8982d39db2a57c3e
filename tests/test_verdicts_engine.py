"""Verdicts (docs/verdicts.md) over hand-driven views with an explicit clock: which findings fail
`check`, settling that follows the lagging view, the kernel view's "unknown", and blame from
what each view said itself (v2 views and the v4 topology / state / echo / kernel views)."""

from __future__ import annotations

from typing import Any

from test_divergence import Room, only, wstate

from inspector import check
from inspector import divergence as dv
from inspector.snapshot import Divergence
from inspector.v4.divergence import (
    ECHO,
    KERNEL,
    STATE,
    TOPOLOGY,
    V4_PAIRS,
    OverlaySource,
    StateSource,
    TopologySource,
)
from inspector.v4.room import CommState, Topology


def _div(kind: str, severity: str, status: str = "diverged") -> Divergence:
    return Divergence(comm_id="c", kind=kind, severity=severity, status=status, keys=(), since_ms=0.0,
                      detail="", sides=("doc",), moved=None, model_name=None)


# -- what fails check -----------------------------------------------------------------------------


def test_errors_fail_check_warnings_and_information_only_with_strict() -> None:
    for kind in ("forward_ref", "dangling_ref", "seq_anomaly"):
        assert dv.SEVERITY[kind] == dv.WARN
        assert not check._fails(_div(kind, "warn"), strict=False)
        assert check._fails(_div(kind, "warn"), strict=True)
    assert check._fails(_div("state_mismatch", "error"), strict=False)
    assert not check._fails(_div("missing_in_feed", "info"), strict=False)
    assert not check._fails(_div("pending", "info", "pending"), strict=True)


def test_a_box_shown_empty_then_filled_is_a_warning_at_most() -> None:
    # display(b); b.children = [s]: the box was opened before the slider it lists
    r = Room()
    r.feed_sync([])
    r.open("box", wstate("HBoxModel", children=[]))
    r.open("s", wstate(value=1))
    r.update("box", children=["IPY_MODEL_s"])
    found = r.settle()
    assert [(d.comm_id, d.kind, d.severity) for d in found] == [("box", "forward_ref", "warn")]
    assert not any(check._fails(d, strict=False) for d in found)


def test_a_closed_slider_still_listed_by_its_box_is_a_fact_not_a_disagreement() -> None:
    r = Room()
    r.feed_sync([])
    r.open("s", wstate(value=1))
    r.open("box", wstate("VBoxModel", children=["IPY_MODEL_s"]))
    r.close("s")
    found = r.settle()
    assert [(d.comm_id, d.kind, d.severity) for d in found] == [("box", "dangling_ref", "warn")]
    assert not any(check._fails(d, strict=False) for d in found)


# -- settling that follows the lagging view -----------------------------------------------------


def test_a_burst_the_doc_is_still_writing_stays_pending_then_a_real_gap_is_reported() -> None:
    r = Room()
    r.feed_sync([])
    n = 300
    for i in range(n):  # the kernel makes 300 widgets at once: the feed hears them all
        r.feed_open(f"w{i}", wstate(value=i))
    r.run(0.01)
    # the daemon writes them to the document slowly, 30 at a time with 0.4 s pauses (longer than
    # the 250 ms quiet window): none of the comms still to come may be reported meanwhile
    for i in range(n - 1):  # w299 never arrives: a real divergence
        r.t += 0.4 if i % 30 == 0 else 0.001
        r.doc_put(f"w{i}", wstate(value=i))
        r.run()
        reported = [d for d in r.engine.divergences(r.t) if d.status != "pending"]
        assert reported == [], (i, reported[:2])
    stopped = r.t
    found = r.settle()
    assert [(d.comm_id, d.kind) for d in found] == [(f"w{n - 1}", "missing_in_doc")]
    # reported once the doc stopped gaining comms for its own pace's window (3 x 0.4 s, at least
    # burst_quiet_min_s), not at the ceiling
    became = [tr.t for tr in r.transitions if tr.comm_id == f"w{n - 1}" and "missing_in_doc" in tr.after]
    assert became and became[0] - stopped <= max(3 * 0.4, dv.SettleConfig().burst_quiet_min_s) + 0.3


def test_the_burst_ceiling_bounds_pending() -> None:
    r = Room(burst_ceiling_s=3.0, max_pending_s=1.0)
    r.feed_sync([])
    r.feed_open("lost", wstate(value=0))
    r.run()
    for i in range(100):  # the doc keeps gaining other comms for 10 s: "lost" is reported at the ceiling
        r.t += 0.1
        r.feed_open(f"x{i}", wstate(value=i))
        r.doc_put(f"x{i}", wstate(value=i))
        r.run()
    became = [tr.t for tr in r.transitions if tr.comm_id == "lost" and "missing_in_doc" in tr.after]
    assert became and became[0] - 1000.0 <= 3.0 + 0.3


def test_a_real_divergence_after_the_views_stop_moving_is_reported_within_the_quiet_window() -> None:
    r = Room()
    r.feed_sync([])
    r.open("s", wstate(value=1))
    r.run(1.0)
    r.feed_update("s", value=2)  # the doc misses this one
    t0 = r.t
    r.settle()
    became = [tr.t for tr in r.transitions if "state_mismatch" in tr.after]
    assert became and became[0] - t0 <= 0.25 + 1e-6


# -- unknown --------------------------------------------------------------------------------------


def test_the_kernel_view_is_unknown_for_comms_opened_before_it_attached() -> None:
    r = Room(kernel=True)
    r.feed_sync([("old1", wstate(value=1)), ("old2", wstate(value=2))])
    r.doc_put("old1", wstate(value=1))
    r.doc_put("old2", wstate(value=2))
    r.open("new", wstate(value=3))  # opened while the tap listened
    assert r.settle() == ()
    assert r.engine.unknown_to("kernel") == ("old1", "old2")
    line = check.unknown_lines({"kernel": r.engine.unknown_to("kernel")})
    assert line == ["kernel view unknown for 2 comms opened before it attached (old1, old2)"]
    assert r.engine.unknown_to("doc") == ()  # a complete view is never unknown


def test_v2_feed_only_comms_are_reported_when_the_doc_becomes_ready_after_them() -> None:
    """The late-join case: the comm_sync snapshot holds comms the document lacks."""
    from inspector.profiles import V2CommViews

    class Reader:
        has_comms_map = False
        comms: dict[str, Any] = {}

    class Core:
        class config:  # noqa: N801 - a stand-in for SessionConfig
            divergence = None

        feed = None
        profile = None

    from inspector.feed import CommFeed
    from inspector.protocol import messages as m

    core = Core()
    core.feed = CommFeed()
    views = V2CommViews(core)  # type: ignore[arg-type]
    reader = Reader()
    views._reader = lambda: reader  # type: ignore[method-assign]
    eng = views.engine(dv.SettleConfig(), None)
    sync = m.CommSync(comms=[m.CommSnapshot(comm_id="a", target_name="jupyter.widget", state=wstate(value=1),
                                            model_module="@jupyter-widgets/controls", model_name="IntSliderModel")])
    core.feed.apply(sync, now=1.0)
    views.on_broadcast(sync, 1.0)
    eng.update(1.0)
    views.joined = True
    views.on_join(1.0)
    reader.has_comms_map = True  # the document's comms map arrives, without "a"
    views.on_doc(0, {"comms"}, 1.1)
    eng.update(1.1)
    eng.update(5.0)
    assert [(d.comm_id, d.kind) for d in eng.divergences(5.0)] == [("a", "missing_in_doc")]


# -- v4: outputs and blame from the views' own words ----------------------------------------------


OUT = "o" * 32
MODEL = {"_model_module": "@jupyter-widgets/output", "_model_name": "OutputModel"}


def _manifest(oid: str) -> dict[str, Any]:
    return {"output_type": "stream", "output_id": oid, "name": "stdout", "text": {"inline": oid}}


def _nb(oid: str) -> dict[str, Any]:
    return {"output_type": "stream", "output_id": oid, "name": "stdout", "text": oid}


class V4Views:
    """The four v4 views over hand-made topology and CommsDoc entries."""

    def __init__(self) -> None:
        self.topology, self.state = TopologySource(), StateSource()
        self.echo, self.kernel = OverlaySource(ECHO, self.state), OverlaySource(KERNEL, self.state)
        self.engine = dv.DivergenceEngine(dv.SettleConfig(), pairs=V4_PAIRS, seq_checks=(),
                                          ref_check=(STATE, TOPOLOGY), ref_open_order=(TOPOLOGY,))
        for s in (self.topology, self.state, self.echo, self.kernel):
            self.engine.add_source(s)
        self.topo: dict[str, Topology] = {}
        self.states: dict[str, CommState] = {}

    def put(self, cid: str, t: float, topo_outputs: list[str] | None = None, **state: Any) -> None:
        full = {**MODEL, **state}
        out_ids = topo_outputs if topo_outputs is not None else [o["output_id"] for o in full.get("outputs", [])]
        self.topo[cid] = Topology(comm_id=cid, seq=0, seq_type=None, target_name="jupyter.widget",
                                  model_module=MODEL["_model_module"], model_name="OutputModel", outputs=(),
                                  output_ids=tuple(out_ids), capture_msg_id=None, writer="runtimed", obj_id="1")
        self.states[cid] = CommState(comm_id=cid, state=full, key_writers={}, writer="runtimed", obj_id="2")
        self.topology.refresh(self.topo, {cid}, t)
        self.state.refresh(self.states, self.topo, {cid}, t)
        for src in (self.echo, self.kernel):
            if cid in src.reported:
                src.rebuild(cid, t)

    def settle(self, t: float) -> tuple[Divergence, ...]:
        self.engine.update(t)
        self.engine.update(t + 10.0)
        return self.engine.divergences(t + 10.0)


def test_v4_outputs_of_topology_and_state_are_compared() -> None:
    v = V4Views()
    v.put(OUT, 1.0, topo_outputs=["a", "b", "c", "d", "e"], outputs=[_manifest(x) for x in "abcd"])
    [d] = v.settle(1.0)
    assert (d.kind, d.severity) == ("outputs_mismatch", "error")
    assert "topology has 5 output(s), state has 4" in d.detail


def test_v4_blame_comes_from_the_kernels_last_word_not_a_copied_value() -> None:
    """Issue 11's wrong blame: the CommsDoc's outputs went wrong after the kernel and the echo
    reported them; the kernel's word is kept, and the CommsDoc is the side named wrong."""
    v = V4Views()
    good = [_manifest("a"), _manifest("b")]
    v.put(OUT, 1.0, outputs=good)
    v.kernel.opened(OUT, {**MODEL, "outputs": []}, "jupyter.widget", 1.0)
    v.kernel.report(OUT, {"outputs": [_nb("a"), _nb("b")]}, 1.1)
    v.echo.report(OUT, {"outputs": [_nb("a"), _nb("b")]}, 1.1)
    assert v.settle(1.2) == ()
    # the CommsDoc's outputs go wrong (one output lost); the topology keeps both
    v.put(OUT, 2.0, topo_outputs=["a", "b"], outputs=[_manifest("a")])
    [d] = v.settle(2.0)
    assert d.kind == "outputs_mismatch"
    assert "the kernel's last word agrees with echo, topology: state is wrong" in d.detail
    (k,) = d.keys
    # the kernel column holds the kernel's own word or nothing, never the CommsDoc's value
    assert k.values.get(KERNEL) in (None, ["a", "b"])
    assert k.values[STATE] == ["a"]


def test_v4_unreported_keys_are_not_shown_as_the_kernels() -> None:
    v = V4Views()
    v.put(OUT, 1.0, outputs=[], msg_id="")
    v.kernel.report(OUT, {"msg_id": "x"}, 1.5)  # the kernel said only msg_id (no open seen)
    [d] = v.settle(1.5)
    assert d.kind == "state_mismatch"
    assert [k.key for k in d.keys] == ["msg_id"]
    assert d.keys[0].values == {STATE: "", KERNEL: "x"}
    assert v.engine.unknown_to(KERNEL) == (OUT,)  # it never saw the open: unknown, said so


def test_blame_reads_the_key_history_when_the_session_keeps_one() -> None:
    """Who is wrong comes from each view's recorded words (time, writer, carrier)."""
    from inspector.key_history import KeyHistory

    r = Room(kernel=True)
    h = KeyHistory()
    r.engine.history = h
    r.feed_sync([])
    r.open("s", wstate(value=1))
    for src in ("doc", "feed", "kernel"):
        h.append(src, "s", "value", 1, r.t, writer="runtimed" if src == "doc" else None, carrier="open")
    r.run(1.0)
    r.feed_update("s", value=2)
    r.kernel("comm_msg", {"comm_id": "s", "data": {"method": "update", "state": {"value": 2}}})
    h.append("feed", "s", "value", 2, r.t, carrier="broadcast 7")
    h.append("kernel", "s", "value", 2, r.t, carrier="iopub msg k-1")
    d = only(r)
    assert "the kernel's last word agrees with feed: doc is wrong" in d.detail


def test_without_a_kernel_word_blame_says_who_moved_last_and_how() -> None:
    from inspector.key_history import KeyHistory

    r = Room(kernel=True)
    h = KeyHistory()
    r.engine.history = h
    r.feed_sync([("s", wstate(value=1))])  # opened before the tap: the kernel never spoke of it
    r.doc_put("s", wstate(value=1))
    r.run(1.0)
    r.doc_update("s", value=5)
    h.append("feed", "s", "value", 1, 1000.0, carrier="comm_sync")
    h.append("doc", "s", "value", 5, r.t, writer="peer-a", carrier="frame 12")
    d = only(r)
    assert d.kind == "state_mismatch"
    assert d.detail.endswith("kernel's word unknown; doc moved last (peer-a, frame 12)")
