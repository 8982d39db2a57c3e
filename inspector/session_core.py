"""The session core: everything a read-only peer does with what it receives, and no I/O.

In the style of h11 and wsproto, the core never touches a socket, a clock or an event loop.
A driver feeds it inputs with their times and carries out what it returns:

    core = SessionCore(config)
    hs = core.begin(protocol_version, probe=..., resolver=..., t=now)   # a new connection
    step = core.bootstrap(first_payload, t)                              # the handshake reply
    step = core.receive(payload, t)            # every later frame (type byte + body)
    step = core.tick(t)                        # when `core.next_deadline()` has passed
    core.kernel_comm(msg_type, content, buffers, t); core.kernel_event(what, payload, t)
    core.end(state, detail, t)                 # the connection ended (disconnected / closed / error)

Each `Step` lists the frames to write, in order (a driver that writes one reports it with
`core.sent(frame_type, body, doc, t)`), and the tree paths that changed; listeners
(`core.add_listener`) hear the same. `core.snapshot()` is the room now; `core.missing()` what
the join still waits for; `core.divergence.tap_path` the kernel connection file to tap, whose
messages come back through `kernel_comm` / `kernel_event`; `core.history` the key history (every
value each view held, who wrote it, what carried it) when `SessionConfig.history` asks. The socket
loop (`inspector.session.PeerSession`) is one driver; a recording is another: fed the same
frames with the same times, the core builds the same tree and the same verdicts.

What differs between protocol versions is the profile's (`inspector.profiles`); the
divergence engine is a declared option (`SessionConfig.divergence`) bound once per connection
by `inspector.divergence.SessionDivergence`, so a reconnect starts from a fresh engine. The key
history is one more declared option (`SessionConfig.history`): one store for the core's lifetime,
fed from the same inputs (see "key history" below), so a replayed recording gets the same story.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import events as ev
from .document import _NOT_OURS, ALL, DocError, DocReplica, SyncProblem, combine_sync_messages
from .errors import BadContent, BadFrame, InspectorError
from .feed import CommFeed
from .profiles import Profile, profile_for
from .protocol import messages as m
from .protocol.framing import FrameError, FrameType, split_typed
from .protocol.presence import PresenceError, decode_presence
from .snapshot import DaemonView, FeedView, KernelView, LifecycleView, OutputView, Snapshot

if TYPE_CHECKING:
    from .blobs import BlobResolver
    from .divergence import DivergenceOptions, SessionDivergence
    from .history_feed import HistoryOptions, SessionHistory
    from .integrity import IntegrityOptions, SessionIntegrity
    from .pool import DaemonProbe
    from .recording.session_recording import RecordingOptions, SessionRecording

log = logging.getLogger(__name__)

# Connection states shown to users
CONNECTING = "connecting"
SYNCING = "syncing"
LIVE = "live"
DISCONNECTED = "disconnected"
ERROR = "error"
CLOSED = "closed"

Listener = Callable[[set[str]], None]


@dataclass
class SessionConfig:
    socket_path: str
    notebook_id: str
    allow_other_user: bool = False
    allow_kernel_launch: bool = False
    resolve_blobs: bool = True
    connect_timeout: float = 5.0
    handshake_timeout: float = 10.0
    keep_frame_bodies: bool = True
    # Seconds between keep-alive frames on a daemon that drops quiet peers (v4: 300 s); None: off.
    keepalive_s: float | None = 60.0
    # Seconds between checks that the daemon still lists the room (runtimed's `shutdown_notebook`
    # evicts a room without closing its peers' connections); None: never.
    room_check_s: float | None = 5.0
    # Seconds a change the daemon sent may wait, unapplied, for a dependency before the session
    # asks for it again by rejoining the room (the sync protocol never resends a change on the
    # connection it was sent on); None: never re-request.
    rerequest_after_s: float | None = 2.0
    # The event log's bound in bytes (events and kept frame bodies), beside its count bound.
    log_max_bytes: int = 64 * 1024 * 1024
    # The divergence engine (settle windows, kernel connection); None: no comparison at all.
    divergence: DivergenceOptions | None = None
    # The integrity report (references, liveness, buffers, saved notebook); None: not computed.
    integrity: IntegrityOptions | None = None
    # The key history (bounded by bytes); None: no history. Views need `divergence` too.
    history: HistoryOptions | None = None
    # The flight recorder (ring bounds, a file); None: nothing recorded.
    recording: RecordingOptions | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Step:
    """What one input produced: frames to write (frame type, body, document name) and what changed."""

    send: list[tuple[int, bytes, str | None]] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)


class SessionCore:
    """The replicas, the feed, the kernel status, presence and the divergence binding of one room,
    advanced only by the inputs a driver gives it (see the module docstring)."""

    def __init__(self, config: SessionConfig, log_: ev.EventLog | None = None) -> None:
        self.config = config
        self.log = log_ or ev.EventLog(max_bytes=config.log_max_bytes)
        self.state = CONNECTING
        self.error: InspectorError | None = None
        self.probe: DaemonProbe | None = None
        self.profile: Profile | None = None
        self.capabilities: dict[str, Any] = {}
        self.daemon_version: str | None = None
        self.protocol_version: int | None = None
        self.replicas: dict[int, DocReplica] = {}
        self.feed = CommFeed()
        self.kernel_state: dict[str, Any] = {}
        self.presence_peers: dict[str, dict[str, Any]] = {}
        self.resolver: BlobResolver | None = None
        self.divergence: SessionDivergence | None = None
        self.integrity: SessionIntegrity | None = None
        self.history: SessionHistory | None = self._make_history()
        self.tap: Any = None  # a driver's kernel tap, for its counters (the core only gets its messages)
        self.last_frame_in: float | None = None
        self.last_doc_change: float | None = None
        self.last_broadcast: float | None = None
        self.connected_at: float | None = None
        self.connections = 0
        self.now: float | None = None  # the time of the latest input (the core has no clock of its own)
        self._listeners: list[Listener] = []
        self._synced: set[int] = set()  # documents whose first sync reached the daemon's heads
        self._idle_at: float | None = None  # when to index the documents after the join (idle work)
        self._keepalive_at: float | None = None  # when the next keep-alive frame is due
        self.keepalives_sent = 0
        self.input_errors = 0  # inputs the boundary caught (content and protocol errors)
        self._batch_seqs: list[int] | None = None  # the frames of the batch being applied
        # Re-requests (docs/lifecycle.md): change hashes asked for again by a rejoin, over every
        # connection (each at most once); `rejoin` says why the driver should rejoin now.
        self.rerequested: set[str] = set()
        self.rejoin: str | None = None
        self._stuck_at: float | None = None  # when to look for changes still waiting to apply
        # frame type -> advertised head the replica lacks -> (first seen, later messages on that
        # document that did not bring it): a change lost whole on the way raises no problem
        self._missing_heads: dict[int, dict[str, tuple[float, int]]] = {}
        # lifecycle (docs/lifecycle.md): the room, the connection's gaps, the kernel's status
        self.room_state = "open"
        self.reconnect_at: float | None = None  # the driver's next attempt (same clock as inputs)
        self.gaps: list[float] = []  # seconds not live, after having been live
        self._gap_from: float | None = None
        self._was_live = False
        self.kernel_status: str | None = None
        self.kernel_restarts = 0
        self._kernel_was_alive = False
        self._kernel_went = False  # it stopped after being alive: the next alive status is a restart
        self._snapshot_cache: Snapshot | None = None
        self._dirty = True
        # recording: hears every input (with the time given) and every frame written; see
        # inspector/recording/session_recording.py for what each hook records
        self.recording: SessionRecording | None = None
        if config.recording is not None:
            from . import __version__
            from .recording.session_recording import SessionRecording

            self.recording = SessionRecording(self, config.recording, __version__)
        # Malformed data from the daemon that was kept and ignored: said in every snapshot's
        # `warnings` (bounded; `malformed_count` counts them all)
        self.malformed: list[str] = []
        self.malformed_count = 0

    def _malformed(self, text: str, data: dict[str, Any] | None, t: float) -> None:
        self.malformed_count += 1
        if len(self.malformed) < 20:
            self.malformed.append(text)
        self._dirty = True
        self.log.emit(ev.ERROR, text, data or {}, t=t)

    # -- listeners -----------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> Callable[[], None]:
        """`fn(changed_paths)` after each input that changed the replica, feed, kernel or state."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def notify(self, paths: set[str]) -> None:
        """Tell the listeners what changed (the divergence binding calls it for `divergence`)."""
        if not paths:
            return
        self._dirty = True
        for fn in list(self._listeners):
            try:
                fn(paths)
            except Exception:  # a display bug must not kill the network reader
                log.exception("session listener failed")

    def clock(self) -> float:
        """Now, for ages and settle windows in snapshots: the latest input's time (a live driver
        overrides this with its clock, so ages advance while the room is idle)."""
        return self.now if self.now is not None else 0.0

    def _at(self, t: float | None) -> None:
        if t is not None and (self.now is None or t > self.now):
            self.now = t

    def set_state(self, state: str, detail: str = "", t: float | None = None) -> None:
        self._at(t)
        t = self.clock() if t is None else t
        if state == self.state and not detail:
            return
        self.state = state
        self.log.emit(ev.CONNECTION, f"{state}{': ' + detail if detail else ''}", {"state": state, "detail": detail},
                      t=t)
        if state == LIVE:
            self._was_live = True
            self.room_state = "open"
            if self._gap_from is not None:
                gap = t - self._gap_from
                self.gaps.append(gap)
                self._gap_from = None
                self.log.emit(ev.LIFECYCLE, f"live again after {gap:.1f} s disconnected",
                              {"what": "reconnected", "gap_s": round(gap, 3), "gaps": len(self.gaps)}, t=t)
        elif state in (DISCONNECTED, ERROR) and self._was_live and self._gap_from is None:
            self._gap_from = t
        if self.divergence is not None:
            self.divergence.on_connection(state, t)
        self._history_connection(state, t)
        self.notify({"connection"})

    # -- a connection ---------------------------------------------------------------------------

    def begin(self, protocol_version: int, *, probe: DaemonProbe | None = None,
              resolver: BlobResolver | None = None, t: float) -> m.NotebookSync:
        """A new connection: fresh replicas, feed and divergence binding. Returns the handshake."""
        self._at(t)
        self.probe = probe
        self.protocol_version = protocol_version
        self.daemon_version = probe.daemon_version if probe is not None else None
        self.profile = profile_for(protocol_version)
        self.replicas = {ft: DocReplica(name, ft, self.profile.path_depth)
                         for ft, name in self.profile.doc_types.items()}
        self.feed = CommFeed()
        self.kernel_state = {}
        self.presence_peers = {}
        self._synced = set()
        self._idle_at = None
        self._keepalive_at = None
        self._stuck_at = None
        self._missing_heads = {}
        self.rejoin = None
        self.resolver = resolver
        if self.divergence is not None:
            self.divergence.close()
        self.divergence = None
        if self.config.divergence is not None:
            from .divergence import SessionDivergence

            # one engine per connection: a reconnect equals a fresh attach
            self.divergence = SessionDivergence(self, self.profile.comm_views(self), self.config.divergence)
        self.integrity = None
        if self.config.integrity is not None:
            from .integrity import SessionIntegrity

            self.integrity = SessionIntegrity(self, self.config.integrity)  # first-seen times per connection
        if self.history is not None:  # key history: this connection's views
            self.history.bind(self.divergence.engine if self.divergence is not None else None)
            if self.divergence is not None:  # blame is read from the histories
                self.divergence.engine.history = self.history.history
        self._dirty = True
        hs = self.profile.handshake(self.config.notebook_id)
        if self.recording is not None:
            from .protocol.framing import preamble

            self.recording.open(protocol_version, m.encode(hs), preamble(protocol_version), t)
        return hs

    def bootstrap(self, payload: bytes, t: float) -> Step:
        """The daemon's reply to the handshake (the first frame of the connection)."""
        assert self.profile is not None, "begin() first"
        typed = payload[:1] == bytes([FrameType.SESSION_CONTROL]) and self.profile.typed_bootstrap
        if self.recording is not None:
            self.recording.bootstrap(payload, typed, t)
        if typed:
            self.log.frame("in", FrameType.SESSION_CONTROL, "session_control", len(payload), self._body(payload), t=t)
            self.capabilities = self.profile.parse_bootstrap(payload[1:])
        else:
            self.log.frame("in", None, "handshake_reply", len(payload), self._body(payload), t=t)
            self.capabilities = self.profile.parse_bootstrap(payload)
        self.daemon_version = self.capabilities.get("daemon_version") or self.daemon_version
        self.connections += 1
        self.connected_at = t
        self.last_frame_in = None
        if self.config.keepalive_s and self.profile.keepalive() is not None:
            self._keepalive_at = t + self.config.keepalive_s
        self.set_state(SYNCING, f"{self.profile.name} daemon {self.daemon_version or '?'}", t)
        return Step(changed={"connection"})

    def end(self, state: str, detail: str = "", t: float | None = None) -> None:
        """The connection is over (`disconnected`, `closed` or `error`)."""
        if self.recording is not None:
            self.recording.close(state, detail, t)
        self._keepalive_at = None
        self.set_state(state, detail, t)

    def room_gone(self, detail: str, t: float | None = None) -> None:
        """The daemon no longer lists the room we were in: evicted (`shutdown_notebook`, the
        reaper) or closed. Its kernel went with it."""
        if self.room_state == "gone":
            return
        self.room_state = "gone"
        t = self.clock() if t is None else t
        self.log.emit(ev.LIFECYCLE, f"room {self.config.notebook_id} evicted or closed: {detail}",
                      {"what": "room_gone", "detail": detail}, t=t)
        self._kernel_changed("shutdown" if self.kernel_status not in (None, "shutdown", "dead") else self.kernel_status,
                             t)
        self.notify({"connection", "kernel"})

    @property
    def was_live(self) -> bool:
        """Whether any connection of this session reached live."""
        return self._was_live

    def reconnecting(self, at: float | None, t: float | None = None) -> None:
        """The driver waits until `at` before its next attempt (None: it attempts now)."""
        self.reconnect_at = at
        self._dirty = True

    def lifecycle(self, now: float | None = None) -> LifecycleView:
        now = self.clock() if now is None else now
        current = (now - self._gap_from) if self._gap_from is not None else 0.0
        daemon = {LIVE: "connected", SYNCING: "connected", CONNECTING: "connecting", CLOSED: "stopped"}.get(
            self.state, "reconnecting")
        return LifecycleView(
            room=self.room_state, daemon=daemon,
            reconnect_in_s=(round(max(0.0, self.reconnect_at - now), 1) if self.reconnect_at is not None else None),
            kernel=self.kernel_status, kernel_restarts=self.kernel_restarts,
            gaps_s=tuple(round(g, 3) for g in self.gaps) + ((round(current, 3),) if current else ()),
            disconnected_s=round(sum(self.gaps) + current, 3), connections=self.connections)

    def _kernel_changed(self, status: str | None, t: float) -> None:
        if status == self.kernel_status:
            return
        was, self.kernel_status = self.kernel_status, status
        alive = status in ALIVE
        what = "kernel"
        if alive and self._kernel_went:
            self.kernel_restarts += 1
            self._kernel_went = False
            what = "kernel_restarted"
        elif status is not None and not alive and self._kernel_was_alive:
            self._kernel_went = True
        self._kernel_was_alive = self._kernel_was_alive or alive
        label = "kernel restarted: " + str(status) if what == "kernel_restarted" else f"kernel {was or '?'} -> {status}"
        self.log.emit(ev.LIFECYCLE, label, {"what": what, "from": was, "to": status,
                                            "restarts": self.kernel_restarts}, target="kernel", t=t)

    # -- inputs --------------------------------------------------------------------------------

    def receive(self, payload: bytes, t: float) -> Step:
        """One typed frame from the daemon. Raises BadFrame when the connection cannot go on."""
        ft, body, rec = self._take_frame(payload, t)
        step = Step()
        self._dispatch(ft, body, payload, rec.seq, t, step)
        return step

    def receive_batch(self, payloads: list[bytes], t: float) -> Iterator[Step]:
        """Frames read from the socket together, in order, one Step each (the caller carries
        each out before the next is made). Consecutive sync messages of one document are applied
        as one (`document.combine_sync_messages`): each is still recorded, logged and counted as
        a frame of its own, then their changes go into the replica at once and are read once,
        with one reply. Only a session that fell behind has several frames waiting; automerge's
        cost per message received grows with the document's history, so this is what lets it
        catch up. What the batch changed is attributed to its last frame (key history rows,
        the DOC_CHANGED event, which names every frame)."""
        i, n = 0, len(payloads)
        while i < n:
            j = i + 1
            doc_ft = self._sync_type(payloads[i])
            if doc_ft is not None:
                while j < n and self._sync_type(payloads[j]) == doc_ft:
                    j += 1
            if j - i == 1:
                yield self.receive(payloads[i], t)
            else:
                yield self._receive_run(payloads[i:j], t)
            i = j

    def _sync_type(self, payload: bytes) -> int | None:
        if self.profile is None or not payload:
            return None
        ft = payload[0]
        return ft if ft in self.profile.doc_types else None

    def _receive_run(self, payloads: list[bytes], t: float) -> Step:
        bodies = [p[1:] for p in payloads]
        try:
            combined, _summary = combine_sync_messages(bodies)
        except DocError:  # one of them is malformed: each on its own, the bad one reported alone
            step = Step()
            for p in payloads:
                one = self.receive(p, t)
                step.send += one.send
                step.changed |= one.changed
            return step
        seqs = []
        for p in payloads:
            ft, _body, rec = self._take_frame(p, t)
            seqs.append(rec.seq)
        self._batch_seqs = seqs
        step = Step()
        try:
            self._dispatch(ft, combined, combined, seqs[-1], t, step)
        finally:
            self._batch_seqs = None
        return step

    def _take_frame(self, payload: bytes, t: float) -> tuple[int, bytes, ev.FrameRecord]:
        """Record and log one frame as it came (recorder, frame record, FRAME event)."""
        assert self.profile is not None, "begin() first"
        if self.recording is not None:
            self.recording.frame_in(payload, t)
        self._at(t)
        self.last_frame_in = t
        try:
            tf = split_typed(payload)
        except FrameError as exc:
            raise BadFrame(f"the daemon sent {exc}") from None
        ft = tf.frame_type
        doc_name = self.profile.doc_types.get(ft)
        rec = self.log.frame("in", ft, FrameType.name_of(ft), len(payload), self._body(payload), doc_name, t)
        self.log.emit(ev.FRAME, f"in {FrameType.name_of(ft)}{' ' + doc_name if doc_name else ''} {len(payload)} B",
                      {"direction": "in", "frame_type": ft, "size": len(payload), "doc": doc_name,
                       "frame_seq": rec.seq}, t=t)
        if self.history is not None:  # key history: what this frame changes, it carried
            self.history.on_frame(rec.seq)
        return ft, tf.body, rec

    def _dispatch(self, ft: int, body: bytes, payload: bytes, frame_seq: int, t: float, step: Step) -> None:
        assert self.profile is not None
        doc_name = self.profile.doc_types.get(ft)
        # The input boundary: whatever a handler raises on the daemon's bytes ends here, as the
        # project's own error, recorded with the bytes. Content errors skip the frame; protocol
        # errors (and anything unexpected in a document's sync) end the connection (docs/lifecycle.md).
        try:
            if doc_name is not None:
                self._on_sync(ft, body, t, step)
            elif ft == FrameType.BROADCAST:
                self._on_broadcast(body, t, step)
            elif ft == FrameType.PRESENCE:
                self._on_presence(body, t, step)
            elif ft == FrameType.RESPONSE:
                self._on_response(body, t, step)
            elif ft == FrameType.SESSION_CONTROL and self.profile.typed_bootstrap:
                self._on_control(body, t, step)
            else:
                self.profile.unknown_frame(self, ft, body)  # may raise: a later protocol
                self.log.emit(ev.ERROR, f"unknown frame type 0x{ft:02x} ({len(payload)} B): kept, ignored",
                              {"frame_type": ft, "size": len(payload), "frame_seq": frame_seq}, t=t)
        except _NOT_OURS:
            raise
        except BadContent as exc:
            self.input_error(exc, FrameType.name_of(ft), payload, t, reconnect=False, frame_seq=frame_seq)
        except InspectorError as exc:
            raise self.input_error(exc, FrameType.name_of(ft), payload, t, reconnect=True,
                                   frame_seq=frame_seq) from None
        except BaseException as exc:  # noqa: B036 - a Rust panic is a BaseException
            err = _unexpected(exc, f"handling a {FrameType.name_of(ft)} frame")
            # a document's sync state is unknown after it: start over; anything else: skip the frame
            self.input_error(err, FrameType.name_of(ft), payload, t, reconnect=doc_name is not None,
                             frame_seq=frame_seq)
            if doc_name is not None:
                raise err from None
        self._maybe_live(t, step)
        self._finish(step, t)

    def input_error(self, exc: InspectorError, what: str, data: bytes, t: float, *, reconnect: bool,
                    frame_seq: int | None = None) -> InspectorError:
        """Record an input the boundary caught: one event naming the bytes (size, sha256 and the
        first `INPUT_BYTES_KEPT` of them). Returns the error to raise when the connection must end."""
        import hashlib

        self.input_errors += 1
        decision = "reconnecting" if reconnect else "frame skipped, session goes on"
        # in a batch the bytes are the message built from its frames, not one the daemon sent:
        # say so, and name every frame (each is in the frame log as it came)
        batch = self._batch_seqs
        where = f"the {len(batch)} sync messages of frames {batch[0]}-{batch[-1]} applied as one, " if batch else ""
        self.log.emit(ev.ERROR, f"{what}: {exc} ({where}{len(data)} B, {decision})",
                      {"input": what, "error": type(exc).__name__, "message": str(exc),
                       "exit_code": exc.exit_code, "decision": "reconnect" if reconnect else "continue",
                       "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                       "hex": data[:INPUT_BYTES_KEPT].hex(), "frame_seq": frame_seq,
                       **({"frame_seqs": list(batch), "combined": True} if batch else {})}, t=t)
        self.notify({"errors"})
        return exc

    def tick(self, t: float) -> Step:
        """Time passed (called at `next_deadline()`): the keep-alive, idle work, and pending
        differences that may now be reported."""
        if self.recording is not None:
            self.recording.tick(t, self.next_deadline())
        self._at(t)
        step = Step()
        ka = self.profile.keepalive() if self.profile is not None else None
        if self._keepalive_at is not None and t >= self._keepalive_at and ka is not None:
            if self.state in (SYNCING, LIVE):
                step.send.append((ka[0], ka[1], None))
                self.keepalives_sent += 1
            self._keepalive_at = t + (self.config.keepalive_s or 60.0)
        if self._idle_at is not None and t >= self._idle_at:
            self._idle_at = None
            # index for incremental reads once the tree is shown, a slice per tick: the driver's
            # loop runs between two ticks, so a big room's index never holds it for long
            if not all(rep.paths.warm(rep.doc, WARM_SLICE_S) for rep in self.replicas.values()):
                self._idle_at = t
        if self._stuck_at is not None and t >= self._stuck_at:
            self._check_stuck(t)
        if self.integrity is not None and self.integrity.due(t):
            step.changed.add("integrity")  # a forward reference may have outstayed the settle window
        self._finish(step, t)
        return step

    def next_deadline(self) -> float | None:
        """When `tick` should next be called (the same clock as the inputs' times), or None."""
        due = [d for d in (self._idle_at, self._keepalive_at, self._stuck_at,
                           self.divergence.next_deadline() if self.divergence else None,
                           self.integrity.next_deadline() if self.integrity else None)
               if d is not None]
        return min(due) if due else None

    def sent(self, frame_type: int, body: bytes, doc: str | None, t: float | None = None) -> None:
        """The driver wrote a frame the core asked for (or a request): recorded in the log."""
        t = self.clock() if t is None else t
        if self.recording is not None:
            self.recording.frame_out(frame_type, body, t)
        size = len(body) + 1
        rec = self.log.frame("out", frame_type, FrameType.name_of(frame_type), size,
                             (bytes([frame_type]) + body) if self.config.keep_frame_bodies else b"", doc, t)
        self.log.emit(ev.FRAME, f"out {FrameType.name_of(frame_type)}{' ' + doc if doc else ''} {size} B",
                      {"direction": "out", "frame_type": frame_type, "size": size, "doc": doc,
                       "frame_seq": rec.seq}, t=t)

    def kernel_comm(self, msg_type: str, content: dict[str, Any], buffers: list[bytes], t: float,
                    msg_id: str | None = None) -> Step:
        """A verified comm message from the kernel's IOPub (the kernel tap); `msg_id` is its header's."""
        if self.recording is not None:
            self.recording.kernel_comm(msg_type, content, buffers, t, msg_id)
        self._at(t)
        step = Step()
        if self.history is not None:  # key history: the kernel's word, carried by its message
            self.history.on_kernel_comm(msg_type, content, t, msg_id)
        if self.divergence is not None:
            try:
                self.divergence.on_kernel_comm(msg_type, content, buffers, t)
            except _NOT_OURS:
                raise
            except BaseException as exc:  # noqa: B036 - a kernel's message never ends the session
                err = exc if isinstance(exc, InspectorError) else _unexpected(exc, f"a kernel {msg_type}")
                data = _kernel_bytes(content, buffers)
                self.input_error(err, f"kernel {msg_type}", data, t, reconnect=False)
        self._finish(step, t)
        return step

    def kernel_event(self, what: str, payload: Any, t: float) -> Step:
        """Kernel-tap news: `shutdown`, `dead`, `rejected`, `subscribing`, `tap_failed`."""
        if self.recording is not None:
            self.recording.kernel_event(what, payload, t)
        self._at(t)
        step = Step()
        if self.divergence is not None:
            self.divergence.on_kernel_event(what, payload, t)
        self._finish(step, t)
        return step

    def blobs_resolved(self, refs: set[str], t: float | None = None) -> Step:
        """Output manifests arrived from the blob server: re-read the outputs that use them."""
        self._at(t)
        if self.recording is not None and self.resolver is not None:
            for ref in sorted(refs):
                view = self.resolver.manifests.get(ref)
                if view is not None:
                    self.recording.manifest(ref, view.manifest, view.error, t)
        step = Step()
        if self.profile is not None:
            changed = self.profile.invalidate_refs(self, refs)
            if changed:
                self.log.emit(ev.DOC_CHANGED, f"resolved {len(refs)} manifest(s)",
                              {"paths": sorted(changed), "resolved": sorted(refs)}, t=t)
                step.changed |= changed
        self._finish(step, t)
        return step

    # -- handlers --------------------------------------------------------------------------------

    def _body(self, payload: bytes) -> bytes:
        return payload if self.config.keep_frame_bodies else b""

    def _finish(self, step: Step, t: float | None) -> None:
        if self.profile is not None and self.state in (SYNCING, LIVE) and step.changed & KERNEL_PATHS:
            try:
                status = self.profile.kernel(self).status
            except Exception:  # noqa: BLE001 - a reader bug must not end the session; the tree shows it
                log.exception("reading the kernel status")
                status = self.kernel_status
            self._kernel_changed(status, self.clock() if t is None else t)
        if self.divergence is not None and self.divergence.run(self.clock() if t is None else t):
            step.changed.add("divergence")
        self.notify(step.changed)

    def _on_sync(self, ft: int, body: bytes, t: float, step: Step) -> None:
        assert self.profile is not None
        replica = self.replicas[ft]
        try:
            reply, dirty = replica.receive(body)
        finally:
            for problem in replica.take_problems():  # a change held back is never silent
                self._problem(ft, replica, problem, t)
        if reply is not None:
            step.send.append((ft, reply, replica.name))
        self._follow_missing_heads(ft, replica, t)
        # complete once we hold every head the daemon advertised (we never write, so equal)
        if ft not in self._synced and replica.converged:
            self._synced.add(ft)
        if dirty:
            self.last_doc_change = t
            changed = self.profile.doc_changed(self, replica, dirty)
            paths = sorted(changed)
            doc_event = self.log.emit(
                ev.DOC_CHANGED, f"{replica.name}: {len(paths)} path(s) changed"
                + (f" ({', '.join(paths[:4])}{'…' if len(paths) > 4 else ''})" if paths else ""),
                {"doc": replica.name, "paths": paths[:200], "n_paths": len(paths),
                 "heads": list(replica.heads), "full_read": ALL in dirty,
                 **({"frame_seqs": self._batch_seqs} if self._batch_seqs else {})},
                target=_first_target(paths), t=t)
            self.profile.after_doc_change(self)
            if self.history is not None:  # key history: document rows jump to this event
                self.history.on_doc_event(doc_event.seq)
            if self.divergence is not None:
                self.divergence.on_doc(replica.frame_type, changed, t)
            step.changed |= changed | {f"doc:{replica.name}"}

    def _problem(self, ft: int, replica: DocReplica, problem: SyncProblem, t: float) -> None:
        """One change the replica could not take: an error event naming its bytes. Asked for again
        (once per change, by a rejoin) when it is corrupt, or when it still waits for a dependency
        `rerequest_after_s` later; a change that comes back bad after that is the daemon's own."""
        h = problem.change_hash
        again = h is not None and h in self.rerequested
        can_ask = h is not None and not again and self.config.rerequest_after_s is not None
        decision = "continue" if not can_ask else ("rejoin" if problem.kind == "corrupt" else "re-request if stuck")
        self.log.emit(ev.ERROR, f"{replica.name}: {problem.kind} change {h or '?'} ({problem.size} B): {problem.detail}"
                      + ("; again after it was re-requested: the daemon holds it this way" if again else ""),
                      {"input": FrameType.name_of(ft), "problem": problem.to_json(), "size": problem.size,
                       "sha256": problem.sha256, "decision": decision, "rerequested": again,
                       # the frame that carried it (in a batch: one of these)
                       "frame_seq": self.log.frames_in,
                       **({"frame_seqs": list(self._batch_seqs)} if self._batch_seqs else {})}, t=t)
        if not can_ask:
            return
        assert self.config.rerequest_after_s is not None and h is not None
        if problem.kind == "corrupt":
            self._rerequest([h], t)
        else:
            due = t + self.config.rerequest_after_s
            self._stuck_at = due if self._stuck_at is None else min(self._stuck_at, due)

    def _rerequest(self, hashes: list[str], t: float) -> None:
        self.rerequested.update(hashes)
        if len(self.rerequested) > MAX_REREQUESTED:  # a daemon sending only bad changes: bounded
            self.rerequested = set(list(self.rerequested)[-MAX_REREQUESTED:])
        shown = ", ".join(h[:12] for h in hashes[:4]) + ("…" if len(hashes) > 4 else "")
        self.rejoin = (f"re-requesting {len(hashes)} change(s) the replica could not apply ({shown}): rejoining "
                       "the room for a fresh copy (the sync protocol does not send a change twice on one connection)")
        self.log.emit(ev.LIFECYCLE, self.rejoin, {"rerequest": hashes, "decision": "rejoin"}, t=t)
        self.notify({"connection"})

    def _follow_missing_heads(self, ft: int, replica: DocReplica, t: float) -> None:
        """Track the heads the daemon advertised that the replica lacks. A change lost whole on
        the way (not a byte of it arrived) leaves no problem to report, only a head never reached;
        once a later message on that document has come without it, it is due for a re-request
        `rerequest_after_s` after it was first seen. One later message at least: a join whose
        first message advertises the heads and whose second brings the changes is not stuck,
        however slow that second message is. Automerge advertises the same heads again only
        after hearing from us (a message in flight holds it back), so a second message naming
        a head it did not bring is the daemon's word that it sent everything up to it; a head
        that moves meanwhile starts over (a storm's lost change is caught as unapplied instead:
        the next change depends on it)."""
        if replica.converged or replica.advertised_heads is None:
            self._missing_heads.pop(ft, None)
            return
        held = set(replica.heads)
        before = self._missing_heads.get(ft, {})
        now: dict[str, tuple[float, int]] = {}
        for h in replica.advertised_heads[:MAX_MISSING_HEADS]:
            if h in held:
                continue
            first, later = before.get(h, (t, -1))
            now[h] = (first, later + 1)
        self._missing_heads[ft] = now
        due = [d for _, d in self._lost_heads()]
        if due:
            self._stuck_at = min(due) if self._stuck_at is None else min(self._stuck_at, *due)

    def _lost_heads(self) -> list[tuple[str, float]]:
        """(head, when it is due for a re-request) for each advertised head still missing on a
        document short of the daemon's heads after a later message came without it."""
        after = self.config.rerequest_after_s
        if after is None:
            return []
        out = []
        for ft, heads in self._missing_heads.items():
            rep = self.replicas.get(ft)
            if rep is None or rep.converged:
                continue
            out += [(h, first + after) for h, (first, later) in heads.items()
                    if later >= 1 and h not in self.rerequested]
        return out

    def _check_stuck(self, t: float) -> None:
        """Changes still unapplied (a dependency never came), and advertised heads still not
        held after a later message came without them (a change lost whole), on a document short
        of the daemon's heads, not yet asked for again: re-request them."""
        self._stuck_at = None
        stuck = [h for rep in self.replicas.values() if not rep.converged for h in rep.unapplied
                 if h not in self.rerequested]
        lost = self._lost_heads()
        stuck += [h for h, due in lost if due <= t and h not in stuck]
        if stuck:
            self._rerequest(stuck, t)
        elif lost:
            self._stuck_at = min(due for _, due in lost)

    def missing(self) -> list[str]:
        """What the join still waits for; empty once the room is complete (live)."""
        if self.profile is None:
            return ["the connection"]
        out = []
        for ft, rep in self.replicas.items():
            if ft in self._synced or not self.profile.waits_for(self, rep):
                continue
            out.append(f"the {rep.name} document ({'no sync message yet' if not rep.messages_in else 'not at the daemon heads yet'})")
        out += self.profile.join_gates(self)
        return out

    def _maybe_live(self, t: float, step: Step) -> None:
        if self.state != SYNCING or self.missing():
            return
        assert self.profile is not None
        self.set_state(LIVE, f"{self.profile.name} daemon {self.daemon_version or '?'}", t)
        step.changed.add("connection")
        if self.profile.warm_after_join:
            self._idle_at = t + 0.05

    def _on_broadcast(self, body: bytes, t: float, step: Step) -> None:
        try:
            bc = m.decode_broadcast(body)
        except m.MessageError as exc:
            self._malformed(f"broadcast with {exc}: kept, ignored",
                            {"raw": body[:2000].decode("utf-8", "replace")}, t)
            return
        raw = m.to_builtins(bc) if isinstance(bc, m.Unknown) else m.decode_json(body)  # every field, as sent
        tag = m.tag_of(bc)
        self.last_broadcast = t
        effect = self.profile.broadcast(self, bc, t) if self.profile is not None else None
        if isinstance(bc, m.KernelStatus):
            self.kernel_state = {**self.kernel_state, "status": bc.status, "source": "broadcast"}
        elif isinstance(bc, m.QueueChanged):
            self.kernel_state = {**self.kernel_state, "executing": bc.executing, "queued": list(bc.queued)}
        target = None
        if isinstance(bc, m.Comm) and isinstance(bc.content.get("comm_id"), str):
            target = f"comms/{bc.content['comm_id']}"
        elif isinstance(getattr(bc, "cell_id", None), str):
            target = f"cells/{bc.cell_id}"
        summary = _broadcast_summary(bc)
        if isinstance(bc, m.Unknown):
            summary = f"unknown broadcast event {bc.tag!r}: kept"
        bc_event = self.log.emit(ev.BROADCAST, summary, {"event": tag, "message": raw, "effect": effect,
                                                         "known": not isinstance(bc, m.Unknown)}, target=target, t=t)
        if self.history is not None and isinstance(raw, dict):  # key history: feed / echo values
            self.history.on_broadcast(raw, t, bc_event.seq)
        if self.divergence is not None:
            self.divergence.on_broadcast(bc, t)
        step.changed |= {"feed", "kernel"} | ({target} if target else set())

    def _on_presence(self, body: bytes, t: float, step: Step) -> None:
        try:
            p = decode_presence(body)
        except PresenceError as exc:
            self._malformed(f"presence frame: {exc}: kept, ignored", {"hex": body[:256].hex()}, t)
            return
        if p.type == "update" and p.peer_id:
            self.presence_peers.setdefault(p.peer_id, {})[p.channel or "?"] = p.raw.get("data")
            if p.channel == "kernel_state" and isinstance(p.raw.get("data"), dict):
                status = p.raw["data"].get("status")
                if status and self.kernel_state.get("source") != "broadcast":
                    self.kernel_state = {**self.kernel_state, "status": status, "source": "presence"}
        elif p.type == "snapshot":
            for peer in p.peers:
                pid = peer.get("peer_id")
                if isinstance(pid, str):
                    self.presence_peers[pid] = {c.get("channel"): c.get("data") for c in peer.get("channels", [])
                                                if isinstance(c, dict)}
        elif p.type == "left" and p.peer_id:
            self.presence_peers.pop(p.peer_id, None)
        if self.history is not None:  # key history: the peer behind each actor label
            self.history.on_presence(p.raw)
        self.log.emit(ev.PRESENCE, (p.summary() if p.known else f"unknown presence type {p.type!r}: kept"),
                      {"presence": p.raw, "known": p.known}, t=t)
        step.changed.add("presence")

    def _on_response(self, body: bytes, t: float, step: Step) -> None:
        try:
            resp: Any = m.decode_response(body)
        except m.MessageError as exc:
            resp = exc
        self.log.emit(ev.RESPONSE, f"response {m.tag_of(resp) if not isinstance(resp, Exception) else resp}",
                      {"message": m.to_builtins(resp) if not isinstance(resp, Exception) else str(resp)}, t=t)
        self.on_response(resp, t)

    def on_response(self, resp: Any, t: float) -> None:
        """A response to a request (or a decode error): the socket driver answers its waiter."""
        self.log.emit(ev.ERROR, "response with no request outstanding: kept, ignored", t=t)

    def _on_control(self, body: bytes, t: float, step: Step) -> None:
        try:
            raw = m.decode_json(body)
        except m.MessageError as exc:
            self._malformed(f"session-control frame: {exc}: kept, ignored", None, t)
            return
        kind = raw.get("type") if isinstance(raw, dict) else None
        self.log.emit(ev.CONTROL, f"{kind}: " + ", ".join(f"{k}={v}" for k, v in raw.items() if k != "type")
                      if isinstance(raw, dict) else str(raw), {"message": raw}, t=t)
        if isinstance(raw, dict) and self.profile is not None:
            self.profile.control(self, raw)
        step.changed.add("control")

    # -- the key history (SessionConfig.history): the store and its connection hooks --------------
    # The other feeding calls sit where each input is handled, one marked line each.

    def _make_history(self) -> SessionHistory | None:
        if self.config.history is None:
            return None
        from .history_feed import SessionHistory
        from .key_history import KeyHistory

        return SessionHistory(KeyHistory(self.config.history.max_bytes))

    def _history_connection(self, state: str, t: float | None) -> None:
        if self.history is None:
            return
        if state == LIVE:
            self.history.sweep(t)  # the views loaded at the join are ready now: their baseline
        elif state in (DISCONNECTED, CLOSED, ERROR):
            self.history.close_intervals(self.clock() if t is None else t)

    # -- outputs ----------------------------------------------------------------------------------

    def resolve_output(self, ref: str) -> OutputView:
        from .blobs import HEX64, raw_output

        if self.resolver is None:
            return raw_output(ref) if not HEX64.match(ref) else OutputView(ref=ref, error="blob resolution disabled")
        return self.resolver.lookup(ref)

    def _malformed_warnings(self) -> list[str]:
        out = [f"malformed data from the daemon: {text}" for text in self.malformed]
        if self.malformed_count > len(self.malformed):
            out.append(f"malformed data from the daemon: {self.malformed_count - len(self.malformed)} more")
        return out

    def malformed_line(self) -> str | None:
        """One line for stderr when the daemon sent malformed data (None: it did not)."""
        if not self.malformed_count:
            return None
        more = f" (and {self.malformed_count - 1} more)" if self.malformed_count > 1 else ""
        return f"warning: malformed data from the daemon, kept and ignored: {self.malformed[0]}{more}"

    def snapshot(self, taken_at: float | None = None, *, history: bool = True) -> Snapshot:
        """The room as one immutable value (cached until the next change). `history=False`:
        without the key history's findings and latency block, for a view that shows neither
        (their detectors are fed incrementally at each snapshot, so the first snapshot of a core
        that never took one costs what its key history holds); not cached."""
        import time

        if history and self._snapshot_cache is not None and not self._dirty:
            return self._snapshot_cache
        prof = self.profile
        p = self.probe
        daemon = DaemonView(
            socket=self.config.socket_path,
            protocol=self.capabilities.get("protocol"),
            protocol_version=self.capabilities.get("protocol_version") or self.protocol_version,
            daemon_version=self.daemon_version,
            actor_label=self.capabilities.get("actor_label"),
            blob_port=p.blob_port if p else None,
        )
        taken = time.time() if taken_at is None else taken_at
        if prof is None:
            snap = Snapshot(daemon=daemon, notebook_id=self.config.notebook_id, schema_version=None, heads=(),
                            cells=(), metadata={}, comms=(), feed=FeedView(False, (), "pending"),
                            kernel=KernelView(), connection=self.state, taken_at=taken,
                            lifecycle=self.lifecycle())
        else:
            main = self.replicas.get(FrameType.AUTOMERGE_SYNC)
            snap = Snapshot(
                daemon=daemon,
                notebook_id=self.config.notebook_id,
                schema_version=prof.schema_version(self),
                heads=main.heads if main else (),
                cells=prof.cells(self),
                metadata=prof.metadata(self),
                comms=prof.comms(self),
                feed=prof.feed_view(self),
                kernel=prof.kernel(self),
                sources=prof.sources,
                documents=prof.documents(self),
                warnings=tuple(prof.warnings(self)) + tuple(self._malformed_warnings()),
                connection=self.state,
                taken_at=taken,
                extra_root=prof.extra_root(self),
                lifecycle=self.lifecycle(),
            )
        if self.divergence is not None:
            snap = self.divergence.apply_to(snap)
        if self.integrity is not None and prof is not None:
            snap = self.integrity.apply_to(snap)
        if not history:
            return snap
        if self.history is not None:  # key history: the latency block and the findings
            snap = self.history.apply_to(snap)
        self._snapshot_cache = snap
        self._dirty = False
        return snap


