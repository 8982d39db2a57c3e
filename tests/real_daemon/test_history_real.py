"""The key history on the real runtimed 2.9.0: the session core's history with the kernel tap
found from the room (`--kernel-connection auto`), the topology and state documents, and the
daemon's echo broadcasts."""

from __future__ import annotations

from waiting import wait_until

from inspector import history_findings as hf
from inspector.divergence import DivergenceOptions
from inspector.history_feed import HistoryOptions
from inspector.hop_latency import samples
from inspector.session import PeerSession, SessionConfig

BIG = "import ipywidgets as w\nbig = w.IntSlider(value=0, min=0, max=5000, description='big')\ndisplay(big)"


async def until(pred, timeout: float, what: str):
    return await wait_until(pred, what, timeout, poll=0.05)


def session_for(real_socket: str, nb: str) -> PeerSession:
    return PeerSession(SessionConfig(real_socket, nb, history=HistoryOptions(),
                                     divergence=DivergenceOptions(kernel_connection="auto")))


async def joined(s: PeerSession, room) -> None:
    await s.wait_settled(0.3, 30)
    await until(lambda: s.tap is not None and s.tap.state == "live", 15, "the kernel tap")
    while s.tap.received == 0:  # the SUB socket only sees what is published after it joined
        await room.acall(op="run", source="1")


def model(s: PeerSession, name: str, description: str | None = None) -> str | None:
    for c in s.snapshot().comms:
        if c.model_name == name and (description is None or (c.state or {}).get("description") == description):
            return c.comm_id
    return None


async def test_a_kernel_loop_of_200_values_in_order_with_writers(real_socket, widget_room):
    s = session_for(real_socket, widget_room.notebook_id)
    async with s.running():
        await joined(s, widget_room)
        assert (await widget_room.acall(op="run", source=BIG))["success"]
        await until(lambda: model(s, "IntSliderModel", "big"), 20, "the big slider in the room")
        cid = model(s, "IntSliderModel", "big")
        res = await widget_room.acall(op="run", source="for i in range(200):\n    big.value = 1000 + i")
        assert res["success"], res
        store = s.history.history
        await until(lambda: [e.value for e in store.series(cid, "value", "state")][-1:] == [1199], 30,
                    "the state document to reach 1199")
        kernel = store.series(cid, "value", "kernel")
        assert [e.value for e in kernel] == [0] + list(range(1000, 1200))  # the open, then the loop
        assert all(e.writer == "kernel" and e.carrier and e.carrier.startswith("msg ") for e in kernel)
        assert len({e.carrier for e in kernel}) == len(kernel)  # one IOPub message each
        state = store.series(cid, "value", "state")
        # the document coalesces; what it held went up in order, each with its writer and frame
        assert [e.value for e in state] == sorted(e.value for e in state)
        assert all(e.writer and e.carrier and e.carrier.startswith("frame ") and e.event_seq is not None
                   for e in state)
        assert store.blame(cid, "value")["kernel_word"] == 1199
        assert "state" in store.blame(cid, "value")["agree_with_kernel"]
        lat = s.snapshot().latency
        assert lat["comms"][cid]["kernel→state"]["n"] >= 1


async def test_send_comm_the_state_document_never_follows(real_socket, widget_room):
    """A frontend's `send_comm` reaches the kernel and comes back as `echo_update`; the comms
    document keeps the old value (runtimed 2.9.0): the history shows who moved and who did not,
    the kernel's new value has no kernel→state latency sample, and the key is diverged."""
    s = session_for(real_socket, widget_room.notebook_id)
    async with s.running():
        await joined(s, widget_room)
        cid = model(s, "IntSliderModel", "n")
        assert cid is not None
        store = s.history.history
        old = s.snapshot().comms
        old_value = next(c.state["value"] for c in old if c.comm_id == cid)
        new = 4 if old_value != 4 else 6
        try:
            await widget_room.acall(op="send_comm", comm_id=cid, state={"value": new})
            await until(lambda: store.last(cid, "value", "echo") and store.last(cid, "value", "kernel")
                        and store.last(cid, "value", "kernel").value == new, 20, "the kernel and the echo")
            await until(lambda: s.history.divergence_intervals(cid, "value"), 20, "the divergence interval")
            blame = store.blame(cid, "value")
            assert blame["kernel_word"] == new and "echo" in blame["agree_with_kernel"]
            assert "state" in blame["differ_from_kernel"] and blame["last"]["state"]["value"] == old_value
            late = [x for x in samples(store, comm_id=cid) if x.hop == "kernel→state" and x.far.value == new]
            assert late == []  # the document never followed: no sample, not a made-up figure
            ((start, end),) = s.history.divergence_intervals(cid, "value")
            assert end is None and start >= store.last(cid, "value", "kernel").t
        finally:
            await widget_room.acall(op="run", source=f"s.value = {old_value}")


async def test_a_scripted_value_regression_is_detected(real_socket, widget_room):
    s = session_for(real_socket, widget_room.notebook_id)
    async with s.running():
        await joined(s, widget_room)
        cid = model(s, "IntSliderModel", "n")
        assert cid is not None
        res = await widget_room.acall(op="run", source="s.value = 8\ns.value = 9\ns.value = 8")
        assert res["success"], res
        store = s.history.history
        await until(lambda: [e.value for e in store.series(cid, "value", "kernel")][-3:] == [8, 9, 8], 20,
                    "the kernel's three values")
        await until(lambda: any(f["kind"] == hf.VALUE_REGRESSION and f["comm_id"] == cid and f["source"] == "kernel"
                                for f in s.snapshot().findings), 10, "the regression finding")
        (f,) = [f for f in s.snapshot().findings if f["kind"] == hf.VALUE_REGRESSION and f["comm_id"] == cid
                and f["source"] == "kernel"]
        assert [r["value"] for r in f["rows"]] == [8, 9, 8] and f["severity"] == "warn"
        await widget_room.acall(op="run", source="s.value = 3")
