"""The verdict regression corpus: sessions captured from the real runtimed 2.9.0 by
`tests/fixtures/verdicts/capture.py` (every core input as received, with its time: frames as
hex, the kernel tap's IOPub comm messages as JSON), replayed offline through `SessionCore` with
the recorded times. The verdicts a user would get from `check --kernel-connection auto` are
asserted, so the v4 verdicts are tested on every run without a daemon."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inspector import check
from inspector.divergence import DivergenceOptions, SettleConfig
from inspector.session_core import LIVE, SessionConfig, SessionCore

CORPUS = Path(__file__).resolve().parent / "fixtures" / "verdicts"


class Replay:
    """One captured session through a core; timers run at their deadlines, as the driver runs them."""

    def __init__(self, name: str) -> None:
        self.meta = json.loads((CORPUS / f"{name}.meta.json").read_text())
        self.inputs = [json.loads(ln) for ln in (CORPUS / f"{name}.jsonl").read_text().splitlines()]
        # the kernel view is shown as with `auto` once a tap ran; a named file keeps it shown
        self.core = SessionCore(SessionConfig("replay.sock", self.meta["notebook_id"], resolve_blobs=False,
                                              keep_frame_bodies=False,
                                              divergence=DivergenceOptions(SettleConfig(), "recorded-kernel.json")))
        self.reported: dict[tuple[str, str], Any] = {}  # every non-pending divergence ever reported

    def _until(self, t: float) -> None:
        while (due := self.core.next_deadline()) is not None and due <= t:
            self.core.tick(due)
            self._collect(due)

    def _collect(self, t: float) -> None:
        sd = self.core.divergence
        if sd is not None:
            for d in sd.divergences(include_pending=False, now=t):
                self.reported[(d.comm_id, d.kind)] = d

    def run(self, after: float = 5.0, on_step: Any = None) -> Replay:
        """Every input in order; `on_step(rec)` after each one."""
        end = 0.0
        for rec in self.inputs:
            t = rec["t"]
            self._until(t)
            op = rec["op"]
            if op == "begin":
                self.core.begin(rec["protocol_version"], t=t)
            elif op == "bootstrap":
                self.core.bootstrap(bytes.fromhex(rec["hex"]), t)
            elif op == "receive":
                self.core.receive(bytes.fromhex(rec["hex"]), t)
            elif op == "kernel_comm":
                self.core.kernel_comm(rec["msg_type"], rec["content"], [bytes.fromhex(b) for b in rec["buffers"]],
                                      t, rec.get("msg_id"))
            elif op == "kernel_event":
                self.core.kernel_event(rec["what"], rec["payload"], t)
            self._collect(t)
            if on_step is not None:
                on_step(rec)
            end = t
        self._until(end + after)
        self._collect(end + after)
        self.end = end + after
        return self

    def failing(self, strict: bool = False) -> list[Any]:
        return [d for d in self.reported.values() if check._fails(d, strict)]

    def unknown(self) -> dict[str, tuple[str, ...]]:
        assert self.core.divergence is not None
        return self.core.divergence.unknown()


def _models(r: Replay) -> dict[str, str | None]:
    return {c.comm_id: c.model_name for c in r.core.snapshot().comms}


CAPTURED = ("box_filled_later", "closed_slider_in_box", "interact", "late_join_send_comm", "output_capture",
            "widgets_300")


def test_the_corpus_is_there() -> None:
    assert sorted(p.stem for p in CORPUS.glob("*.jsonl")) == sorted(CAPTURED)
    for name in CAPTURED:
        assert json.loads((CORPUS / f"{name}.meta.json").read_text())["daemon"] == "runtimed 2.9.0"


def _kinds(r: Replay) -> dict[str, str]:
    models = _models(r)
    return {f"{models.get(cid)}:{kind}": r.reported[(cid, kind)].severity for cid, kind in r.reported}


def test_a_box_displayed_empty_then_filled_is_a_warning_not_a_failure() -> None:
    r = Replay("box_filled_later").run()
    assert r.core.state == LIVE and "kernel" in r.core.snapshot().sources
    assert sum(1 for i in r.inputs if i["op"] == "kernel_comm") > 0  # the kernel view took part
    assert _kinds(r) == {"HBoxModel:forward_ref": "warn"}
    assert r.failing() == [] and len(r.failing(strict=True)) == 1
    assert r.unknown() == {}


def test_interact_is_a_warning_not_a_failure() -> None:
    r = Replay("interact").run()
    assert _kinds(r) == {"VBoxModel:forward_ref": "warn"}
    assert r.failing() == [] and r.unknown() == {}


def test_a_closed_slider_still_listed_by_its_box_is_a_warning() -> None:
    r = Replay("closed_slider_in_box").run()
    assert _kinds(r) == {"VBoxModel:dangling_ref": "warn"}
    assert r.failing() == [] and r.unknown() == {}


def test_300_widgets_in_one_cell_report_nothing_while_the_daemon_writes_them() -> None:
    """The kernel opened 902 comms in 4 s; runtimed wrote them to the documents over 38 s, with
    pauses up to 6 s: every difference meanwhile stays pending, none is ever reported."""
    r = Replay("widgets_300").run()
    snap = r.core.snapshot()
    assert len(snap.comms) == 902
    assert r.reported == {}, list(_kinds(r).items())[:5]
    assert snap.divergence == ()


def test_output_capture_outputs_agree_across_topology_state_and_echo() -> None:
    r = Replay("output_capture").run()
    assert r.reported == {} and r.unknown() == {}
    views = r.core.divergence.views  # type: ignore[union-attr]
    (out,) = [c for c, m in _models(r).items() if m == "OutputModel"]
    ids = views.topology.comms[out].outputs
    assert ids and len(ids) == 2
    assert views.state.comms[out].outputs == ids == views.echo.comms[out].outputs


def test_output_outputs_the_kernel_contradicts_are_reported_with_blame() -> None:
    """The captured room, then (added here, not captured) the kernel reports one output fewer:
    an outputs_mismatch that names the three views the kernel's word differs from."""
    r = Replay("output_capture").run()
    (out,) = [c for c, m in _models(r).items() if m == "OutputModel"]
    views = r.core.divergence.views  # type: ignore[union-attr]
    first = views.topology.comms[out].outputs[0]
    t = r.end + 0.1
    r.core.kernel_comm("comm_msg", {"comm_id": out, "data": {"method": "update", "state": {
        "outputs": [{"output_type": "stream", "name": "stdout", "text": "one\n", "output_id": first}]}}}, [], t)
    r._until(t + 2.0)
    r._collect(t + 2.0)
    d = r.reported[(out, "outputs_mismatch")]
    assert d.severity == "error" and check._fails(d, strict=False)
    assert "the kernel's last word differs from" in d.detail


def test_a_late_joiner_says_the_kernel_view_is_unknown_never_all_clear() -> None:
    """`send_comm` moved the kernel to 8 before the inspector attached; the CommsDoc kept 3.
    The kernel view never saw these comms opened: unknown, stated, exit 13 from check."""
    r = Replay("late_join_send_comm").run()
    slider = r.meta["slider"]
    (c,) = [c for c in r.core.snapshot().comms if c.comm_id == slider]
    assert c.state["value"] == 3
    assert r.failing() == []
    unknown = r.unknown()
    assert set(unknown) == {"kernel"} and slider in unknown["kernel"] and len(unknown["kernel"]) == 3
    assert check.unknown_lines(unknown)[0].startswith("kernel view unknown for 3 comms opened before it attached")


@pytest.mark.parametrize("name", CAPTURED)
def test_no_capture_has_a_failing_finding(name: str) -> None:
    r = Replay(name).run()
    assert r.failing() == [], [check.summary_line(d) for d in r.failing()]
