"""The read-only peer session: join an existing room, answer every sync message, record
every frame, keep the replica, the feed and the kernel view, and produce snapshots.

It never makes a local document change, never sends presence and never sends a request that
changes anything (only the read-only requests of `messages.READ_ONLY_REQUESTS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .blobs import BlobResolver
from .connection import close_writer, open_channel
from .document import ALL, DocError, DocReplica
from .errors import (
    BadFrame,
    Closed,
    InspectorError,
    ProtocolMismatch,
    Timeout,
    UnknownNotebook,
    WouldLaunchKernel,
)
from .feed import CommFeed
from .pool import DaemonProbe, probe, require_supported
from .profiles import Profile, profile_for
from .protocol import messages as m
from .protocol.framing import (
    CONTROL_FRAME_MAX,
    DATA_FRAME_MAX,
    ConnectionClosed,
    FrameError,
    FrameTooLarge,
    FrameType,
    encode_typed,
    read_frame,
    split_typed,
)
from .protocol.presence import PresenceError, decode_presence
from .snapshot import DaemonView, FeedView, OutputView, Snapshot

log = logging.getLogger(__name__)

# Connection states shown to users
CONNECTING = "connecting"
SYNCING = "syncing"
LIVE = "live"
DISCONNECTED = "disconnected"
ERROR = "error"
CLOSED = "closed"
CONVERGED_QUIET_S = 0.1


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
    extra: dict[str, Any] = field(default_factory=dict)


class PeerSession:
    def __init__(self, config: SessionConfig, log_: ev.EventLog | None = None) -> None:
        self.config = config
        self.log = log_ or ev.EventLog()
        self.state = CONNECTING
        self.error: InspectorError | None = None
        self.probe: DaemonProbe | None = None
        self.profile: Profile | None = None
        self.capabilities: dict[str, Any] = {}
        self.daemon_version: str | None = None
        self.replicas: dict[int, DocReplica] = {}
        self.feed = CommFeed()
        self.kernel_state: dict[str, Any] = {}
        self.presence_peers: dict[str, dict[str, Any]] = {}
        self.resolver: BlobResolver | None = None
        self.last_frame_in: float | None = None
        self.last_doc_change: float | None = None
        self.last_broadcast: float | None = None
        self.connected_at: float | None = None
        self.retry_at: float | None = None  # monotonic time of the next reconnect attempt
        self.connections = 0
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._listeners: list[Callable[[set[str]], None]] = []
        self._activity = asyncio.Event()
        self._stopping = False
        self._pending_response: asyncio.Future[Any] | None = None
        self._request_lock = asyncio.Lock()
        self._snapshot_cache: Snapshot | None = None
        self._dirty = True
        self._live_timer: asyncio.TimerHandle | None = None
        self.hooks: list[Callable[[str, Any], None]] = []  # (what, payload) for engines (divergence)
        self.snapshot_filters: list[Callable[[Snapshot], Snapshot]] = []  # engines add fields to snapshots

    # -- listeners ---------------------------------------------------------------------------

    def add_listener(self, fn: Callable[[set[str]], None]) -> Callable[[], None]:
        """`fn(changed_paths)` after each frame that changed the replica, feed, kernel or state."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def _changed(self, paths: set[str]) -> None:
        if not paths:
            return
        self._dirty = True
        self._activity.set()
        for fn in list(self._listeners):
            try:
                fn(paths)
            except Exception:  # a display bug must not kill the network reader
                log.exception("session listener failed")

    def _hook(self, what: str, payload: Any) -> None:
        for fn in list(self.hooks):
            try:
                fn(what, payload)
            except Exception:
                log.exception("session hook failed")

    def _set_state(self, state: str, detail: str = "") -> None:
        if state == self.state and not detail:
            return
        self.state = state
        self.log.emit(ev.CONNECTION, f"{state}{': ' + detail if detail else ''}", {"state": state, "detail": detail})
        self._changed({"connection"})

    # -- connecting ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Probe the daemon, check the room exists (never create one), handshake."""
        cfg = self.config
        self._set_state(CONNECTING, cfg.socket_path)
        p = await probe(cfg.socket_path, allow_other_user=cfg.allow_other_user, timeout=cfg.connect_timeout)
        self.probe = p
        self.daemon_version = p.daemon_version
        require_supported(p)
        room = p.room(cfg.notebook_id)
        if room is None:
            known = ", ".join(r.notebook_id for r in p.rooms[:5]) or "none"
            raise UnknownNotebook(f"no room {cfg.notebook_id!r} on {cfg.socket_path} (rooms: {known}); "
                                  "the inspector never creates rooms")
        if room.state == "inactive" and not cfg.allow_kernel_launch:
            raise WouldLaunchKernel(
                f"room {cfg.notebook_id} is inactive: joining it makes the daemon launch a kernel. "
                "Pass --allow-kernel-launch to join anyway")
        if room.has_kernel and room.kernel_status:
            self.kernel_state = {"status": room.kernel_status, "source": "list_rooms"}
        self.profile = profile_for(p.protocol_version)
        self.replicas = {ft: DocReplica(name, ft, self.profile.path_depth)
                         for ft, name in self.profile.doc_types.items()}
        self.feed = CommFeed()
        port = p.blob_port if cfg.resolve_blobs else None
        self.resolver = BlobResolver(port, self._on_blob_resolved)
        hs = self.profile.handshake(cfg.notebook_id)
        reader, writer = await open_channel(cfg.socket_path, p.protocol_version, hs,
                                            allow_other_user=cfg.allow_other_user, timeout=cfg.connect_timeout)
        self.log.frame("out", None, "preamble", 5)
        self.log.frame("out", None, "handshake", len(m.encode(hs)), m.encode(hs))
        self._reader, self._writer = reader, writer
        try:
            payload = await asyncio.wait_for(read_frame(reader, CONTROL_FRAME_MAX if p.protocol_version == 2
                                                        else DATA_FRAME_MAX), cfg.handshake_timeout)
        except TimeoutError:
            raise Timeout(f"no handshake reply within {cfg.handshake_timeout:.0f} s") from None
        except ConnectionClosed:
            raise ProtocolMismatch(
                f"the daemon closed the connection right after the handshake: it refused protocol "
                f"v{p.protocol_version} ({p.daemon_version or 'unknown version'})",
                version=p.protocol_version, daemon_version=p.daemon_version) from None
        except FrameTooLarge as exc:
            raise BadFrame(f"handshake reply: {exc}") from None
        if payload[:1] == bytes([FrameType.SESSION_CONTROL]) and p.protocol_version >= 4:
            self.log.frame("in", FrameType.SESSION_CONTROL, "session_control", len(payload), payload)
            self.capabilities = self.profile.parse_bootstrap(payload[1:])
        else:
            self.log.frame("in", None, "handshake_reply", len(payload), payload)
            self.capabilities = self.profile.parse_bootstrap(payload)
        self.daemon_version = self.capabilities.get("daemon_version") or self.daemon_version
        self.connections += 1
        self.connected_at = time.monotonic()
        self._set_state(SYNCING, f"{self.profile.name} daemon {self.daemon_version or '?'}")

    async def run(self) -> None:
        """Connect and serve the connection until it closes or `stop()`; raises InspectorError."""
        try:
            if self._writer is None:
                await self.connect()
            await self._read_loop()
        except InspectorError as exc:
            self.error = exc
            self._set_state(ERROR, str(exc))
            self.log.emit(ev.ERROR, str(exc), {"exit_code": exc.exit_code, "type": type(exc).__name__})
            raise
        finally:
            await self._disconnect()

    async def run_forever(self, retry_initial: float = 1.0, retry_max: float = 15.0) -> None:
        """Keep the session up: reconnect with backoff after any failure, until `stop()`."""
        delay = retry_initial
        while not self._stopping:
            started = time.monotonic()
            try:
                await self.run()
            except InspectorError:
                pass
            if self._stopping:
                break
            if time.monotonic() - started > 10:
                delay = retry_initial
            self.retry_at = time.monotonic() + delay
            self._set_state(DISCONNECTED, f"reconnecting in {delay:.0f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_stop(), delay)
            self.retry_at = None
            delay = min(retry_max, delay * 2)
            self._writer = None

    async def _wait_stop(self) -> None:
        while not self._stopping:
            self._activity.clear()
            await self._activity.wait()

    async def stop(self) -> None:
        self._stopping = True
        self._activity.set()
        await self._disconnect()
        if self.state not in (ERROR,):
            self._set_state(CLOSED)

    async def _disconnect(self) -> None:
        w, self._writer = self._writer, None
        if self._pending_response is not None and not self._pending_response.done():
            self._pending_response.set_exception(Closed("connection closed before the response"))
        if w is not None:
            await close_writer(w)

    # -- the read loop --------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reader = self._reader
        while not self._stopping:
            try:
                payload = await read_frame(reader, DATA_FRAME_MAX)
            except ConnectionClosed as exc:
                if self._stopping:
                    return
                raise Closed(f"the daemon closed the connection{'' if exc.clean else ' inside a frame'}") from None
            except FrameTooLarge as exc:
                raise BadFrame(f"the daemon sent an oversized frame: {exc}") from None
            except (ConnectionError, OSError) as exc:
                if self._stopping:
                    return
                raise Closed(f"connection lost: {exc}") from None
            now = time.monotonic()
            self.last_frame_in = now
            try:
                tf = split_typed(payload)
            except FrameError as exc:
                raise BadFrame(f"the daemon sent {exc}") from None
            await self._dispatch(tf.frame_type, tf.body, len(payload), payload, now)
            self._activity.set()

    async def _dispatch(self, ft: int, body: bytes, size: int, payload: bytes, now: float) -> None:
        assert self.profile is not None
        doc_name = self.profile.doc_types.get(ft)
        rec = self.log.frame("in", ft, FrameType.name_of(ft), size,
                             payload if self.config.keep_frame_bodies else b"", doc_name, now)
        self.log.emit(ev.FRAME, f"in {FrameType.name_of(ft)}{' ' + doc_name if doc_name else ''} {size} B",
                      {"direction": "in", "frame_type": ft, "size": size, "doc": doc_name, "frame_seq": rec.seq},
                      t=now)
        handler = getattr(self, f"_handle_{FrameType.name_of(ft)}", None)
        if doc_name is not None:
            await self._handle_sync(ft, body, now)
        elif handler is not None:
            handler(body, now)
        else:
            self.profile.unknown_frame(self, ft, body)
            self.log.emit(ev.ERROR, f"unknown frame type 0x{ft:02x} ({size} B): kept, ignored",
                          {"frame_type": ft, "size": size, "frame_seq": rec.seq}, t=now)

    async def _send(self, ft: int, body: bytes, doc: str | None = None) -> None:
        if self._writer is None:
            return
        frame = encode_typed(ft, body)
        self._writer.write(frame)
        rec = self.log.frame("out", ft, FrameType.name_of(ft), len(frame) - 4,
                             frame[4:] if self.config.keep_frame_bodies else b"", doc)
        self.log.emit(ev.FRAME, f"out {FrameType.name_of(ft)}{' ' + doc if doc else ''} {len(frame) - 4} B",
                      {"direction": "out", "frame_type": ft, "size": len(frame) - 4, "doc": doc,
                       "frame_seq": rec.seq})
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    # -- handlers (one per frame type) ------------------------------------------------------------

    async def _handle_sync(self, ft: int, body: bytes, now: float) -> None:
        assert self.profile is not None
        replica = self.replicas[ft]
        try:
            reply, dirty = replica.receive(body)
        except DocError as exc:
            raise BadFrame(str(exc)) from None
        if reply is not None:
            await self._send(ft, reply, replica.name)
        if dirty:
            self.last_doc_change = now
            changed = self.profile.doc_changed(self, replica, dirty)
            paths = sorted(changed)
            self.log.emit(ev.DOC_CHANGED, f"{replica.name}: {len(paths)} path(s) changed"
                          + (f" ({', '.join(paths[:4])}{'…' if len(paths) > 4 else ''})" if paths else ""),
                          {"doc": replica.name, "paths": paths[:200], "n_paths": len(paths),
                           "heads": list(replica.heads), "full_read": ALL in dirty},
                          target=_first_target(paths), t=now)
            if self.profile.has_feed and self.feed.shutdown_pending:
                self.feed.resolve_shutdown({c.comm_id for c in self.profile.comms(self)})
            self._hook("doc", (replica.name, changed))
            self._changed(changed | {f"doc:{replica.name}"})
        if self.state == SYNCING:
            # Converged once every document has synced and no sync frame came for a moment
            # (the reference client's rule: 100 ms of quiet).
            if self._live_timer is not None:
                self._live_timer.cancel()
            self._live_timer = asyncio.get_running_loop().call_later(CONVERGED_QUIET_S, self._maybe_live)

    def _maybe_live(self) -> None:
        self._live_timer = None
        if self.state == SYNCING and self.profile is not None and all(r.messages_in for r in self.replicas.values()):
            self._set_state(LIVE, f"{self.profile.name} daemon {self.daemon_version or '?'}")

    def _handle_broadcast(self, body: bytes, now: float) -> None:
        try:
            bc = m.decode_broadcast(body)
        except m.MessageError as exc:
            self.log.emit(ev.ERROR, f"broadcast with {exc}: kept, ignored", {"raw": body[:2000].decode("utf-8", "replace")},
                          t=now)
            return
        raw = m.to_builtins(bc) if isinstance(bc, m.Unknown) else m.decode_json(body)  # every field, as sent
        tag = m.tag_of(bc)
        self.last_broadcast = now
        effect = None
        if self.profile is not None and self.profile.has_feed:
            effect = self.feed.apply(bc, now)
        if isinstance(bc, m.KernelStatus):
            self.kernel_state = {**self.kernel_state, "status": bc.status, "source": "broadcast"}
        elif isinstance(bc, m.QueueChanged):
            self.kernel_state = {**self.kernel_state, "executing": bc.executing, "queued": list(bc.queued)}
        target = None
        if isinstance(bc, m.Comm) and isinstance(bc.content.get("comm_id"), str):
            target = f"comms/{bc.content['comm_id']}"
        elif hasattr(bc, "cell_id") and isinstance(getattr(bc, "cell_id", None), str):
            target = f"cells/{bc.cell_id}"
        summary = _broadcast_summary(bc)
        if isinstance(bc, m.Unknown):
            summary = f"unknown broadcast event {bc.tag!r}: kept"
        self.log.emit(ev.BROADCAST, summary, {"event": tag, "message": raw, "effect": effect,
                                              "known": not isinstance(bc, m.Unknown)}, target=target, t=now)
        self._hook("broadcast", bc)
        self._changed({"feed", "kernel"} | ({target} if target else set()))

    def _handle_presence(self, body: bytes, now: float) -> None:
        try:
            p = decode_presence(body)
        except PresenceError as exc:
            self.log.emit(ev.ERROR, f"presence frame: {exc}: kept, ignored", {"hex": body[:256].hex()}, t=now)
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
        self.log.emit(ev.PRESENCE, (p.summary() if p.known else f"unknown presence type {p.type!r}: kept"),
                      {"presence": p.raw, "known": p.known}, t=now)
        self._changed({"presence"})

    def _handle_response(self, body: bytes, now: float) -> None:
        try:
            resp = m.decode_response(body)
        except m.MessageError as exc:
            resp = exc
        fut = self._pending_response
        self.log.emit(ev.RESPONSE, f"response {m.tag_of(resp) if not isinstance(resp, Exception) else resp}",
                      {"message": m.to_builtins(resp) if not isinstance(resp, Exception) else str(resp)}, t=now)
        if fut is not None and not fut.done():
            if isinstance(resp, Exception):
                fut.set_exception(BadFrame(str(resp)))
            else:
                fut.set_result(resp)
        elif fut is None:
            self.log.emit(ev.ERROR, "response with no request outstanding: kept, ignored", t=now)

    def _handle_session_control(self, body: bytes, now: float) -> None:
        try:
            raw = m.decode_json(body)
        except m.MessageError as exc:
            self.log.emit(ev.ERROR, f"session-control frame: {exc}", t=now)
            return
        kind = raw.get("type") if isinstance(raw, dict) else None
        self.log.emit(ev.CONTROL, f"{kind}: " + ", ".join(f"{k}={v}" for k, v in raw.items() if k != "type")
                      if isinstance(raw, dict) else str(raw), {"message": raw}, t=now)
        self._hook("control", raw)
        self._changed({"control"})

    # -- read-only requests ---------------------------------------------------------------------

    async def request(self, req: m.Request, timeout: float = 30.0) -> Any:
        """Send one read-only request and wait for its response (one outstanding at a time)."""
        if not isinstance(req, m.READ_ONLY_REQUESTS):
            raise ValueError(f"{m.tag_of(req)} changes the room: an observer never sends it")
        async with self._request_lock:
            loop = asyncio.get_running_loop()
            self._pending_response = loop.create_future()
            body = m.encode(req)
            if self.profile is not None and self.profile.version >= 4:
                body = m.encode_json({"id": f"inspector-{self.log.frames_out}", **m.to_builtins(req)})
            await self._send(FrameType.REQUEST, body)
            try:
                return await asyncio.wait_for(self._pending_response, timeout)
            except TimeoutError:
                raise Timeout(f"no response to {m.tag_of(req)} within {timeout:.0f} s") from None
            finally:
                self._pending_response = None

    # -- outputs ------------------------------------------------------------------------------------

    def resolve_output(self, ref: str) -> OutputView:
        if self.resolver is None:
            from .blobs import raw_output

            return raw_output(ref) if not _is_hash(ref) else OutputView(ref=ref, error="blob resolution disabled")
        return self.resolver.lookup(ref)

    def _on_blob_resolved(self, refs: set[str]) -> None:
        if self.profile is None:
            return
        changed = self.profile.invalidate_refs(self, refs)
        if changed:
            self.log.emit(ev.DOC_CHANGED, f"resolved {len(refs)} manifest(s)", {"paths": sorted(changed),
                                                                             "resolved": sorted(refs)})
            self._changed(changed)

    # -- waiting ----------------------------------------------------------------------------------

    def quiet_for(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        last = self.last_frame_in or self.connected_at or now
        return now - last

    def settled(self, settle_s: float) -> bool:
        return (self.state == LIVE and self.quiet_for() >= settle_s
                and not (self.resolver and self.resolver.busy))

    async def wait_settled(self, settle_s: float, timeout: float) -> None:
        """Until joined and nothing has arrived for `settle_s` (a quiet window, by design)."""
        deadline = time.monotonic() + timeout
        while not self.settled(settle_s):
            if self.error is not None:
                raise self.error
            if self.state in (CLOSED, DISCONNECTED):
                raise Closed("the connection closed before the document settled")
            now = time.monotonic()
            if now >= deadline:
                raise Timeout(f"the room did not settle within {timeout:.1f} s (state {self.state}, "
                              f"quiet for {self.quiet_for():.2f} s)")
            self._activity.clear()
            wait = min(deadline - now, max(0.01, settle_s - self.quiet_for()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._activity.wait(), wait)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[asyncio.Task[None]]:
        """`run()` as a task for the body of the block; stopped and awaited on the way out."""
        task = asyncio.create_task(self.run())
        try:
            yield task
        finally:
            await self.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, InspectorError):
                await task

    async def wait_for(self, predicate: Callable[[Snapshot], bool], timeout: float) -> Snapshot:
        """Until `predicate(snapshot)` holds; re-checked after every change the session sees."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            if predicate(snap):
                return snap
            if self.error is not None:
                raise self.error
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"condition not met within {timeout:.1f} s (state {self.state})")
            self._activity.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._activity.wait(), remaining)

    # -- snapshots --------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        if self._snapshot_cache is not None and not self._dirty:
            return self._snapshot_cache
        prof = self.profile
        p = self.probe
        daemon = DaemonView(
            socket=self.config.socket_path,
            protocol=self.capabilities.get("protocol"),
            protocol_version=self.capabilities.get("protocol_version") or (p.protocol_version if p else None),
            daemon_version=self.daemon_version,
            actor_label=self.capabilities.get("actor_label"),
            blob_port=p.blob_port if p else None,
        )
        if prof is None:
            snap = Snapshot(daemon=daemon, notebook_id=self.config.notebook_id, schema_version=None, heads=(),
                            cells=(), metadata={}, comms=(), feed=FeedView(False, (), "pending"),
                            kernel=profile_kernel_none(), connection=self.state, taken_at=time.time())
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
                feed=self.feed.view() if prof.has_feed else FeedView(False, (), "none"),
                kernel=prof.kernel(self),
                sources=("doc", "feed") if prof.has_feed else ("doc",),
                documents=prof.documents(self),
                warnings=tuple(prof.warnings(self)),
                connection=self.state,
                taken_at=time.time(),
                extra_root=prof.extra_root(self),
            )
        for fn in self.snapshot_filters:
            snap = fn(snap)
        self._snapshot_cache = snap
        self._dirty = False
        return snap


async def unless_ended(coro: Any, session_task: asyncio.Task[Any], what: str = "the connection ended") -> Any:
    """Await `coro`, failing with the session's own error if its task ends first."""
    step = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({step, session_task}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # interrupted: the step goes too
        step.cancel()
        with contextlib.suppress(BaseException):
            await step
        raise
    if step in done:
        return step.result()
    step.cancel()
    with contextlib.suppress(BaseException):
        await step
    session_task.result()  # raises the session's error
    raise Closed(what)


def profile_kernel_none() -> Any:
    from .snapshot import KernelView

    return KernelView()


def _is_hash(ref: str) -> bool:
    from .blobs import HEX64

    return bool(HEX64.match(ref))


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
