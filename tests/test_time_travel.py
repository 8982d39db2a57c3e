"""Time travel over a recording (`inspector.time_travel`): a seek from the copies of the core the
pass kept gives exactly the room, the event log and the verdicts a replay from the start gives at
that point, backwards and forwards, on a v2 slider storm and on the real runtimed 2.9.0 capture
(protocol v4); the copies are independent of each other and of the pass, bounded in number and
spread evenly; a seek costs a bounded amount of replay whatever the point."""

from __future__ import annotations

import argparse
import contextlib
import json
import random
from typing import Any

import msgspec
import pytest
from slider_storm import core_run, gen_minute
from test_v4_session_replay import ROOM, SLIDER, s2c

from inspector.cli import divergence_options
from inspector.recording.session_recording import RecordingOptions
from inspector.replay_driver import Replay
from inspector.session_core import SessionConfig, SessionCore
from inspector.time_travel import TimeTravel


@pytest.fixture(scope="module")
def storm(tmp_path_factory: Any) -> str:
    path = str(tmp_path_factory.mktemp("tt") / "storm.rtirec")
    core_run(gen_minute(8.0), path)  # 8 s of a 60/s slider storm, recorded by the core itself
    return path


@pytest.fixture(scope="module")
def real_v4(tmp_path_factory: Any) -> str:
    """Connection 5 of the real 2.9.0 capture through a core with the recording option."""
    path = str(tmp_path_factory.mktemp("tt") / "v4.rtirec")
    core = SessionCore(SessionConfig("replay.sock", ROOM, resolve_blobs=False, keep_frame_bodies=False,
                                     divergence=divergence_options(argparse.Namespace()),
                                     recording=RecordingOptions(file=path)))
    frames = list(s2c(5))
    core.begin(4, t=frames[0][1])
    core.bootstrap(frames[0][0], frames[0][1])
    for payload, t, _f in frames[1:]:
        while (due := core.next_deadline()) is not None and due <= t:
            core.tick(due)
        for ft, body, doc in core.receive(payload, t).send:
            core.sent(ft, body, doc, t)
    end = frames[-1][1] + 5.0
    while (due := core.next_deadline()) is not None and due <= end:
        core.tick(due)
    assert core.recording is not None
    core.recording.finish()
    return path


def state(core: SessionCore) -> dict[str, Any]:
    """What a user sees of a core: the snapshot, the log and the verdicts (times fixed)."""
    snap = core.snapshot(taken_at=0.0).to_json()
    divs = ([msgspec.to_builtins(d) for d in core.divergence.divergences(include_pending=True, now=core.now)]
            if core.divergence is not None else None)
    events = [(e.seq, e.t, e.wall, e.kind, e.summary) for e in core.log.events()]
    return json.loads(json.dumps({"snap": snap, "divs": divs, "events": events}, default=str))


def reference(path: str, stop: int) -> dict[str, Any]:
    return state(Replay(path).run_to(stop))


def same_as(seek: SessionCore, ref: dict[str, Any]) -> bool:
    """A seek's core is the replay's: the same snapshot and verdicts, and its log holds the
    replay's latest events (those since its restore point), with the replay's counters."""
    got = state(seek)
    if {k: v for k, v in got.items() if k != "events"} != {k: v for k, v in ref.items() if k != "events"}:
        return False
    n = len(got["events"])
    log = seek.log
    return (got["events"] == ref["events"][len(ref["events"]) - n:] if n else True) and \
        log._seq == (ref["events"][-1][0] if ref["events"] else 0)


