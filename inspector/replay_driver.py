"""The recording driver of the session core: a recording (`inspector.recording`) fed to a
fresh `SessionCore` with the recorded times, record by record, so the tree, the event log and
the divergence verdicts are the ones the live session had.

What each record does (the live side is `inspector.recording.session_recording`):

- `Connection("open")`: `set_state(connecting)` and `begin` with the recorded protocol version;
  `Connection("state")`: the kernel state the live driver took from the pool listing;
  `Connection("close")`: `end` with the recorded state (and the error event the live driver logs);
- an IN frame: the connection's first is `bootstrap`, every later one `receive`;
- an OUT typed frame: `sent` (what the live driver wrote; the replayed core's own replies are
  computed, as they were live, and not sent anywhere);
- `Timer("tick")`: `tick` at the recorded time; `Kernel`: `kernel_comm` / `kernel_event`;
- `Manifest`: what the blob server answered live, given to `blobs_resolved` at the recorded time
  (outputs show "not resolved at this point of the recording" before it);
- the integrity report (references, liveness, buffers) is computed from the replayed documents
  as it is live (never against a notebook file on this machine: a replay has no room listing);
- a checkpoint before any connection (a file started mid-session, a saved ring): the documents
  are loaded from it and the session continues from there.

Marks and later checkpoints change nothing here (marks are what the live engine said; the
replayed engine says it again). Nothing here touches a socket or a clock.
"""

from __future__ import annotations

import copy
import datetime as dt
import gc
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from automerge import core as am

from . import events as ev
from .document import ALL
from .errors import BadRecording, InspectorError
from .history_feed import HistoryOptions
from .integrity import IntegrityOptions
from .protocol.framing import FrameType
from .recording.recording_file import RecordingError, RecordingReader
from .recording.records import (
    IN,
    OUT,
    TYPED,
    Checkpoint,
    Connection,
    Frame,
    Kernel,
    Manifest,
    Meta,
    Record,
    Timer,
)
from .session_core import CONNECTING, ERROR, SYNCING, SessionConfig, SessionCore, Step
from .snapshot import OutputView

__all__ = ["At", "RecordedManifests", "RecordedTap", "Replay", "copy_replay", "open_recording", "parse_at"]


class RecordedTap:
    """Stands where the live driver's kernel tap was: its messages are the recording's `Kernel`
    records, from which it keeps the kernel's comm table and state as the live tap did (the
    counters are the replay's, not the live tap's)."""

    rejected = 0

    def __init__(self) -> None:
        from .comm_table import CommTable

        self.received = 0
        self.reject_reasons: dict[str, int] = {}
        self.state = "live"  # live | shutdown | dead, from the recorded status and events
        self.table = CommTable()

    def comm(self, msg_type: str, content: dict[str, Any], buffers: list[bytes], t: float) -> None:
        from .comm_table import apply_iopub_comm
        from .kernel_tap import COMM_TYPES

        self.received += 1
        if msg_type in COMM_TYPES:
            apply_iopub_comm(self.table, msg_type, content, buffers, t)
        elif msg_type == "status":
            st = content.get("execution_state")
            if st in ("dead", "shutdown"):
                self.state = st
            elif self.state == "dead":
                self.state = "live"
        elif msg_type == "shutdown_reply":
            self.state = "shutdown"

    def event(self, what: str, payload: Any) -> None:
        """A recorded tap event: `dead` / `shutdown`, or `status` with the execution state."""
        if what in ("dead", "shutdown"):
            self.state = what
        elif what == "status" and payload in ("dead", "shutdown"):
            self.state = payload
        elif what == "status" and self.state == "dead":
            self.state = "live"

    def summary(self) -> dict[str, Any]:
        return {"state": self.state, "received": self.received, "rejected": 0, "source": "recording"}