# Kernel statuses of a kernel that runs (anything else: going, gone or not there yet).
ALIVE = frozenset({"idle", "busy"})
# Tree paths after which the kernel's status may have changed.
KERNEL_PATHS = frozenset({"kernel", "presence", "doc:runtime_state", "connection"})

WARM_SLICE_S = 0.008  # indexing a document at idle time: the work done in one tick
INPUT_BYTES_KEPT = 4096  # of an offending input, in its error event (its size and sha256 name it whole)
MAX_REREQUESTED = 10_000  # change hashes remembered as asked for again
MAX_MISSING_HEADS = 64  # advertised heads followed per document (a daemon advertising thousands)


def _unexpected(exc: BaseException, what: str) -> InspectorError:
    """Anything a handler raised that is not the project's own error (a bug, or a Rust panic
    from automerge) as a BadFrame naming it in one line."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return BadFrame(f"unexpected {type(exc).__name__} {what}{': ' + first[:200] if first else ''}")


def _kernel_bytes(content: Any, buffers: list[bytes]) -> bytes:
    try:
        import msgspec

        return msgspec.json.encode(content) + b"".join(bytes(b) for b in buffers)
    except Exception:  # content the encoder refuses: its repr names it
        return repr(content).encode("utf-8", "replace")


def _first_target(paths: list[str]) -> str | None:
    for p in paths:
        if p.startswith(("cells/", "comms/")):
            return p
    return None


def _broadcast_summary(bc: Any) -> str:
    if isinstance(bc, m.Comm):
        c = bc.content
        data = c.get("data") if isinstance(c.get("data"), dict) else {}
        method = data.get("method")
        extra = ""
        if bc.msg_type == "comm_open":
            st = data.get("state") if isinstance(data.get("state"), dict) else {}
            extra = f" {st.get('_model_name', '')}"
        elif method in ("update", "echo_update") and isinstance(data.get("state"), dict):
            extra = " " + ", ".join(f"{k}={_short(v)}" for k, v in list(data["state"].items())[:4])
        elif method == "custom" and isinstance(data.get("content"), dict):
            extra = f" {data['content'].get('method', '')}"
        return f"comm {bc.msg_type}{' ' + method if method else ''} {c.get('comm_id', '?')}{extra}"
    if isinstance(bc, m.CommSync):
        return f"comm_sync: {len(bc.comms)} comm(s)"
    if isinstance(bc, m.BokehSessionPatch):
        return bc.patch.summary()
    if isinstance(bc, m.KernelStatus):
        return f"kernel_status {bc.status}{' cell ' + bc.cell_id if bc.cell_id else ''}"
    tag = m.tag_of(bc)
    fields = m.to_builtins(bc)
    if isinstance(fields, dict):
        fields.pop("event", None)
        return f"{tag} " + ", ".join(f"{k}={_short(v)}" for k, v in list(fields.items())[:3])
    return tag


def _short(v: Any, n: int = 40) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 1] + "…"
