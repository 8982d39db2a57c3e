"""Key histories fed from real traffic: the testbed daemon with a real ipykernel, the inspector's
session core with its divergence binding and key history, the kernel tap on IOPub."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from waiting import wait_until

from inspector import history_findings as hf
from inspector.divergence import DivergenceOptions, SessionDivergence, SettleConfig
from inspector.history_feed import HistoryOptions, SessionHistory
from inspector.hop_latency import latency_block
from inspector.key_history import KeyHistory
from inspector.session import PeerSession, SessionConfig
from inspector.testbed import Testbed

pytestmark = pytest.mark.kernel

SLIDER = "import ipywidgets as w\ns = w.IntSlider(value=1, max=5000)"


@dataclass
class Live:
    tb: Testbed
    nid: str
    session: PeerSession
    sd: SessionDivergence
    hist: SessionHistory

    @property
    def store(self) -> KeyHistory:
        return self.hist.history

    def slider(self) -> str:
        (cid,) = [r.comm_id for r in self.tb.comm_state(self.nid) if r.model_name == "IntSliderModel"]
        return cid

    def values(self, cid: str, source: str, key: str = "value") -> list:
        return [e.value for e in self.store.series(cid, key, source)]


@contextlib.asynccontextmanager
async def live_room(fault: str | None = None) -> AsyncIterator[Live]:
    d = tempfile.mkdtemp(prefix="rti-kh-", dir="/tmp")
    tb = Testbed(os.path.join(d, "rt.sock"), faults=[fault] if fault else [], auto_launch=False,
                 write_daemon_json=False)
    await tb.start()
    session = task = None
    try:
        nid = tb.create_room()
        await tb.launch_kernel(nid)
        await tb.wait_kernel(nid)
        # the core keeps the history, fed by its own inputs (as a replayed recording would be)
        session = PeerSession(SessionConfig(
            tb.socket_path, nid, allow_kernel_launch=True, history=HistoryOptions(),
            divergence=DivergenceOptions(SettleConfig(), tb.room(nid).kernel.km.connection_file)))
        task = asyncio.create_task(session.run())
        await session.wait_settled(0.1, 30)
        assert session.divergence is not None and session.history is not None
        sd, hist = session.divergence, session.history
        while session.tap is None or session.tap.received == 0:  # the SUB socket only sees what is published after it joined
            await tb.run_cell(nid, "1")
        yield Live(tb, nid, session, sd, hist)
    finally:
        if session is not None:
            await session.stop()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await tb.stop()
        shutil.rmtree(d, ignore_errors=True)


async def test_slider_loop_of_200_gives_200_kernel_values_in_order_with_writers() -> None:
    async with live_room() as r:
        await r.tb.run_cell(r.nid, SLIDER)
        cid = r.slider()
        await r.tb.run_cell(r.nid, "for i in range(200):\n    s.value = 1000 + i")
        await wait_until(lambda: r.values(cid, "doc")[-1:] == [1199] and r.values(cid, "feed")[-1:] == [1199],
                         "the doc and the feed to reach 1199", timeout=30)
        kernel = r.store.series(cid, "value", "kernel")
        assert [e.value for e in kernel] == [1] + list(range(1000, 1200))  # the open, then the loop
        assert all(e.writer == "kernel" for e in kernel)
        ids = [e.carrier for e in kernel]
        assert all(c and c.startswith("msg ") for c in ids) and len(set(ids)) == len(ids)
        assert [e.t for e in kernel] == sorted(e.t for e in kernel)
        # the document: values in order (it may coalesce), each with its writer and carrying frame
        doc = r.store.series(cid, "value", "doc")
        assert [e.value for e in doc] == sorted(e.value for e in doc) and doc[-1].value == 1199
        assert all(e.writer and e.carrier and e.carrier.startswith("frame ") for e in doc)
        assert all(e.event_seq is not None for e in doc)
        # the broadcasts carried every update, each tied to its timeline event
        feed = r.store.series(cid, "value", "feed")
        assert [e.value for e in feed] == [1] + list(range(1000, 1200))
        assert len({e.event_seq for e in feed}) == len(feed)
        blame = r.store.blame(cid, "value")
        assert blame["kernel_word"] == 1199 and blame["differ_from_kernel"] == []
        assert set(blame["agree_with_kernel"]) == {"doc", "feed"}
        lat = latency_block(r.store)
        # most broadcasts are matched; one heard before the tap heard its IOPub message has no sample
        assert lat["hops"]["kernel→doc"]["n"] >= 1 and lat["hops"]["kernel→feed"]["n"] >= 150
        assert not [f for f in hf.detect(r.store, comm_id=cid) if f.kind == hf.VALUE_REGRESSION]


async def test_a_lagging_document_shows_in_the_latency_figures() -> None:
    async with live_room("doc-delay-ms=400") as r:
        await r.tb.run_cell(r.nid, SLIDER)
        cid = r.slider()
        await r.tb.run_cell(r.nid, "import time\nfor i in range(10):\n    s.value = 100 + i\n    time.sleep(0.05)")
        await wait_until(lambda: r.values(cid, "doc")[-1:] == [109], "the delayed doc to reach 109", timeout=30)
        hops = latency_block(r.store)["hops"]
        doc, feed = hops["kernel→doc"], hops["kernel→feed"]
        # the tap hears IOPub a little after the daemon does, so the hop can read a bit under 400
        assert doc["n"] >= 5 and doc["p50_ms"] >= 360, doc
        assert feed["p50_ms"] < 200, feed  # the broadcasts are not delayed: the lag is the doc's
        # 400 ms lands in the (200, 500] bucket or above; the feed's values below it
        edges = doc["histogram"]["edges_ms"]
        slow = sum(c for e, c in zip(edges + [float("inf")], doc["histogram"]["counts"], strict=True) if e > 200)
        assert slow == doc["n"]
        slow_hops = [f for f in hf.detect(r.store, hf.Thresholds(slow_hop_ms=300), comm_id=cid)
                     if f.kind == hf.SLOW_HOP]
        (value,) = [f for f in slow_hops if f.key == "value" and f.source == "kernel→doc"]
        assert value.count >= 5 and all(e.source in ("kernel", "doc") for e in value.rows)
        feed_slow = [f for f in slow_hops if f.key == "value" and f.source == "kernel→feed"]
        assert sum(f.count for f in feed_slow) < value.count  # the lag is the doc's, not the feed's


async def test_a_scripted_regression_and_rewrites_are_detected() -> None:
    async with live_room() as r:
        await r.tb.run_cell(r.nid, SLIDER)
        cid = r.slider()
        await r.tb.run_cell(r.nid, "s.value = 5\ns.value = 6\ns.value = 5\ns.send_state('value')\n"
                                   "s.send_state('value')")
        await wait_until(lambda: r.values(cid, "feed")[-5:] == [5, 6, 5, 5, 5], "the feed to see all five",
                         timeout=30)
        found = hf.detect(r.store, comm_id=cid, key="value")
        regress = {f.source for f in found if f.kind == hf.VALUE_REGRESSION}
        assert {"kernel", "feed"} <= regress
        (kr,) = [f for f in found if f.kind == hf.VALUE_REGRESSION and f.source == "kernel"]
        assert [e.value for e in kr.rows] == [5, 6, 5] and "went back from 6 to the older 5" in kr.detail
        noop = {f.source: f.count for f in found if f.kind == hf.NOOP_REWRITE}
        assert noop.get("kernel") == 2 and noop.get("feed") == 2


async def test_a_divergence_is_an_interval_on_the_key_and_blame_reads_the_histories() -> None:
    async with live_room("doc-drop-update:IntSliderModel") as r:
        await r.tb.run_cell(r.nid, SLIDER)
        cid = r.slider()
        await r.tb.run_cell(r.nid, "s.value = 7")
        await wait_until(lambda: r.hist.divergence_intervals(cid, "value"), "the divergence on value", timeout=20)
        ((start, end),) = r.hist.divergence_intervals(cid, "value")
        assert end is None  # still diverged: the doc never got 7
        kernel7 = r.store.last(cid, "value", "kernel")
        assert kernel7.value == 7 and start >= kernel7.t
        blame = r.store.blame(cid, "value")
        assert blame["kernel_word"] == 7 and blame["agree_with_kernel"] == ["feed"]
        assert blame["differ_from_kernel"] == ["doc"] and blame["last"]["doc"]["value"] == 1


async def test_history_command_on_a_live_room(tmp_path, capsys) -> None:
    import argparse
    import json

    from inspector import history_cli

    d = tempfile.mkdtemp(prefix="rti-khc-", dir="/tmp")
    tb = Testbed(os.path.join(d, "rt.sock"), auto_launch=False, write_daemon_json=False)
    await tb.start()
    try:
        nid = tb.create_room()
        await tb.launch_kernel(nid)
        await tb.wait_kernel(nid)
        await tb.run_cell(nid, SLIDER)
        (cid,) = [c.comm_id for c in tb.comm_state(nid) if c.model_name == "IntSliderModel"]
        parser = argparse.ArgumentParser(prog="runtimed-inspector")
        history_cli.add_parser(parser.add_subparsers(dest="command"))
        saved = tmp_path / "h.json"
        args = parser.parse_args(["history", "--socket", tb.socket_path, "--notebook", nid, "--for", "3",
                                  "--comm", cid[:8], "--key", "value", "--json", "--save", str(saved),
                                  "--kernel-connection", tb.room(nid).kernel.km.connection_file])
        # Collect garbage here, on the main thread: Qt objects left in reference cycles by earlier
        # GUI tests must not be freed by a collection in the command's thread (a QObject freed
        # off its thread leaves its timers dangling in the main thread's event loop).
        gc.collect()
        command = asyncio.create_task(asyncio.to_thread(args.func, args))
        seen = {"out": "", "err": ""}

        def said(text: str) -> bool:
            got = capsys.readouterr()
            seen["out"] += got.out
            seen["err"] += got.err
            return text in seen["err"]

        # the join converges once the room is quiet for a moment: move the slider only after it
        await wait_until(lambda: said("history: watching room"), "the command to join", timeout=20)
        while not command.done():  # the kernel keeps moving the slider while the command watches
            await tb.run_cell(nid, "s.value += 1")
        assert await command == 0
        said("")
        out = json.loads(seen["out"])
        assert out["comm_id"] == cid
        by = {}
        for e in out["entries"]:
            by.setdefault(e["source"], []).append(e["value"])
        assert {"kernel", "doc", "feed"} <= set(by)
        assert len(by["kernel"]) >= 3 and by["kernel"] == sorted(by["kernel"])
        # the other views hold the kernel's values, in order (the last may still be in flight when
        # the watch ends)
        for view in ("doc", "feed"):
            moved = [v for v in by[view] if v > by["kernel"][0]]
            assert moved == sorted(moved) and set(moved) <= set(by["kernel"]) and moved, view
        assert [e.value for e in KeyHistory.load(saved).series(cid, "value")] == [
            e["value"] for e in out["entries"]]
    finally:
        await tb.stop()
        shutil.rmtree(d, ignore_errors=True)


async def test_check_lists_history_warnings_and_fails_on_them_only_when_strict(capsys) -> None:
    """A scripted go-back (5, 6, 5) during `check`: a `value_regression` warning line; exit 0, and
    exit 1 under `--strict` (history findings are warnings, facts about one view)."""
    from inspector import cli

    d = tempfile.mkdtemp(prefix="rti-khk-", dir="/tmp")
    tb = Testbed(os.path.join(d, "rt.sock"), auto_launch=False, write_daemon_json=False)
    await tb.start()
    try:
        nid = tb.create_room()
        await tb.launch_kernel(nid)
        await tb.wait_kernel(nid)
        await tb.run_cell(nid, SLIDER)
        (cid,) = [c.comm_id for c in tb.comm_state(nid) if c.model_name == "IntSliderModel"]
        gc.collect()  # Qt garbage of earlier tests goes on this thread, not the command's
        for strict, code in ((False, 0), (True, 1)):
            argv = ["check", "--socket", tb.socket_path, "--notebook", nid, "--for", "2"] + (
                ["--strict"] if strict else [])
            command = asyncio.create_task(asyncio.to_thread(cli.main, argv))
            err = ""
            while "check: watching room" not in err:
                await asyncio.sleep(0.05)
                err += capsys.readouterr().err
                assert not command.done(), err
            low, high = (5, 6) if not strict else (8, 9)  # each run moves the slider away first
            await tb.run_cell(nid, f"s.value = {low}\ns.value = {high}\ns.value = {low}")
            assert await command == code
            got = capsys.readouterr()
            warn = [ln for ln in got.out.splitlines() if ln.startswith("warning:")]
            assert any(ln.startswith(f"warning: {cid}  value  value_regression  [feed]") for ln in warn), got.out
            assert "history warning(s)" in got.err
    finally:
        await tb.stop()
        shutil.rmtree(d, ignore_errors=True)