@pytest.mark.parametrize("which", ["storm", "real_v4"])
def test_a_seek_is_the_replay_from_the_start(which: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(which)
    tt = TimeTravel(path, every_s=0.002, max_copies=6)  # many copies, thinned more than once
    tt.finish()
    n = len(tt.replay)
    assert tt.copies <= 6 + 1
    rnd = random.Random(7)
    # backwards, forwards, the same point twice, a few records on, the very start and the very end
    stops = [n, 1, n // 2, n // 2, n // 2 + 3] + [rnd.randrange(1, n + 1) for _ in range(8)] + [2]
    for stop in stops:
        assert same_as(tt.seek(stop), reference(path, stop)), f"record {stop} of {n}"


@pytest.mark.parametrize("which", ["storm", "real_v4"])
def test_a_seek_through_thinned_anchors_applies_the_changes_in_between(which: str,
                                                                       request: pytest.FixtureRequest) -> None:
    """Anchors every few changes, dropped by halves more than once, and restore points thinned
    too: each document is rebuilt from a far anchor with the changes of every restore point
    in between (those of the dropped ones included), and is the replay's."""
    path = request.getfixturevalue(which)
    tt = TimeTravel(path, every_s=float("inf"), max_copies=12, anchor_changes=2, max_anchors=2, loaded_docs=1)
    every = max(3, len(tt.replay) // 60)
    while not tt.advance(0.0):  # one record a call (the budget is spent at once)
        if tt.records % every == 0:
            tt._take_copy()  # restore points by record count, whatever the machine's speed
    anchors = [c for c in tt._copies if c.anchor is not None]
    assert tt.anchor_changes > 2 and len([c for c in anchors if not c.first]) <= 2
    assert any(c.anchor is None and any(c.changes.values()) for c in tt._copies)
    n = len(tt.replay)
    rnd = random.Random(3)
    for stop in [n, n // 3, n // 3 + 1, *[rnd.randrange(1, n + 1) for _ in range(6)]]:
        core = tt.seek(stop)
        ref = Replay(path).run_to(stop)
        assert {ft: rep.heads for ft, rep in core.replicas.items()} == \
            {ft: rep.heads for ft, rep in ref.replicas.items()}, f"record {stop} of {n}"
        assert same_as(core, state(ref)), f"record {stop} of {n}"


def test_the_pass_itself_is_untouched_by_seeks(storm: str) -> None:
    tt = TimeTravel(storm, every_s=0.002, max_copies=8)
    tt.advance(0.05)
    half = tt.records
    tt.seek(half // 2)
    tt.seek(3)
    tt.finish()  # the pass goes on from where it was, with the copies taken out of it
    assert state(tt.replay.core) == state(Replay(storm).run())
    # and the copies it kept after the seeks are the pass's, not the seek's
    assert same_as(tt.seek(len(tt.replay)), state(tt.replay.core))


def test_v4_seek_shows_the_slider_as_it_was(real_v4: str) -> None:
    tt = TimeTravel(real_v4)
    tt.finish()
    first = min(e.seq for e in tt.events if SLIDER in f"{e.target} {e.data}")
    before = tt.seek_seq(first - 1).snapshot(taken_at=0.0)
    assert SLIDER not in {c.comm_id for c in before.comms}
    after = tt.seek_seq(tt.events[-1].seq).snapshot(taken_at=0.0)
    assert SLIDER in {c.comm_id for c in after.comms}


def test_copies_are_bounded_and_evenly_spread(storm: str) -> None:
    tt = TimeTravel(storm, every_s=0.001, max_copies=10)
    tt.finish()
    idx = [c.index for c in tt._copies]
    assert idx[0] == 1 and len(idx) <= 11 and idx == sorted(idx)
    gaps = [b - a for a, b in zip(idx[1:], idx[2:], strict=False)]
    # thinning by halves keeps the spacing within a factor of a few of the mean
    assert gaps and max(gaps) <= 4 * (sum(gaps) / len(gaps))
    # a seek replays at most the records between two copies (plus what the pass had not kept)
    tail = len(tt.replay) - idx[-1]
    worst = max([*gaps, idx[1] - idx[0], tail])
    assert worst < len(tt.replay) / 2


def test_the_event_list_is_the_log_without_frames(storm: str) -> None:
    tt = TimeTravel(storm)
    tt.finish()
    full = Replay(storm).run()
    assert [e.seq for e in tt.events] == [e.seq for e in full.log.events() if e.kind != "frame"]
    # the table maps each event to the record after which it exists
    for e in tt.events[:: max(1, len(tt.events) // 20)]:
        core = tt.seek_seq(e.seq)
        assert core.log._seq >= e.seq


def test_replay_times_are_the_recordings(storm: str) -> None:
    """Event and key-history wall times come from the recording, not from the replay's clock."""
    rp = Replay(storm)
    core = rp.run()
    meta = rp.meta
    events = core.log.events()
    assert events and all(e.wall == pytest.approx(meta.start_wall + (e.t - meta.start_mono), abs=1e-6)
                          for e in events)
    assert core.history is not None
    rows = [r for cid, key in core.history.history.series_keys() for r in core.history.history.series(cid, key)]
    assert rows and all(r.wall == pytest.approx(meta.start_wall + (r.t - meta.start_mono), abs=1e-6) for r in rows)
    assert [e.wall for e in Replay(storm).run().log.events()] == [e.wall for e in events]


def test_the_window_opens_before_the_pass_ends_and_follows_it(qtbot: Any, storm: str) -> None:
    from PySide6.QtTest import QAbstractItemModelTester

    from inspector.ui.recording_window import RecordingWindow

    w = RecordingWindow(storm, preload_s=0.0)  # nothing replayed before the window shows
    qtbot.addWidget(w)
    QAbstractItemModelTester(w.scrubber.timeline.model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    QAbstractItemModelTester(w.scrubber.timeline.proxy, QAbstractItemModelTester.FailureReportingMode.Fatal)
    w.show()
    assert not w.is_loaded and "replaying the recording" in w.progress.text()
    with qtbot.waitSignal(w.loaded, timeout=60_000):
        pass
    full = Replay(storm).run()
    assert [e.seq for e in w.events] == [e.seq for e in full.log.events() if e.kind != "frame"]
    assert w.scrubber.slider.maximum() == len(w.events) - 1
    assert "restore points" in w.progress.text()
    # nobody picked an event: the window shows the end, as a replay of the whole recording does
    assert w.scrubber.seq == w.events[-1].seq
    assert w.model.snapshot is not None
    assert w.model.snapshot.to_json()["comms"] == full.snapshot(taken_at=0.0).to_json()["comms"]


def test_a_pick_during_the_pass_is_kept_when_it_ends(qtbot: Any, storm: str) -> None:
    from inspector.ui.recording_window import RecordingWindow

    w = RecordingWindow(storm, preload_s=0.05)
    qtbot.addWidget(w)
    assert not w.is_loaded
    pick = w.events[len(w.events) // 2].seq
    w.scrubber.select_seq(pick)
    with qtbot.waitSignal(w.loaded, timeout=60_000):
        pass
    assert w.scrubber.seq == pick


def test_the_recording_timeline_filters_and_stays_in_step_with_the_slider(qtbot: Any, storm: str) -> None:
    from inspector.ui.recording_window import RecordingWindow

    w = RecordingWindow(storm)
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.loaded, timeout=60_000) if not w.is_loaded else contextlib.nullcontext():
        pass
    kinds = {e.kind for e in w.events}
    assert len(kinds) >= 2
    keep = sorted(kinds)[0]
    for kind, button in w.scrubber.timeline.kind_buttons.items():
        button.setChecked(kind == keep)
    proxy = w.scrubber.timeline.proxy
    assert 0 < proxy.rowCount() < len(w.events)
    # a visible row selected in the table moves the slider to that event
    shown = proxy.mapToSource(proxy.index(proxy.rowCount() // 2, 0)).row()
    with qtbot.waitSignal(w.scrubber.seqChanged) as sig:
        w.scrubber.timeline.table.setCurrentIndex(proxy.index(proxy.rowCount() // 2, 0))
    assert w.scrubber.slider.value() == shown and sig.args == [w.events[shown].seq]
    # the slider on an event the filter hides: the room moves there, the table selects nothing
    hidden = next(i for i, e in enumerate(w.events) if e.kind != keep)
    with qtbot.waitSignal(w.scrubber.seqChanged):
        w.scrubber.slider.setValue(hidden)
    assert w.scrubber.current_row() == -1
    assert w.scrubber.label.text().startswith(f"event {w.events[hidden].seq} ")



def test_at_an_event_is_one_pass_and_the_same_room_as_the_scrubber(storm: str) -> None:
    """`run(At(seq=N))` (`snapshot FILE --at N`) stops where the scrubber's table says, whether N
    is the last event of its record or not (then the room before that record)."""
    from inspector import replay_driver
    from inspector.replay_driver import At

    tt = TimeTravel(storm)
    tt.finish()
    last = tt.table[-1]
    old = replay_driver.SEQ_COPY_EVERY_S
    replay_driver.SEQ_COPY_EVERY_S = 0.001  # many copies, so the rebuild starts from a late one
    try:
        for seq in [1, 2, 3, 50, 51, last // 2, last // 2 + 1, last - 1, last, last + 100]:
            rp = Replay(storm)
            core = rp.run(At(seq=seq))
            assert rp.index == min(tt.index_of_seq(seq), len(rp)), seq
            assert state(core) == reference(storm, rp.index), seq
    finally:
        replay_driver.SEQ_COPY_EVERY_S = old


def test_a_seek_held_while_the_pass_freezes_its_copies_lets_go_of_its_documents(storm: str) -> None:
    """The pass keeps its restore points out of the collector's walks (`gc.freeze`), which takes
    in a seek's core held at that moment; when the next seek drops that core its documents are
    let go at once (the collector would never free them), and the new seek is the replay's."""
    tt = TimeTravel(storm, every_s=0.001)
    tt.advance(0.02)
    held = tt.seek(tt.records // 2)
    assert all(rep.doc is not None for rep in held.replicas.values())
    tt.finish()  # restore points taken (and frozen) while `held` is the current seek
    stop = len(tt.replay) // 3
    assert same_as(tt.seek(stop), reference(storm, stop))
    assert held.replicas and all(rep.doc is None for rep in held.replicas.values())
    tt.close()
