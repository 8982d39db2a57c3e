"""The session core, the v4 profile and the divergence binding on traffic captured from the real
runtimed 2.9.0, without a daemon: the frames of one connection go to `SessionCore` with their
recorded times, exactly as the socket driver gives them (the core's replies are not sent
anywhere: the daemon's side is the recording).

Connection 5 of the capture joined the room read-only, then sent `send_comm` with
`{"value": 5}` to the IntSlider; the kernel applied and echoed it (`echo_update`) while the
CommsDoc kept 7. That is the divergence a user must see: state 7, echo 5.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inspector.divergence import DivergenceOptions, SettleConfig
from inspector.document import DocError, parse_sync_message
from inspector.errors import ProtocolMismatch
from inspector.protocol.framing import FrameType
from inspector.session_core import LIVE, SYNCING, SessionConfig, SessionCore

FIX = Path(__file__).resolve().parent / "fixtures" / "real-runtimed-2.9.0"
ROOM = "d900ce5a-9534-4c83-942f-30ab009399e3"
SLIDER = "ef5b619c16ab471cba317b2a88731725"
LAYOUT = "11a1b029c01949b48e91e4cb01f036d8"
JOINED_AT = 7.13  # every document of the join has arrived (the pool's next update is at 8.35 s)


def _frames(conn: int) -> list[dict[str, Any]]:
    return [f for line in (FIX / "frames.jsonl").read_text().splitlines()
            if (f := json.loads(line))["conn"] == conn]


def payload_of(f: dict[str, Any]) -> bytes:
    """A recorded frame's payload (type byte + body); JSON frames were stored parsed."""
    if "hex" in f:
        return bytes.fromhex(f["hex"])
    body = json.dumps(f["json"]).encode()
    return body if f["kind"] == "json" else bytes([f["frame_type"]]) + body


def interactive_status() -> bytes:
    """The `sync_status` the daemon sends a peer that acknowledged every document (connection 2).

    Connection 5's raw client answered only each document's first message, so the daemon never
    told it `interactive`; the inspector acknowledges every message, and gets this."""
    st = next(f for f in _frames(2) if f.get("json", {}).get("notebook_doc") == "interactive")
    return payload_of(st)


class FileDriver:
    """Recorded frames with recorded times into a core; timers run at their deadlines."""

    def __init__(self, core: SessionCore) -> None:
        self.core = core

    def until(self, t: float) -> None:
        while (due := self.core.next_deadline()) is not None and due <= t:
            self.core.tick(due)

    def feed(self, payload: bytes, t: float) -> None:
        self.until(t)
        self.core.receive(payload, t)


def s2c(conn: int) -> Iterator[tuple[bytes, float, dict[str, Any]]]:
    for f in _frames(conn):
        if f["dir"] == "s2c" and f["kind"] in ("json", "typed"):
            yield payload_of(f), f["t"], f


@pytest.fixture()
def core() -> SessionCore:
    cfg = SessionConfig("replay.sock", ROOM, resolve_blobs=False, keep_frame_bodies=False,
                        divergence=DivergenceOptions(SettleConfig()))
    return SessionCore(cfg)


def join(core: SessionCore) -> tuple[FileDriver, list[tuple[bytes, float, dict[str, Any]]]]:
    """Bootstrap and every frame of the join; returns the frames after it."""
    frames = list(s2c(5))
    drv = FileDriver(core)
    core.begin(4, t=frames[0][1])
    core.bootstrap(frames[0][0], frames[0][1])
    rest = frames[1:]
    n = sum(1 for _p, t, _f in rest if t < JOINED_AT)
    for payload, t, _f in rest[:n]:
        drv.feed(payload, t)
    return drv, rest[n:]


def test_live_only_once_documents_and_the_daemons_sync_status_say_so(core: SessionCore) -> None:
    frames = list(s2c(5))
    core.begin(4, t=frames[0][1])
    core.bootstrap(frames[0][0], frames[0][1])
    drv = FileDriver(core)
    states = []
    for payload, t, f in frames[1:]:
        drv.feed(payload, t)
        states.append((f.get("frame_type"), core.state))
        if f.get("frame_type") == FrameType.AUTOMERGE_SYNC and core.state == SYNCING and \
                len(payload) < 100:
            # the first message advertises the daemon's heads but carries no change
            assert parse_sync_message(payload[1:]).heads, "heads parsed"
            assert any("notebook document" in m for m in core.missing())
    # every document reached the daemon's heads, but the daemon never said `interactive`
    assert core.state == SYNCING
    missing = core.missing()
    assert missing == ["the daemon's sync_status (notebook_doc=syncing, runtime_state=ready; "
                       "ready is interactive/ready)"]
    snap = core.snapshot()
    assert snap.connection == SYNCING and snap.divergence == ()
    drv.feed(interactive_status(), frames[-1][1] + 0.001)
    assert core.state == LIVE and core.missing() == []


