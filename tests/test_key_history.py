"""The key history store, its blame queries, the history findings, hop latency and the `history`
command, on histories written entry by entry (the live feeds are in test_history_testbed.py)."""

from __future__ import annotations

import argparse
import io
import json
import time

import pytest

from inspector import history_cli
from inspector import history_findings as hf
from inspector.history_feed import SessionHistory
from inspector.hop_latency import Hop, latency_block, match_hop, samples
from inspector.key_history import ENTRY_OVERHEAD, KeyHistory


def sweep(store: KeyHistory, cid: str = "c1", n: int = 10, lag: float = 0.05, step: float = 0.1) -> None:
    for i in range(n):
        store.append("kernel", cid, "value", i, i * step, writer="kernel", carrier=f"msg m{i}")
        store.append("doc", cid, "value", i, i * step + lag, writer="daemon", carrier=f"frame {i}", event_seq=i)


def test_series_are_in_arrival_order_per_key_and_source() -> None:
    store = KeyHistory()
    sweep(store)
    store.append("kernel", "c1", "max", 100, 0.0)
    assert [e.value for e in store.series("c1", "value", "kernel")] == list(range(10))
    assert [e.source for e in store.series("c1", "value")][:4] == ["kernel", "doc", "kernel", "doc"]
    assert store.keys("c1") == ["max", "value"] and store.sources("c1", "value") == ["doc", "kernel"]
    assert store.series("nope", "value") == [] and store.stats("nope", "value").entries == 0


def test_bounded_by_bytes_oldest_of_the_biggest_key_go_first_and_are_counted() -> None:
    store = KeyHistory(max_bytes=200 * (ENTRY_OVERHEAD + 8))
    store.append("kernel", "quiet", "value", 1, 0.0)
    for i in range(10_000):
        store.append("kernel", "loud", "value", i, float(i))
    assert store.bytes <= store.max_bytes
    assert store.dropped > 9_000 and store.stats("loud", "value").dropped == store.dropped
    loud = [e.value for e in store.series("loud", "value")]
    assert loud == list(range(10_000 - len(loud), 10_000))  # the newest are kept, in order
    assert [e.value for e in store.series("quiet", "value")] == [1]  # the quiet key keeps its story
    assert store.last("loud", "value", "kernel").value == 9_999
    assert store.summary()["dropped"] == store.dropped


def test_blame_who_agrees_with_the_kernels_last_word_and_who_moved_last() -> None:
    store = KeyHistory()
    store.append("kernel", "c", "value", 5, 1.0, carrier="msg a")
    store.append("state", "c", "value", 5, 1.1, writer="runtimed", carrier="frame 3")
    store.append("echo", "c", "value", 4, 1.3, carrier="frame 4")  # a stale echo, later
    store.append("topology", "c", "value", 5, 1.2)
    assert store.agree_with_kernel("c", "value") == (["state", "topology"], ["echo"])
    assert store.moved_last("c", "value").source == "echo"
    b = store.blame("c", "value")
    assert b["kernel_word"] == 5 and b["differ_from_kernel"] == ["echo"] and b["moved_last"] == "echo"
    assert b["last"]["state"]["carrier"] == "frame 3" and b["last"]["state"]["writer"] == "runtimed"
    store.append("state", "c", "other", 1, 2.0)
    assert store.agree_with_kernel("c", "other") is None  # the kernel said nothing: unknown


def test_value_regression_is_reported_with_its_rows_and_a_slow_return_is_not() -> None:
    store = KeyHistory()
    for t, v in [(0.0, 1), (0.1, 2), (0.2, 3), (0.25, 2), (5.0, 4), (9.0, 3)]:
        store.append("echo", "c", "value", v, t, carrier=f"frame {int(t * 100)}")
    found = [f for f in hf.detect(store) if f.kind == hf.VALUE_REGRESSION]
    assert len(found) == 1  # 3 → 2 within 50 ms; 4 → 3 came seconds later (a user's move)
    assert [e.value for e in found[0].rows] == [2, 3, 2]
    assert "went back from 3 to the older 2" in found[0].detail
    assert found[0].to_json()["rows"][2]["carrier"] == "frame 25"