class RecordedManifests:
    """Stands where the live driver's blob resolver was: the manifests are the recording's
    `Manifest` records, each known from the time the live session had it (nothing is fetched)."""

    busy = False

    def __init__(self) -> None:
        self.manifests: dict[str, OutputView] = {}

    def add(self, rec: Manifest) -> None:
        from .blobs import manifest_contents

        m = rec.manifest
        self.manifests[rec.ref] = (
            OutputView(ref=rec.ref, manifest=m, output_type=m.get("output_type"), resolved=manifest_contents(m))
            if isinstance(m, dict) else OutputView(ref=rec.ref, error=rec.error or "the blob server gave no manifest"))

    def lookup(self, ref: str) -> OutputView:
        from .blobs import HEX64, raw_output

        if not HEX64.match(ref):
            return raw_output(ref)
        hit = self.manifests.get(ref)
        return hit if hit is not None else OutputView(ref=ref, error="not resolved at this point of the recording")


def open_recording(path: str) -> RecordingReader:
    """The reader of `path`, or a one-line `BadRecording` (exit code 12)."""
    try:
        return RecordingReader(path)
    except RecordingError as exc:
        raise BadRecording(str(exc)) from None
    except IsADirectoryError:
        raise BadRecording(f"{path}: is a directory, not a recording") from None
    except FileNotFoundError:
        raise BadRecording(f"{path}: no such file") from None
    except OSError as exc:
        raise BadRecording(f"{path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class At:
    """Where a replay stops: after the event with this `seq` (as `watch FILE` prints it), or at
    a monotonic time of the recording (every record at or before it)."""

    seq: int | None = None
    mono: float | None = None


def parse_at(text: str, meta: Meta) -> At:
    """`N` (an event seq), `12.5s` (seconds after the recording's start) or an ISO wall time."""
    t = text.strip()
    if t.isdigit():
        return At(seq=int(t))
    if t.endswith("s"):
        try:
            return At(mono=meta.start_mono + float(t[:-1]))
        except ValueError:
            pass
    try:
        when = dt.datetime.fromisoformat(t)
    except ValueError:
        raise BadRecording(f"--at {text!r}: give an event seq (42), seconds after the start (12.5s) "
                           "or a wall time (2026-12-02T10:15:00)") from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as people read clocks
    return At(mono=meta.start_mono + (when.timestamp() - meta.start_wall))


def copy_replay(rp: Replay, *, docs: bool = True, records: bool = True) -> Replay:
    """An independent copy of `rp` (its core included) that shares only what never changes:
    the reader, and the immutable records (events, frame records, key-history entries, whose
    `__deepcopy__` returns themselves). `docs=False`: the copy's replicas hold no document (the
    caller keeps them another way and gives them back with `DocReplica.adopt_identical`);
    `records=False`: its event log keeps its counters but no events or frame records."""
    memo: dict[int, Any] = {id(rp.reader): rp.reader, id(rp.before_close): rp.before_close}
    core = rp.core
    for rep in core.replicas.values():
        memo[id(rep.doc)] = rep.doc.fork() if docs else None
        # a replay never sends its replies, so the copy's peer state starts afresh
        memo[id(rep.state)] = am.SyncState()
    # a copy allocates many small objects at once; the collector would walk the whole heap
    # (every copy kept so far) several times over for nothing: a copy makes no cycles to free
    was = gc.isenabled()
    gc.disable()
    try:
        if not records:
            core.log.copy_without_records(memo)
        return copy.deepcopy(rp, memo)
    finally:
        if was:
            gc.enable()


SEQ_COPY_EVERY_S = 0.5  # `run(At(seq=N))`: replay work between two copies (what a stop costs at most again)


class Replay:
    """One recording replayed into one `SessionCore` (see the module docstring)."""

    def __init__(self, path: str, *, divergence: bool = True) -> None:
        self.path = path
        self.reader = open_recording(path)
        meta = self.reader.meta
        self.meta = meta
        self.core = SessionCore(SessionConfig(meta.socket or path, meta.notebook_id or "?", resolve_blobs=False,
                                              keep_frame_bodies=False, divergence=self._divergence(meta, divergence),
                                              history=HistoryOptions(), integrity=IntegrityOptions()))
        # recorded times drive the clocks: event and history wall times are the recording's
        self.core.log.wall_of = self.wall_of
        if self.core.history is not None:
            self.core.history.wall = self.wall_of
        self.manifests = RecordedManifests()  # one cache for the recording, as live (by content hash)
        self.index = 1  # the next record (0 is the metadata)
        self._booted: set[int] = set()  # connections whose handshake reply was fed
        self._conn = 0
        # before each connection's close: called with the core still connected (check's verdict)
        self.before_close: Callable[[SessionCore], None] | None = None

    @staticmethod
    def _divergence(meta: Meta, enabled: bool) -> Any:
        if not enabled:
            return None
        import msgspec

        from .divergence import DivergenceOptions, SettleConfig

        rec = meta.extra.get("divergence") if isinstance(meta.extra, dict) else None
        if not isinstance(rec, dict):
            return DivergenceOptions(SettleConfig())
        try:
            settle = msgspec.convert(rec.get("settle") or {}, SettleConfig)
        except (msgspec.ValidationError, TypeError):
            settle = SettleConfig()
        # the same option as live (with `auto` the engine follows the room's kernel as it did);
        # the kernel's messages themselves come from the recording, never from a tap
        return DivergenceOptions(settle, rec.get("kernel_connection"))

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def done(self) -> bool:
        return self.index >= len(self.reader)

    def wall_of(self, mono: float) -> float:
        return self.meta.start_wall + (mono - self.meta.start_mono)

    def run(self, at: At | None = None, on_step: Callable[[int, Record], None] | None = None) -> SessionCore:
        """Replay up to `at` (the end: None) and return the core as of there.

        At an event seq N: the room when event N was logged, before any later event. One frame
        can log several events (the frame, then the document change it made); when N is not the
        last of its record's events, the room is the one before that record, so `--at` the frame
        event of a change shows the room without the change."""
        if at is not None and at.seq is not None:
            return self._run_to_seq(at.seq, on_step)
        return self._run(at, None, on_step)

    def _run_to_seq(self, seq: int, on_step: Callable[[int, Record], None] | None) -> SessionCore:
        """One pass, with a copy of the replay kept every `SEQ_COPY_EVERY_S` of work: when the
        record that logged event `seq` logged later ones too, the room before that record is
        rebuilt from the last copy (a short replay, not a second pass from the start)."""
        last = copy_replay(self)
        spent = 0.0
        while not self.done and self.core.log._seq < seq:
            i = self.index
            t0 = time.perf_counter()
            rec = self.reader.record(i)
            self.index += 1
            self.apply(rec)
            if self.core.log._seq > seq:
                self.__dict__.update(last.__dict__)  # become the copy, then replay to before record i
                return self._run(None, i, None)
            if on_step is not None:
                on_step(i, rec)
            spent += time.perf_counter() - t0
            if spent >= SEQ_COPY_EVERY_S:
                last, spent = copy_replay(self), 0.0
        return self.core

    def run_to(self, stop: int) -> SessionCore:
        """Replay the records before index `stop` (a scrubber's position: `TimeTravel.index_of_seq`
        gives the index `run(At(seq=N))` stops before)."""
        return self._run(None, max(stop, self.index), None)

    def _run(self, at: At | None, stop: int | None, on_step: Callable[[int, Record], None] | None) -> SessionCore:
        core = self.core
        while not self.done:
            if stop is not None and self.index >= stop:
                break
            if at is not None and at.mono is not None and self.reader.monos[self.index] > at.mono:
                break
            i = self.index
            rec = self.reader.record(i)
            self.index += 1
            self.apply(rec)
            if on_step is not None:
                on_step(i, rec)
        return core

    def apply(self, rec: Record) -> None:
        core = self.core
        if isinstance(rec, Frame):
            self._frame(rec)
        elif isinstance(rec, Timer):
            if rec.name == "tick" and core.profile is not None:
                core.tick(rec.mono)
        elif isinstance(rec, Kernel):
            if core.profile is None:
                return
            msg = rec.msg
            if core.tap is None:
                core.tap = RecordedTap()  # the live session had a tap: its views are shown
            tap = core.tap
            if rec.channel == "event":
                if isinstance(tap, RecordedTap):
                    tap.event(str(msg.get("what")), msg.get("payload"))
                core.kernel_event(str(msg.get("what")), msg.get("payload"), rec.mono)
            else:
                content = msg.get("content") if isinstance(msg.get("content"), dict) else {}
                buffers = [bytes(b) for b in msg.get("buffers") or ()]
                if isinstance(tap, RecordedTap):
                    tap.comm(str(msg.get("msg_type")), content, buffers, rec.mono)
                core.kernel_comm(str(msg.get("msg_type")), content, buffers, rec.mono,
                                 msg.get("msg_id") if isinstance(msg.get("msg_id"), str) else None)
        elif isinstance(rec, Connection):
            self._connection(rec)
        elif isinstance(rec, Manifest):
            self.manifests.add(rec)
            if core.profile is not None:
                core.blobs_resolved({rec.ref}, rec.mono)
        elif isinstance(rec, Checkpoint) and self._conn == 0 and any(ds.heads for ds in rec.docs.values()):
            self._seed(rec)

    # -- records ----------------------------------------------------------------------------------

    def _connection(self, rec: Connection) -> None:
        core = self.core
        if rec.event == "open":
            try:
                detail = json.loads(rec.detail) if rec.detail else {}
            except ValueError:
                detail = {}
            self._conn = rec.conn
            core.set_state(CONNECTING, core.config.socket_path, rec.mono)
            core.begin(int(detail.get("protocol_version") or self.meta.protocol_version or 2),
                       resolver=self.manifests, t=rec.mono)  # type: ignore[arg-type]
            core.daemon_version = detail.get("daemon_version") or self.meta.daemon_version
        elif rec.event == "state":
            try:
                state = json.loads(rec.detail)
            except ValueError:
                return
            if isinstance(state, dict):
                core.kernel_state = state
        elif rec.event == "close" and core.profile is not None:
            if self.before_close is not None:
                self.before_close(core)
            state, _, detail = rec.detail.partition(": ")
            core.end(state or "closed", detail, rec.mono)
            if state == ERROR:
                core.log.emit(ev.ERROR, detail, {"type": "recorded"}, t=rec.mono)

    def _frame(self, rec: Frame) -> None:
        core = self.core
        if core.profile is None or rec.redacted:
            return
        if rec.direction == OUT:
            if rec.kind == TYPED and rec.payload:
                ft = rec.payload[0]
                core.sent(ft, rec.payload[1:], core.profile.doc_types.get(ft), rec.mono)
            return
        if rec.direction != IN:
            return
        try:
            if rec.conn not in self._booted:
                self._booted.add(rec.conn)
                core.bootstrap(rec.payload, rec.mono)
            else:
                core.receive(rec.payload, rec.mono)
        except InspectorError as exc:
            core.error = exc  # as live: the close record that follows ends the connection

    def _seed(self, cp: Checkpoint) -> None:
        """A file that starts mid-session: the documents as the checkpoint holds them."""
        from automerge import core as am

        core = self.core
        self._conn = cp.conn
        self._booted.add(cp.conn)
        core.set_state(CONNECTING, core.config.socket_path, cp.mono)
        core.begin(int(self.meta.protocol_version or 2), resolver=self.manifests, t=cp.mono)  # type: ignore[arg-type]
        core.daemon_version = self.meta.daemon_version
        core.connected_at = cp.mono
        core.set_state(SYNCING, "from a checkpoint (the recording starts mid-session)", cp.mono)
        assert core.profile is not None
        step = Step()
        for ft, rep in core.replicas.items():
            ds = cp.docs.get(rep.name)
            if ds is None:
                continue
            rep.doc = am.Document.load(ds.saved)
            rep.advertised_heads = tuple(ds.heads)
            rep.paths.invalidate()
            changed = core.profile.doc_changed(core, rep, {ALL})
            core.profile.after_doc_change(core)
            if core.divergence is not None:
                core.divergence.on_doc(ft, changed, cp.mono)
            if ft == FrameType.AUTOMERGE_SYNC or ds.heads:
                core._synced.add(ft)
            step.changed |= changed | {f"doc:{rep.name}"}
        core._maybe_live(cp.mono, step)
        core._finish(step, cp.mono)