def test_the_tree_after_the_join(core: SessionCore) -> None:
    drv, _rest = join(core)
    drv.feed(interactive_status(), JOINED_AT)
    assert core.state == LIVE
    snap = core.snapshot()
    assert snap.daemon.protocol_version == 4 and snap.daemon.daemon_version == "2.9.0+9c85319"
    assert [c.source for c in snap.cells] == ["", "1 + 1",
                                              "import ipywidgets as w\ns = w.IntSlider(value=3, min=0, max=10, "
                                              "description='n')\ns",
                                              "s.value = 7\ns.value"]
    comms = {c.comm_id: c for c in snap.comms}
    slider = comms[SLIDER]
    assert slider.model_name == "IntSliderModel" and slider.target_name == "jupyter.widget"
    assert slider.state["value"] == 7 and slider.state["description"] == "n"
    assert slider.state["layout"] == f"IPY_MODEL_{LAYOUT}" and LAYOUT in comms
    assert {d.name for d in snap.documents} == {"notebook", "runtime_state", "comms", "comments", "pool_state"}
    assert snap.sources == ("topology", "state", "echo")
    # a joined room whose views agree: nothing diverged, nothing pending after the settle window
    drv.until(JOINED_AT + 1.0)
    assert core.snapshot().divergence == ()


def test_send_comm_echo_is_a_state_mismatch_on_value(core: SessionCore) -> None:
    drv, rest = join(core)
    drv.feed(interactive_status(), JOINED_AT)
    echo_t = None
    for payload, t, f in rest:
        drv.feed(payload, t)
        if f.get("frame_type") == FrameType.BROADCAST:
            echo_t = t
            pending = core.snapshot().divergence
            assert [(d.comm_id, d.kind, d.status) for d in pending] == [(SLIDER, "pending", "pending")]
    assert echo_t is not None
    drv.until(echo_t + 1.0)  # past the settle window, with no frame in between
    snap = core.snapshot()
    [d] = snap.divergence
    assert (d.comm_id, d.kind, d.severity, d.status) == (SLIDER, "state_mismatch", "error", "diverged")
    [key] = d.keys
    assert key.key == "value" and key.values == {"state": 7, "echo": 5}
    assert set(d.sides) == {"state", "echo"} and d.moved == "kernel"  # the kernel moved: its echo
    assert d.model_name == "IntSliderModel"
    # one DIVERGENCE event per transition: pending, then the verdict
    kinds = [e.data["after"] for e in core.log.events() if e.kind == "divergence"]
    assert kinds == [["pending"], ["state_mismatch"]]
    # the compare table's views: every named source of the comm, key by key
    views = core.divergence.key_views(SLIDER, echo_t + 1.0)
    assert views.sources == ("topology", "state", "echo") and views.meta == frozenset({"topology"})
    assert views.values["state"]["value"][0] == 7 and views.values["echo"]["value"] == (5, 1000.0)
    assert views.values["topology"]["_model_name"][0] == "IntSliderModel"


def test_the_same_frames_give_the_same_verdict_twice() -> None:
    """Two cores fed the same recording end in the same tree and the same divergence."""
    out = []
    for _ in range(2):
        c = SessionCore(SessionConfig("replay.sock", ROOM, resolve_blobs=False,
                                      divergence=DivergenceOptions(SettleConfig())))
        drv, rest = join(c)
        drv.feed(interactive_status(), JOINED_AT)
        for payload, t, _f in rest:
            drv.feed(payload, t)
        drv.until(20.0)
        snap = c.snapshot(taken_at=0.0)
        out.append((snap.comms, snap.cells, snap.divergence, [(e.t, e.kind, e.summary) for e in c.log.events()]))
    assert out[0] == out[1]