def test_noop_rewrites_and_flooding() -> None:
    store = KeyHistory()
    for i in range(5):
        store.append("kernel", "c", "layout", {"w": 1}, i * 0.01)
    for i in range(100):
        store.append("feed", "c", "value", i, 1.0 + i * 0.005)  # 200 writes/s
    found = hf.detect(store, hf.Thresholds(noop_min=2, flood_per_s=30))
    noop = [f for f in found if f.kind == hf.NOOP_REWRITE]
    assert [(f.source, f.key, f.count) for f in noop] == [("kernel", "layout", 4)]
    flood = [f for f in found if f.kind == hf.FLOODING]
    assert [(f.source, f.key, f.count) for f in flood] == [("feed", "value", 100)]
    assert not [f for f in hf.detect(store, hf.Thresholds(flood_per_s=500)) if f.kind == hf.FLOODING]


def test_hop_matching_is_fifo_and_skips_coalesced_values() -> None:
    store = KeyHistory()
    for i in range(10):
        store.append("kernel", "c", "value", i, i * 0.01)
    for v, t in [(3, 0.30), (7, 0.31), (9, 0.40)]:  # the doc coalesced, and lags
        store.append("doc", "c", "value", v, t)
    got = [(s.far.value, round(s.latency_s, 3)) for s in samples(store) if s.hop == "kernel→doc"]
    assert got == [(3, 0.27), (7, 0.24), (9, 0.31)]
    block = latency_block(store)
    h = block["hops"]["kernel→doc"]
    assert (h["n"], h["p50_ms"], h["max_ms"]) == (3, 270.0, 310.0)
    assert sum(h["histogram"]["counts"]) == 3 and h["histogram"]["counts"][8] == 3  # (200, 500] ms
    assert block["comms"]["c"]["kernel→doc"]["n"] == 3
    assert "kernel→feed" not in block["hops"]  # no figure for a hop that never carried anything


def test_frontend_hop_only_counts_writes_presence_attributes_to_a_peer() -> None:
    store = KeyHistory()
    store.append("state", "c", "value", True, 0.0, writer="runtimed")  # the daemon's write
    store.append("kernel", "c", "value", True, 0.5)
    store.append("state", "c", "value", False, 1.0, writer="local:me/desktop:ab", peer="desktop")
    store.append("kernel", "c", "value", False, 1.2)
    hop = Hop("frontend(state)→kernel", "state", "kernel", near_frontend_only=True)
    got = match_hop(hop, store.series("c", "value", "state"), store.series("c", "value", "kernel"))
    assert [(s.far.value, round(s.latency_s, 3)) for s in got] == [(False, 0.2)]


def test_slow_hop_findings() -> None:
    store = KeyHistory()
    sweep(store, lag=0.6)
    (f,) = [f for f in hf.detect(store, hf.Thresholds(slow_hop_ms=500)) if f.kind == hf.SLOW_HOP]
    assert f.source == "kernel→doc" and f.count == 10 and "worst 600 ms" in f.detail
    assert not [f for f in hf.detect(store, hf.Thresholds(slow_hop_ms=700)) if f.kind == hf.SLOW_HOP]


