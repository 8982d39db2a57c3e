"""Real traffic for the recorder's tests: the testbed daemon (real kernel and widgets), the
inspector's own session joined through a recording tap, everything recorded to a file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from inspector import __version__
from inspector.divergence import DivergenceOptions, SessionDivergence, SettleConfig
from inspector.recording import Meta, Recorder, Replicas
from inspector.recording.wire_tap import WireTap
from inspector.session import PeerSession, SessionConfig
from inspector.testbed import Testbed

SLIDER = "import ipywidgets as w\ns = w.IntSlider(value=1, description='secret-label-314')"


@dataclass
class RecordedRoom:
    tb: Testbed
    nid: str
    session: PeerSession
    sd: SessionDivergence
    recorder: Recorder
    tap: WireTap
    path: str
    dir: str

    async def settle(self, timeout: float = 15.0) -> None:
        """Until the session is quiet and the engine has nothing pending."""
        start = time.monotonic()
        while not (self.sd.engine.next_deadline() is None and self.session.settled(0.2)):
            if time.monotonic() - start > timeout:
                raise AssertionError("the session did not settle")
            self.sd.run()
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def recorded_room(fault: str | None = None, checkpoint_interval: float = 1.0,
                        kernel: bool = True, checkpoint_records: int = 10) -> AsyncIterator[RecordedRoom]:
    d = tempfile.mkdtemp(prefix="rti-rec-", dir="/tmp")
    tb = Testbed(os.path.join(d, "rt.sock"), faults=[fault] if fault else [], auto_launch=False,
                 write_daemon_json=False)
    await tb.start()
    session = task = None
    recorder = None
    replicas = Replicas()
    path = os.path.join(d, "session.rtirec")
    recorder = Recorder(Meta(__version__, time.time(), time.monotonic(), socket=tb.socket_path),
                        checkpoint=lambda mono, wall: replicas.checkpoint(mono, wall),
                        checkpoint_interval=checkpoint_interval, checkpoint_records=checkpoint_records)
    tap = WireTap(os.path.join(d, "tap.sock"), tb.socket_path, recorder, replicas)
    await tap.start()
    try:
        nid = tb.create_room()
        if kernel:
            await tb.launch_kernel(nid)
            await tb.wait_kernel(nid)
        recorder.update_meta(notebook_id=nid)
        recorder.start_file(path)
        session = PeerSession(SessionConfig(tap.listen_path, nid, allow_kernel_launch=True,
                                            divergence=DivergenceOptions(SettleConfig(), None)))
        task = asyncio.create_task(session.run())
        await session.wait_settled(0.1, 30)
        sd = session.divergence
        assert sd is not None
        recorder.update_meta(protocol=session.profile.name if session.profile else None,
                             protocol_version=session.probe.protocol_version if session.probe else None,
                             daemon_version=session.daemon_version)
        yield RecordedRoom(tb, nid, session, sd, recorder, tap, path, d)
    finally:
        if session is not None:
            await session.stop()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await tap.stop()
        recorder.close()
        await tb.stop()


def cleanup(room: RecordedRoom) -> None:
    shutil.rmtree(room.dir, ignore_errors=True)


# A notebook whose code, outputs and widget strings are recognisable, so tests can look for them.
SECRETS = {
    "source": "SOURCE_SECRET_5501",
    "description": "secret-label-314",
    "text_value": "classified-value-271",
    "printed": "printed-secret-161",
}
SETUP = (f"# {SECRETS['source']}\nimport ipywidgets as w\n"
         f"s = w.IntSlider(value=1, description='{SECRETS['description']}')\n"
         f"t = w.Text(value='{SECRETS['text_value']}')")
ACTIONS = ["s.value = 7", f"print('{SECRETS['printed']}')", "s.value = 9"]


@dataclass
class Recorded:
    """A finished recording of the testbed and what the live session saw."""

    path: str
    dir: str
    nid: str
    heads: list[str]  # the session's notebook replica at the end
    snapshot: dict
    divergences: list[dict]
    frames_tapped: int
    session_frames: tuple[int, int, int, int]  # what the session logged: frames in/out, bytes in/out
    comm_ids: dict[str, str]  # model name -> comm id


def record_testbed(fault: str | None = None, checkpoint_interval: float = 0.5) -> Recorded:
    """Run the scenario against the testbed (fault optional) and record it; synchronous, for
    module-scoped fixtures (one kernel per test module)."""
    import msgspec

    from inspector import events as ev

    async def main() -> Recorded:
        async with recorded_room(fault, checkpoint_interval) as r:
            r.session.log.subscribe(lambda e: r.recorder.mark(e.summary, {"divergences": e.data.get("divergences", [])},
                                                              e.t) if e.kind == ev.DIVERGENCE else None)
            await r.tb.run_cell(r.nid, SETUP)
            for cell in ACTIONS:
                await r.tb.run_cell(r.nid, cell)
            await r.settle()
            snap = r.session.snapshot().to_json()
            divs = [msgspec.to_builtins(d) for d in r.sd.divergences(include_pending=False)]
            return Recorded(r.path, r.dir, r.nid, list(r.session.replicas[0].heads), snap, divs, r.tap.frames,
                            (r.session.log.frames_in, r.session.log.frames_out, r.session.log.bytes_in,
                             r.session.log.bytes_out),
                            {c.model_name: c.comm_id for c in r.tb.comm_state(r.nid)})

    return asyncio.run(main())


REAL_FRAMES = os.path.join(os.path.dirname(__file__), "fixtures", "real-runtimed-2.9.0", "frames.jsonl")


def frame_log_records(path: str = REAL_FRAMES) -> list:
    """The real runtimed 2.9.0 capture (`frames.jsonl`, written by a byte-forwarding proxy) as
    recording records. Binary payloads are byte-exact; the capture kept JSON frames decoded, so
    those are re-encoded compactly (the same JSON, not always the same spacing)."""
    import json

    from inspector.recording.records import IN, OUT, PREAMBLE, TYPED, UNTYPED, Connection, Frame, Meta

    out: list = [Meta("capture", 1_700_000_000.0, 0.0, protocol="v4", protocol_version=4,
                      daemon_version="2.9.0+9c85319")]
    with open(path) as fh:
        for line in fh:
            d = json.loads(line)
            t = d["t"]
            if d["kind"] == "eof":
                out.append(Connection(d["conn"], "close", t, 1_700_000_000.0 + t, detail=d["dir"]))
                continue
            if "hex" in d:
                payload = bytes.fromhex(d["hex"])
            else:
                body = json.dumps(d["json"], separators=(",", ":"), ensure_ascii=False).encode()
                payload = bytes([d["frame_type"]]) + body if d["kind"] == "typed" else body
            kind = {"preamble": PREAMBLE, "typed": TYPED}.get(d["kind"], UNTYPED)
            out.append(Frame(d["conn"], IN if d["dir"] == "s2c" else OUT, kind, t, 1_700_000_000.0 + t,
                             payload, len(payload)))
    return out