def test_a_reconnect_starts_a_fresh_engine(core: SessionCore) -> None:
    drv, rest = join(core)
    drv.feed(interactive_status(), JOINED_AT)
    for payload, t, _f in rest:
        drv.feed(payload, t)
    drv.until(12.0)
    assert core.snapshot().divergence
    first = core.divergence
    core.end("disconnected", "reconnecting in 1 s", 12.0)
    # the daemon came back: the same room, joined again; the echo of the old connection is gone
    frames = list(s2c(5))
    core.begin(4, t=20.0)
    core.bootstrap(frames[0][0], 20.0)
    assert core.divergence is not first and core.snapshot().divergence == ()
    join_frames = [(p, t) for p, t, f in frames[1:] if t < 7.13]
    for payload, t in join_frames:
        drv.feed(payload, 20.0 + (t - frames[0][1]))
    drv.feed(interactive_status(), 20.1)
    drv.until(25.0)
    assert core.state == LIVE and core.snapshot().divergence == ()


def test_v2_reads_a_v4_document_frame_as_a_later_protocol_and_keeps_other_unknown_types() -> None:
    core = SessionCore(SessionConfig("replay.sock", ROOM))
    core.begin(2, t=0.0)
    core.bootstrap(json.dumps({"protocol": "v2", "protocol_version": 2}).encode(), 0.0)
    core.receive(bytes([0x7F]) + b"future", 0.1)
    errors = [e.summary for e in core.log.events() if e.kind == "error"]
    assert errors == ["unknown frame type 0x7f (7 B): kept, ignored"]
    assert core.log.frames()[-1].frame_type == 0x7F
    with pytest.raises(ProtocolMismatch, match="frame type 0x05"):
        core.receive(bytes([FrameType.RUNTIME_STATE_SYNC]) + b"\x42\x00", 0.2)


def test_kernel_connection_auto_on_v2_says_it_is_ignored() -> None:
    core = SessionCore(SessionConfig("replay.sock", ROOM, divergence=DivergenceOptions(kernel_connection="auto")))
    core.begin(2, t=0.0)
    notes = [e.summary for e in core.log.events()]
    assert len(notes) == 1 and notes[0].startswith("--kernel-connection auto is ignored")
    assert core.divergence is not None and core.divergence.tap_path is None


def test_advertised_heads_rejects_what_is_not_a_sync_message() -> None:
    # one parser: the replica's (the core reads `DocReplica.advertised_heads` / `.converged`)
    for bad in (b"", b"\x41\x00", b"\x42\x02" + b"\x00" * 32, b"\x42\x80"):
        with pytest.raises(DocError):
            parse_sync_message(bad)
    assert parse_sync_message(b"\x42\x01" + b"\x11" * 32 + b"\x00\x00\x00").heads == (b"\x11" * 32,)


def test_a_document_the_daemon_never_syncs_is_not_waited_for_once_it_says_ready(core: SessionCore) -> None:
    """A v4 build without the comments document: the join is done when the daemon says so."""
    frames = [x for x in s2c(5) if x[2].get("frame_type") != FrameType.COMMENTS_SYNC]
    core.begin(4, t=frames[0][1])
    core.bootstrap(frames[0][0], frames[0][1])
    drv = FileDriver(core)
    for payload, t, _f in frames[1:]:
        if t < JOINED_AT:
            drv.feed(payload, t)
    assert core.state == SYNCING
    drv.feed(interactive_status(), JOINED_AT)
    assert core.state == LIVE and core.replicas[FrameType.COMMENTS_SYNC].messages_in == 0


def test_a_document_started_but_not_at_the_daemons_heads_is_waited_for(core: SessionCore) -> None:
    frames = list(s2c(5))
    core.begin(4, t=frames[0][1])
    core.bootstrap(frames[0][0], frames[0][1])
    drv = FileDriver(core)
    first_comments = True
    for payload, t, f in frames[1:]:
        if t >= JOINED_AT:
            break
        if f.get("frame_type") == FrameType.COMMENTS_SYNC:
            if not first_comments:
                continue  # the comments document's content never arrives
            first_comments = False
        drv.feed(payload, t)
    drv.feed(interactive_status(), JOINED_AT)
    assert core.state == SYNCING
    assert core.missing() == ["the comments document (not at the daemon heads yet)"]
