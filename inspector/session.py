"""The socket driver of the session core: join an existing room over the daemon's Unix socket,
feed every frame to `inspector.session_core.SessionCore` with its arrival time, write what the
core returns, run its timers on the asyncio loop, and run the kernel tap it asks for.

It never makes a local document change, never publishes presence and never sends a request that
changes anything (only the read-only requests of `messages.READ_ONLY_REQUESTS`); on v4 its only
other frame is the profile's keep-alive, a presence heartbeat the daemon neither stores nor
relays for a peer that never published presence (docs/lifecycle.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from . import events as ev
from .blobs import BlobResolver
from .connection import close_writer, open_channel
from .errors import (
    BadFrame,
    Closed,
    InspectorError,
    ProtocolMismatch,
    Timeout,
    UnknownNotebook,
    WouldLaunchKernel,
)
from .pool import probe, require_supported
from .protocol import messages as m
from .protocol.framing import (
    CONTROL_FRAME_MAX,
    DATA_FRAME_MAX,
    ConnectionClosed,
    FrameDecoder,
    FrameTooLarge,
    FrameType,
    encode_typed,
    read_frame,
)
from .session_core import (
    CLOSED,
    CONNECTING,
    DISCONNECTED,
    ERROR,
    LIVE,
    SYNCING,
    SessionConfig,
    SessionCore,
    Step,
)
from .snapshot import Snapshot

# Errors a later attempt may not meet again: the daemon restarting, a connection lost, a
# garbled frame, a slow answer. Anything else before the first live connection is the user's input.
RETRYABLE = (Closed, BadFrame, Timeout)
READ_CHUNK = 1 << 20  # at most this much of what the socket holds is taken in one read

__all__ = ["CLOSED", "CONNECTING", "DISCONNECTED", "ERROR", "LIVE", "SYNCING", "PeerSession", "SessionConfig",
           "unless_ended"]

log = logging.getLogger(__name__)


class PeerSession(SessionCore):
    """`SessionCore` driven by a socket and the asyncio loop (the core's state is read directly)."""

    def __init__(self, config: SessionConfig, log_: ev.EventLog | None = None) -> None:
        super().__init__(config, log_)
        self.retry_at: float | None = None  # monotonic time of the next reconnect attempt
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._activity = asyncio.Event()
        self._stopping = False
        self._pending_response: asyncio.Future[Any] | None = None
        self._request_lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self._tap_path: str | None = None
        self._tap_task: asyncio.Task[Any] | None = None
        self._gone = False  # this connection's room was found evicted (the read loop's reason)
        self._retrying = False  # inside run_forever: failures are its rows, not run()'s
        self.attempts = 0  # reconnect attempts since the last live connection

    def clock(self) -> float:
        return time.monotonic()

    def notify(self, paths: set[str]) -> None:
        super().notify(paths)
        if paths:
            self._activity.set()

    # -- connecting ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Probe the daemon, check the room exists (never create one), handshake."""
        cfg = self.config
        if self.attempts and self.state == DISCONNECTED:
            self.state = CONNECTING  # a retry: its timeline row is the one that says how it ended
            self.notify({"connection"})
        else:
            self.set_state(CONNECTING, cfg.socket_path)
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
        self._stop_tap()
        self._gone = False
        resolver = BlobResolver(p.blob_port if cfg.resolve_blobs else None, self._on_blob_resolved)
        hs = self.begin(p.protocol_version, probe=p, resolver=resolver, t=time.monotonic())
        self.kernel_state = ({"status": room.kernel_status, "source": "list_rooms"}
                             if room.has_kernel and room.kernel_status else {})
        if self.recording is not None and self.kernel_state:
            self.recording.kernel_state(self.kernel_state, time.monotonic())
        reader, writer = await open_channel(cfg.socket_path, p.protocol_version, hs,
                                            allow_other_user=cfg.allow_other_user, timeout=cfg.connect_timeout)
        self.log.frame("out", None, "preamble", 5)
        self.log.frame("out", None, "handshake", len(m.encode(hs)), m.encode(hs))
        self._reader, self._writer = reader, writer
        assert self.profile is not None
        try:
            payload = await asyncio.wait_for(
                read_frame(reader, DATA_FRAME_MAX if self.profile.typed_bootstrap else CONTROL_FRAME_MAX),
                cfg.handshake_timeout)
        except TimeoutError:
            raise Timeout(f"no handshake reply within {cfg.handshake_timeout:.0f} s") from None
        except ConnectionClosed:
            raise ProtocolMismatch(
                f"the daemon closed the connection right after the handshake: it refused protocol "
                f"v{p.protocol_version} ({p.daemon_version or 'unknown version'})",
                version=p.protocol_version, daemon_version=p.daemon_version) from None
        except FrameTooLarge as exc:
            raise BadFrame(f"handshake reply: {exc}") from None
        await self._carry_out(self.bootstrap(payload, time.monotonic()))

    async def run(self) -> None:
        """Connect and serve the connection until it closes or `stop()`; raises InspectorError.
        A rejoin the core asks for (a change re-requested) is a fresh connection within the run."""
        watcher: asyncio.Task[None] | None = None
        try:
            while True:
                if self._writer is None:
                    await self.connect()
                if self.config.room_check_s and watcher is None:
                    watcher = asyncio.get_running_loop().create_task(self._watch_room(self.config.room_check_s))
                try:
                    await self._read_loop()
                    break
                except _Rejoin:
                    await self._disconnect()
        except InspectorError as exc:
            self.error = exc
            if not self._retrying:
                self.end(ERROR, str(exc))
                self.log.emit(ev.ERROR, str(exc), {"exit_code": exc.exit_code, "type": type(exc).__name__})
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            await self._disconnect()

    async def _watch_room(self, every: float) -> None:
        """runtimed evicts a room (`shutdown_notebook`, its reaper) without closing the peers'
        connections: they stay on a room the daemon no longer has. Ask the pool channel (read-only
        `list_rooms`) whether it still lists ours; if not, mark the room gone and end the
        connection (the reconnect then says whether it came back)."""
        from .pool import PoolClient

        while not self._stopping:
            await asyncio.sleep(every)
            if self.state != LIVE or self.probe is None:
                continue
            try:
                async with PoolClient(self.config.socket_path, self.probe.protocol_version,
                                      allow_other_user=self.config.allow_other_user,
                                      timeout=self.config.connect_timeout) as pool:
                    rooms = await pool.list_rooms()
            except (InspectorError, OSError):
                continue  # the daemon going away shows on the notebook connection itself
            if not any(r.notebook_id == self.config.notebook_id for r in rooms):
                self.room_gone("the daemon no longer lists it")
                self._gone = True
                w = self._writer
                if w is not None:
                    w.close()  # the read loop ends with the reason below
                return

    async def run_forever(self, retry_initial: float = 1.0, retry_max: float = 15.0, *,
                          give_up_before_live: bool = False) -> None:
        """Keep the session up: reconnect with backoff after any failure, until `stop()`.

        One timeline row per attempt (the `disconnected` one, naming the error and the next
        attempt); an error repeated attempt after attempt is logged once. A room the daemon no
        longer lists after we were in it is marked gone (evicted or closed). With
        `give_up_before_live` (the CLI), an error before the first live connection that no retry
        can cure (no socket, not runtimed, no such room, another protocol...) is raised."""
        delay = retry_initial
        last_error = ""
        self._retrying = True
        try:
            while not self._stopping:
                started = time.monotonic()
                err: InspectorError | None = None
                try:
                    await self.run()
                except InspectorError as exc:
                    err = exc
                if self._stopping:
                    break
                if err is not None and give_up_before_live and not self.was_live and not isinstance(
                        err, RETRYABLE):
                    self.end(ERROR, str(err))
                    self.log.emit(ev.ERROR, str(err), {"exit_code": err.exit_code, "type": type(err).__name__})
                    raise err
                if self.state == LIVE or time.monotonic() - started > 10:
                    delay = retry_initial
                    self.attempts = 0
                if isinstance(err, UnknownNotebook) and self.was_live:
                    self.room_gone(str(err))
                self.attempts += 1
                why = str(err) if err is not None else "the connection ended"
                if why != last_error:
                    last_error = why
                    self.log.emit(ev.ERROR, why, {"exit_code": err.exit_code if err else None,
                                                  "type": type(err).__name__ if err else None,
                                                  "attempt": self.attempts})
                self.retry_at = time.monotonic() + delay
                self.reconnecting(self.retry_at)
                self.end(DISCONNECTED, f"{why}; reconnecting in {delay:g} s (attempt {self.attempts})")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_stop(), delay)
                self.retry_at = None
                self.reconnecting(None)
                delay = min(retry_max, delay * 2)
                self._writer = None
        finally:
            self._retrying = False

    async def _wait_stop(self) -> None:
        while not self._stopping:
            self._activity.clear()
            await self._activity.wait()

    async def stop(self) -> None:
        self._stopping = True
        self._activity.set()
        await self._disconnect()
        tap = self.tap
        self._stop_tap()
        if tap is not None:  # torn down, its socket closed, before the window attaches elsewhere
            await tap.close()
        if self.state not in (ERROR,):
            self.end(CLOSED)

    async def _disconnect(self) -> None:
        w, self._writer = self._writer, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_due = None, None
        if self._pending_response is not None and not self._pending_response.done():
            self._pending_response.set_exception(Closed("connection closed before the response"))
        if w is not None:
            await close_writer(w)

    # -- the read loop --------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reader = self._reader
        # what the socket holds is taken at once, so frames waiting behind each other (a
        # session that fell behind) reach the core together and a document's sync messages
        # are applied as one (SessionCore.receive_batch)
        decoder = FrameDecoder(DATA_FRAME_MAX)
        while not self._stopping:
            try:
                data = await reader.read(READ_CHUNK)
                if not data:
                    raise ConnectionClosed(decoder.at_boundary())
                payloads = decoder.feed(data)
            except ConnectionClosed as exc:
                if self._stopping:
                    return
                if self.rejoin is not None:
                    raise _Rejoin from None
                if self._gone:
                    raise Closed("the room was evicted or closed: the daemon no longer lists it") from None
                raise Closed(f"the daemon closed the connection{'' if exc.clean else ' inside a frame'}") from None
            except FrameTooLarge as exc:
                raise BadFrame(f"the daemon sent an oversized frame: {exc}") from None
            except (ConnectionError, OSError) as exc:
                if self._stopping:
                    return
                if self.rejoin is not None:
                    raise _Rejoin from None
                if self._gone:
                    raise Closed("the room was evicted or closed: the daemon no longer lists it") from None
                raise Closed(f"connection lost: {exc}") from None
            for step in self.receive_batch(payloads, time.monotonic()):
                await self._carry_out(step)
                if self.rejoin is not None:
                    break
            self._activity.set()
            if self.rejoin is not None:
                raise _Rejoin

    async def _carry_out(self, step: Step) -> None:
        """Write what the core asked for, then arm its timer and the kernel tap it wants."""
        for ft, body, doc in step.send:
            await self._send(ft, body, doc)
        self._arm()
        self._follow_tap()

    async def _send(self, ft: int, body: bytes, doc: str | None = None) -> None:
        if self._writer is None:
            return
        self._writer.write(encode_typed(ft, body))
        self.sent(ft, body, doc)
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    # -- timers ----------------------------------------------------------------------------------

    def _arm(self) -> None:
        due = self.next_deadline()
        if due is None or due == self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = asyncio.get_running_loop().call_later(max(0.0, due - time.monotonic()) + 0.001,
                                                            self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_due = None, None
        step = self.tick(time.monotonic())
        for ft, body, doc in step.send:  # the keep-alive: small, written without waiting on drain
            if self._writer is not None and not self._writer.is_closing():
                self._writer.write(encode_typed(ft, body))
                self.sent(ft, body, doc)
        if self.rejoin is not None and self._writer is not None:
            self._writer.close()  # the read loop ends and rejoins
        self._arm()
        self._follow_tap()

    # -- the kernel tap (I/O on the kernel's IOPub, fed to the core) -------------------------------

    def _follow_tap(self) -> None:
        wanted = self.divergence.tap_path if self.divergence is not None else None
        if wanted == self._tap_path:
            return
        self._stop_tap()
        if wanted is None:
            return
        from .kernel_tap import KernelTap, TapError

        self._tap_path = wanted
        try:
            tap = KernelTap(os.path.expanduser(wanted))
        except TapError as exc:
            self.kernel_event("tap_failed", str(exc), time.monotonic())
            return
        tap.listener = lambda what, payload: self._on_tap(what, payload)
        tap.comm_listener = lambda msg_type, content, buffers, now: self._on_tap_comm(msg_type, content, buffers,
                                                                                     now)
        self.tap = tap
        self._tap_task = asyncio.get_running_loop().create_task(self._run_tap(tap))
        self._tap_task.add_done_callback(_retrieve)

    def _on_tap(self, what: str, payload: Any) -> None:
        if what != "comm":  # comm messages come through the comm listener, with their content
            self.kernel_event(what, payload, time.monotonic())
            self._arm()

    def _on_tap_comm(self, msg_type: str, content: dict[str, Any], buffers: list[bytes], now: float) -> None:
        self.kernel_comm(msg_type, content, buffers, now, getattr(self.tap, "last_msg_id", None))
        self._arm()

    async def _run_tap(self, tap: Any) -> None:
        from .kernel_tap import TapError

        self.kernel_event("subscribing", tap.connection.iopub_url, time.monotonic())
        try:
            await tap.run()
        except TapError as exc:
            self.kernel_event("tap_failed", str(exc), time.monotonic())

    def _stop_tap(self) -> None:
        if self.tap is not None:
            self.tap.stop()
        self.tap, self._tap_path, self._tap_task = None, None, None

    # -- read-only requests ---------------------------------------------------------------------

    async def request(self, req: m.Request, timeout: float = 30.0) -> Any:
        """Send one read-only request and wait for its response (one outstanding at a time)."""
        if not isinstance(req, m.READ_ONLY_REQUESTS):
            raise ValueError(f"{m.tag_of(req)} changes the room: an observer never sends it")
        async with self._request_lock:
            loop = asyncio.get_running_loop()
            self._pending_response = loop.create_future()
            assert self.profile is not None
            await self._send(FrameType.REQUEST, self.profile.request_body(req, self.log.frames_out))
            try:
                return await asyncio.wait_for(self._pending_response, timeout)
            except TimeoutError:
                raise Timeout(f"no response to {m.tag_of(req)} within {timeout:.0f} s") from None
            finally:
                self._pending_response = None

    def on_response(self, resp: Any, t: float) -> None:
        fut = self._pending_response
        if fut is None:
            super().on_response(resp, t)
        elif not fut.done():
            if isinstance(resp, Exception):
                fut.set_exception(BadFrame(str(resp)))
            else:
                fut.set_result(resp)

    def _on_blob_resolved(self, refs: set[str]) -> None:
        self.blobs_resolved(refs, time.monotonic())
        self._arm()

    # -- waiting ----------------------------------------------------------------------------------

    def quiet_for(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        last = self.last_frame_in or self.connected_at or now
        return now - last

    def settled(self, settle_s: float) -> bool:
        return (self.state == LIVE and self.quiet_for() >= settle_s
                and not (self.resolver and self.resolver.busy))

    async def wait_settled(self, settle_s: float, timeout: float) -> None:
        """Until the join is complete (`live`: every document at the daemon's heads, and on v4 the
        daemon's `sync_status` ready) and nothing arrived for `settle_s`. On a timeout the error
        names what is still missing."""
        deadline = time.monotonic() + timeout
        while not self.settled(settle_s):
            # a session that reconnects (run_forever) may fail and come back within the timeout
            if self.error is not None and not self._retrying:
                raise self.error
            if self.state in (CLOSED, DISCONNECTED) and not self._retrying:
                raise Closed("the connection closed before the document settled")
            now = time.monotonic()
            if now >= deadline:
                missing = self.missing()
                if self.state == LIVE or not missing:
                    raise Timeout(f"the room did not settle within {timeout:g} s (frames kept arriving; "
                                  f"quiet for {self.quiet_for():.2f} s of {settle_s:g} s)")
                raise Timeout(f"the room was not complete within {timeout:g} s: still waiting for "
                              + "; ".join(missing))
            self._activity.clear()
            wait = min(deadline - now, max(0.01, settle_s - self.quiet_for()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._activity.wait(), wait)

    @contextlib.asynccontextmanager
    async def running(self, forever: bool = False) -> AsyncIterator[asyncio.Task[None]]:
        """`run()` as a task for the body of the block (`forever`: `run_forever`, reconnecting,
        giving up only on an error before the first live connection); stopped and awaited on the
        way out."""
        task = asyncio.create_task(self.run_forever(give_up_before_live=True) if forever else self.run())
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
            if self.error is not None and not self._retrying:
                raise self.error
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"condition not met within {timeout:.1f} s (state {self.state})")
            self._activity.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._activity.wait(), remaining)


class _Rejoin(Exception):  # noqa: N818 - a control signal of the read loop, never raised out of run()
    """The core asked for a fresh join (`SessionCore.rejoin`)."""


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A tap task's failure is logged, never "Task exception was never retrieved"."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("kernel tap task ended: %r", task.exception())


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