def test_adapter_records_messages_with_rewrites_and_views_only_when_they_move() -> None:
    from inspector.divergence import ViewComm

    sh = SessionHistory()
    sh.on_presence({"type": "snapshot", "peers": [{"peer_id": "p1", "peer_label": "desktop",
                                                   "actor_label": "local:me/desktop:ab"}]})
    sh.on_kernel_comm("comm_msg", {"comm_id": "c", "data": {"method": "update", "state": {"value": 1}}}, 1.0, "m1")
    sh.on_kernel_comm("comm_msg", {"comm_id": "c", "data": {"method": "update", "state": {"value": 1}}}, 1.1, "m2")
    sh.on_kernel_comm("comm_msg", {"comm_id": "c", "data": {"method": "custom", "content": {}}}, 1.2, "m3")
    assert [(e.value, e.carrier) for e in sh.history.series("c", "value")] == [(1, "msg m1"), (1, "msg m2")]
    sh.frame_seq = 42
    view = ViewComm("c", 0, "jupyter.widget", None, "IntSliderModel", {"value": 1, "max": 9},
                    key_times={"value": 1.3, "max": 1.3}, writer="local:me/desktop:ab")
    assert sh.on_view("state", view, 1.3) == 2
    assert sh.on_view("state", view, 1.4) == 0  # nothing moved
    (e,) = sh.history.series("c", "value", "state")
    assert (e.writer, e.peer, e.carrier) == ("local:me/desktop:ab", "desktop", "frame 42")
    sh.on_kernel_comm("comm_msg", {"comm_id": "c", "data": {"method": "update", "state": {"value": 2}}}, 1.5, "m4")
    sh.on_kernel_comm("comm_msg", {"comm_id": "c", "data": {"method": "update", "state": {"value": 1}}}, 1.6, "m5")
    hops = {h: (f["n"], f["max_ms"]) for h, f in sh.latency()["hops"].items()}
    # the kernel's 1 (m1) reached the state 300 ms later; the desktop's write of 1 reached the
    # kernel (m5) 300 ms after it; m2 was a rewrite and is nobody's origin
    assert hops == {"kernel→state": (1, 300.0), "frontend(state)→kernel": (1, 300.0)}
    assert [f["kind"] for f in sh.findings()] == ["value_regression"]  # the kernel went 1, 1, 2, 1


def test_the_store_opens_a_100k_value_key_fast() -> None:
    store = KeyHistory()
    for i in range(100_000):
        store.append("kernel", "c", "value", i, i * 0.001)
    start = time.perf_counter()
    rows = store.series("c", "value")
    assert len(rows) == 100_000 and time.perf_counter() - start < 0.2


# -- the history command ----------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="runtimed-inspector")
    history_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.fixture
def saved(tmp_path):
    store = KeyHistory()
    sweep(store, cid="3f9c0000aaaa", n=4, lag=0.6)
    store.append("doc", "3f9c0000aaaa", "value", 2, 1.5, writer="daemon")  # goes back
    path = tmp_path / "hist.json"
    store.save(path)
    return path


def test_history_command_table(saved, capsys) -> None:
    args = parse(["history", str(saved), "--comm", "3f9c", "--key", "value"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "comm 3f9c0000aaaa key 'value': 9 value(s)"
    assert lines[1].split() == ["+s", "time", "source", "value", "writer", "peer", "carrier", "event"]
    assert lines[2].split()[2:] == ["kernel", "0", "kernel", "-", "msg", "m0", "-"]
    assert any(line.startswith("value_regression [warn] doc: doc went back from 3") for line in lines)
    assert any(line.startswith("slow_hop [warn] kernel→doc:") for line in lines)
    assert any(line.startswith("latency kernel→doc: n=4 p50=600.0 ms") for line in lines)


def test_history_command_json(saved, capsys) -> None:
    args = parse(["history", str(saved), "--comm", "3f9c0000aaaa", "--key", "value", "--json"])
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["value"] for e in doc["entries"] if e["source"] == "kernel"] == [0, 1, 2, 3]
    assert doc["latency"]["kernel→doc"]["max_ms"] == 600.0
    assert {f["kind"] for f in doc["findings"]} == {"value_regression", "slow_hop"}
    assert doc["blame"]["differ_from_kernel"] == ["doc"]


@pytest.mark.parametrize("argv, message", [
    (["--comm", "zz", "--key", "value"], "no history for comm 'zz'"),
    (["--comm", "3f9c", "--key", "nope"], "has no history for key 'nope'"),
])
def test_history_command_bad_arguments_are_one_line_usage_errors(saved, capsys, argv, message) -> None:
    args = parse(["history", str(saved), *argv])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_history_command_bad_file_and_missing_source(tmp_path, capsys) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text('{"format": "runtimed-inspector key history", "entries": {}, "dropped": "x"}')
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"format": "runtimed-inspector key history", "entries": [{"source": 1}]}')
    for argv in ([str(bad)], [str(other)], [str(wrong)], [str(tmp_path / "missing.json")], []):
        args = parse(["history", *argv, "--comm", "c", "--key", "value"])
        assert args.func(args) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "either FILE or --notebook" in err


