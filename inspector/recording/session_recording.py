"""Recording as a declared session option (`SessionConfig.recording`): the binding the session
core calls with every input it takes and every frame its driver writes, with the core's own
times, so that a recording drives the same core again (`inspector.replay_driver`).

What the core hands over, and how replay reads it back:

- `open`: a `Connection("open")` whose detail is JSON (protocol and daemon version, the room's
  kernel state from the pool listing), then the preamble and the handshake as OUT frames;
- each frame the daemon sent (the handshake reply first) as an IN frame, each frame written as
  an OUT frame; `tick(t)` as a `Timer("tick")`, a verified IOPub comm message as a `Kernel`
  record (channel `iopub`), kernel-tap news as a `Kernel` record (channel `event`);
- `close`: a `Connection("close")` whose detail is `state` or `state: detail`;
- divergence transitions as `Mark`s (for the timeline and the Wireshark comments; replay
  computes its own).

The ring is on whenever the option is declared (bounded by bytes and age); a file is written
from the start when `file` is set, or later with `start_file`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from .recorder import Recorder
from .records import IN, OUT, PREAMBLE, TYPED, UNTYPED, Checkpoint, Meta
from .replicas import doc_state
from .ring import RecordingRing

RING_BYTES = 64 * 1024 * 1024
RING_AGE = 600.0


@dataclass
class RecordingOptions:
    """The recording option of a session: the always-on ring's bounds and an optional file."""

    ring_bytes: int = RING_BYTES
    ring_age: float = RING_AGE  # seconds
    file: str | None = None  # record to this file from the session's start
    checkpoint_interval: float = 30.0
    checkpoint_records: int = 5000

    def limits(self) -> str:
        """The ring's bounds as a user reads them."""
        return f"the last {self.ring_age / 60:g} min, at most {self.ring_bytes / (1 << 20):g} MiB"


def _jsonable(v: Any) -> Any:
    return msgspec.to_builtins(v, enc_hook=str)


class SessionRecording:
    """One session's recorder, fed by the core (see the module docstring)."""

    def __init__(self, core: Any, options: RecordingOptions, inspector_version: str) -> None:
        self.core = core
        self.options = options
        cfg = core.config
        div = cfg.divergence
        extra: dict[str, Any] = {}
        if div is not None:
            # replay builds the engine with the same settle windows, so its verdicts are the live ones
            extra["divergence"] = {"settle": _jsonable(div.settle), "kernel_connection": div.kernel_connection}
        self.recorder = Recorder(
            Meta(inspector_version, time.time(), time.monotonic(), socket=cfg.socket_path,
                 notebook_id=cfg.notebook_id, extra=extra),
            ring=RecordingRing(options.ring_bytes, options.ring_age), checkpoint=self._checkpoint,
            checkpoint_interval=options.checkpoint_interval, checkpoint_records=options.checkpoint_records)
        self.conn = 0
        self._unsubscribe = core.log.subscribe(self._on_event)
        if options.file:
            self.recorder.start_file(options.file)

    # -- the core's inputs ---------------------------------------------------------------------

    def open(self, protocol_version: int, handshake: bytes, preamble: bytes, t: float) -> None:
        self.conn += 1
        core = self.core
        detail = {"protocol_version": protocol_version, "daemon_version": core.daemon_version,
                  "protocol": core.profile.name if core.profile is not None else None}
        self.recorder.connection(self.conn, "open", channel="notebook_sync", detail=json.dumps(detail), mono=t)
        self.recorder.frame(self.conn, OUT, PREAMBLE, preamble, t)
        self.recorder.frame(self.conn, OUT, UNTYPED, handshake, t)

    def kernel_state(self, state: dict[str, Any], t: float) -> None:
        """The kernel state the driver learnt outside the connection (the pool's room listing)."""
        self.recorder.connection(self.conn, "state", detail=json.dumps(_jsonable(state)), mono=t)

    def bootstrap(self, payload: bytes, typed: bool, t: float) -> None:
        self.recorder.frame(self.conn, IN, TYPED if typed else UNTYPED, payload, t)
        core = self.core
        self.recorder.update_meta(protocol=core.profile.name if core.profile is not None else None,
                                  protocol_version=core.protocol_version, daemon_version=core.daemon_version)

    def frame_in(self, payload: bytes, t: float) -> None:
        self.recorder.frame(self.conn, IN, TYPED, payload, t)

    def frame_out(self, frame_type: int, body: bytes, t: float) -> None:
        self.recorder.frame(self.conn, OUT, TYPED, bytes([frame_type]) + body, t)

    def tick(self, t: float, due: float | None) -> None:
        self.recorder.timer("tick", t, due)

    def kernel_comm(self, msg_type: str, content: dict[str, Any], buffers: list[bytes], t: float,
                    msg_id: str | None = None) -> None:
        msg: dict[str, Any] = {"msg_type": msg_type, "content": content, "buffers": [bytes(b) for b in buffers]}
        if msg_id is not None:
            msg["msg_id"] = msg_id  # the carrier of the kernel's rows in the key history
        self.recorder.kernel(msg, t)

    def kernel_event(self, what: str, payload: Any, t: float) -> None:
        self.recorder.kernel({"what": what, "payload": _jsonable(payload)}, t, channel="event")

    def manifest(self, ref: str, manifest: dict[str, Any] | None, error: str | None, t: float | None) -> None:
        """An output manifest the blob server answered (outside the socket, so not in a frame)."""
        self.recorder.manifest(ref, _jsonable(manifest) if manifest is not None else None, error, t)

    def close(self, state: str, detail: str, t: float | None) -> None:
        if self.conn:
            self.recorder.connection(self.conn, "close", detail=f"{state}: {detail}" if detail else state,
                                     mono=t)

    # -- the product's side ------------------------------------------------------------------------

    def start_file(self, path: str) -> None:
        self.recorder.start_file(path)

    def stop_file(self) -> str | None:
        return self.recorder.stop_file()

    @property
    def file(self) -> str | None:
        return self.recorder.file.path if self.recorder.file is not None else None

    def save_ring(self, path: str, last: float | None = None) -> int:
        """Write the ring's last `last` seconds (all of it: None) as a recording; records written."""
        return self.recorder.save_ring(path, last)

    def finish(self) -> None:
        """The session is over: the file is synced and closed (the ring stays readable)."""
        self._unsubscribe()
        self.recorder.close()

    # -- internals ---------------------------------------------------------------------------------

    def _on_event(self, e: Any) -> None:
        if e.kind == "divergence":
            self.recorder.mark(e.summary, {"divergences": e.data.get("divergences", []), "comm": e.target},
                               e.t)

    def _checkpoint(self, mono: float, wall: float) -> Checkpoint | None:
        reps = getattr(self.core, "replicas", None)
        if not reps or not self.conn:
            return None
        # no full save each time: see DocReplica.saved
        docs = {rep.name: doc_state(rep.doc, rep.saved()) for rep in reps.values()}
        if not any(ds.heads for ds in docs.values()):
            return None  # nothing synced yet: replay starts at the connection's records
        return Checkpoint(mono, wall, self.conn, docs)
