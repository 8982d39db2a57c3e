"""A slider storm for the recorder's tests and benchmarks: the testbed's notebook document (4
cells, one IntSlider comm) changed 60 times a second, each update producing the frames a v2
session sees (the daemon's sync message, the inspector's sync reply, the `comm` broadcast), all
real Automerge in-process; and `core_run`, the session core fed those frames (with the recording
option, it writes a recording as a live session would)."""

from __future__ import annotations

import json
import time

from automerge import core as am

from inspector.protocol import messages as m
from inspector.testbed.notebook_doc import NotebookDoc

RATE = 60  # updates per second
COMM = "0" * 31 + "1"


class Storm:
    """The daemon side: a notebook document with a slider, and the frames each update makes."""

    def __init__(self, comms: int = 1) -> None:
        self.doc = NotebookDoc.new("bench-notebook")
        for i in range(4):
            self.doc.append_cell("code", f"import ipywidgets as w\ns{i} = w.IntSlider()")
        self.state = {"_model_module": "@jupyter-widgets/controls", "_model_name": "IntSliderModel",
                      "value": 0, "description": "n", "max": 10**9}
        # the first comm is COMM; more sliders (a longer session's) are COMM with another last digit
        self.comms = [COMM] + [f"{k + 2:032x}" for k in range(comms - 1)]
        for seq, cid in enumerate(self.comms, 1):
            self.doc.put_comm(cid, "jupyter.widget", "@jupyter-widgets/controls", "IntSliderModel",
                              json.dumps(self.state), seq)
        self.sync = am.SyncState()
        # the inspector's side of the storm: a plain Automerge peer (what it receives and
        # replies is the same; the inspector's own cost is measured in `bare_handling`)
        self.peer = am.Document()
        self.peer_sync = am.SyncState()
        self.n = 0
        self.initial = self._converge()  # the join: part of every recording of the storm

    def _round(self, frames: list[tuple[str, bytes]]) -> bool:
        """One sync round (the daemon's message, the peer's reply) appended to `frames`; False
        once neither side had anything to say."""
        msg = self.doc.doc.generate_sync_message(self.sync)
        if msg is not None:
            frames.append(("in", b"\x00" + msg.encode()))
            self.peer.receive_sync_message(self.peer_sync, msg)
        reply = self.peer.generate_sync_message(self.peer_sync)
        if reply is not None:
            frames.append(("out", b"\x00" + reply.encode()))
            self.doc.doc.receive_sync_message(self.sync, reply)
        return msg is not None or reply is not None

    def _converge(self) -> list[tuple[str, bytes]]:
        frames: list[tuple[str, bytes]] = []
        for _ in range(20):
            if not self._round(frames):
                break
        return frames

    def update(self) -> list[tuple[str, bytes]]:
        """One slider move: (direction, typed payload) of each frame, in order."""
        self.n += 1
        self.state["value"] = self.n
        self.doc.update_comm_state(COMM, json.dumps(self.state))
        frames: list[tuple[str, bytes]] = []
        self._round(frames)
        bc = {"event": "comm", "msg_type": "comm_msg", "content": {"comm_id": COMM, "data": {
            "method": "update", "state": {"value": self.n}, "buffer_paths": []}}, "buffers": []}
        frames.append(("in", b"\x03" + m.encode_json(bc)))
        return frames


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def sync_message(heads: list[bytes], changes: list[bytes]) -> bytes:
    """An Automerge sync message (type 0x42): heads, no need, one have (synced up to `heads`, an
    empty filter: the sender holds everything up to them, so the receiver has nothing to send
    back), the changes."""
    return b"".join([b"\x42", _uleb(len(heads)), *heads, _uleb(0), _uleb(1), _uleb(len(heads)), *heads, _uleb(0),
                     _uleb(len(changes)), *(_uleb(len(c)) + c for c in changes)])


class LongStorm(Storm):
    """The same storm for a long recording. Automerge's sync protocol costs more per message as
    the history grows (120 us per update at first, 900 us after 12,000 here), which would make a
    30-minute storm take hours to generate; so after the join each update is sent as the sync
    message the daemon would send (the new change, the heads) built directly, with the peer's
    acknowledgement (its heads, no changes)."""

    def update(self, comm: int = 0) -> list[tuple[str, bytes]]:
        """One move of slider `comm` (an index into `comms`)."""
        cid = self.comms[comm]
        self.n += 1
        self.state["value"] = self.n
        before = self.doc.doc.get_heads()
        self.doc.update_comm_state(cid, json.dumps(self.state))
        changes = [bytes(c.raw_bytes) for c in self.doc.doc.get_changes(before)]
        heads = [bytes(h) for h in self.doc.doc.get_heads()]
        bc = {"event": "comm", "msg_type": "comm_msg", "content": {"comm_id": cid, "data": {
            "method": "update", "state": {"value": self.n}, "buffer_paths": []}}, "buffers": []}
        return [("in", b"\x00" + sync_message(heads, changes)), ("out", b"\x00" + sync_message(heads, [])),
                ("in", b"\x03" + m.encode_json(bc))]


def gen_minute(seconds: float = 60.0) -> list[tuple[str, bytes]]:
    storm = Storm()
    out = list(storm.initial)
    for _ in range(int(seconds * RATE)):
        out.extend(storm.update())
    return out


def core_run(frames: list[tuple[str, bytes]], path: str | None, times: list[float] | None = None) -> float:
    """Seconds per daemon frame in the session core itself (v2 profile, the divergence engine,
    the event log), with the recording option declared (`path`: the ring and a file) or not:
    the overhead a session pays, measured where it is paid. Frame i arrives at `times[i]`, or
    at i / (3 * RATE) seconds (three frames an update)."""
    import argparse

    from inspector.cli import divergence_options
    from inspector.recording.session_recording import RecordingOptions
    from inspector.session_core import SessionConfig, SessionCore

    # the engine as a `check` without flags runs it
    core = SessionCore(SessionConfig("bench.sock", "bench", resolve_blobs=False, keep_frame_bodies=False,
                                     divergence=divergence_options(argparse.Namespace()),
                                     recording=RecordingOptions(file=path) if path else None))
    # the core's clock is the monotonic clock, as live (the recording's start is read from it)
    t_start = time.monotonic()
    core.begin(2, t=t_start)
    core.bootstrap(b'{"protocol":"v2","protocol_version":2,"daemon_version":"bench"}', t_start)
    n = 0
    t0 = time.perf_counter()
    for i, (direction, payload) in enumerate(frames):
        if direction != "in":
            continue  # the core makes its own replies
        t = t_start + (times[i] if times is not None else i / (3 * RATE))
        due = core.next_deadline()
        if due is not None and due <= t:
            core.tick(t)
        step = core.receive(payload, t)
        for ft, body, doc in step.send:
            core.sent(ft, body, doc, t)
        n += 1
    spent = time.perf_counter() - t0
    if core.recording is not None:
        core.recording.finish()
    return spent / n