def test_saved_history_round_trips(saved) -> None:
    store = KeyHistory.load(saved)
    buf = io.StringIO()
    history_cli.show(store, "3f9c", "value", True, out=buf)
    assert json.loads(buf.getvalue())["entries"][0]["carrier"] == "msg m0"


def test_real_2_9_0_replayed_through_the_core_gives_the_key_story() -> None:
    """The v4 path on traffic captured from the real runtimed 2.9.0, replayed through the session
    core with its recorded times (no daemon, no adapter of our own): the core's key history holds
    the state document's 7 with its writer, the `echo_update` 5 carried by its frame and tied to
    its timeline event, and presence names the peer behind an actor."""
    from test_v4_session_replay import ROOM, SLIDER, FileDriver, interactive_status, s2c

    from inspector import events as ev
    from inspector.divergence import DivergenceOptions, SettleConfig
    from inspector.history_feed import HistoryOptions
    from inspector.session_core import SessionConfig, SessionCore

    core = SessionCore(SessionConfig("replay.sock", ROOM, resolve_blobs=False, keep_frame_bodies=False,
                                     divergence=DivergenceOptions(SettleConfig()), history=HistoryOptions()))
    frames = list(s2c(5))
    core.begin(4, t=frames[0][1])
    core.bootstrap(frames[0][0], frames[0][1])
    drv = FileDriver(core)
    for payload, t, _f in frames[1:]:
        if t >= 7.13 and core.state != "live":
            drv.feed(interactive_status(), t)  # see test_v4_session_replay: the daemon's status
        drv.feed(payload, t)
    drv.until(frames[-1][1] + 3)
    assert core.history is not None
    store = core.history.history
    (echo,) = store.series(SLIDER, "value", "echo")
    assert (echo.value, echo.t) == (5, 9.1274)
    assert echo.carrier and echo.carrier.startswith("frame ")
    (event,) = [e for e in core.log.events() if e.seq == echo.event_seq]
    assert event.kind == ev.BROADCAST and event.data["event"] == "comm"
    state = store.series(SLIDER, "value", "state")
    assert [e.value for e in state] == [7] and state[0].writer  # the kernel's 7, never followed to 5
    assert core.history.peers["local:root/agent:fixture-capture:029d5e2c"] == "fixture-capture"
    assert store.blame(SLIDER, "value")["moved_last"] == "echo"
    # the state document never followed the echo: an open interval the plot shades
    assert core.history.divergence_intervals(SLIDER, "value")
    # the snapshot carries the history's findings and latency block (the same for CLI and window)
    snap = core.snapshot()
    assert isinstance(snap.latency.get("hops"), dict) and snap.latency["dropped_history"] == 0
    assert list(snap.findings) == [f.to_json() for f in core.history.analyse()[1]]



def test_incremental_analysis_equals_the_whole_store_analysis() -> None:
    """What the snapshot carries (`SessionHistory.analyse`, fed only new entries per call) is what
    `latency_block` and `detect` say over the whole store, however the calls fall."""
    from inspector import history_findings as hf
    from inspector.hop_latency import latency_block

    sh = SessionHistory()
    sweep(sh.history, "c1", n=6)
    first, _found = sh.analyse()
    sweep(sh.history, "c2", n=10, lag=0.7)
    for v in (3, 4, 3):  # a go-back on c1
        sh.history.append("kernel", "c1", "value", v, 50.0 + v)
    block, found = sh.analyse()
    assert block == latency_block(sh.history)
    assert first["hops"] != block["hops"]  # the second call saw the new entries
    assert sorted((f.kind, f.comm_id, f.source, f.count) for f in found) == sorted(
        (f.kind, f.comm_id, f.source, f.count) for f in hf.detect(sh.history))
    assert {f.kind for f in found} >= {"value_regression", "slow_hop"}
    assert sh.analyse() == (block, found)  # nothing new: the same answer
    sh.history.append("kernel", "c2", "value", 99, 80.0)  # only c2 moves: c1's findings stay
    _block, again = sh.analyse()
    assert sorted((f.kind, f.comm_id, f.source, f.count) for f in again) == sorted(
        (f.kind, f.comm_id, f.source, f.count) for f in hf.detect(sh.history))
    assert {f.comm_id for f in again if f.kind == "value_regression"} >= {"c1"}
