"""A passive tap on a kernel's IOPub channel: the kernel's own view of its comms.

It reads the kernel's Jupyter connection file, subscribes to IOPub only (never shell, control
or stdin: those would inject traffic into the daemon's session), verifies each message's HMAC
with jupyter_client's `Session`, and replays comm_open / comm_msg / comm_close into a
`CommTable` with the same rules as the daemon. Messages are parsed as JSON and nothing
received is ever executed; unsigned or badly signed messages are dropped and counted.

A SUB socket only receives what is published after it connects, so the kernel view starts
empty at that moment: comms opened earlier are unknown to it (not missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from .comm_table import CommTable, apply_iopub_comm

log = logging.getLogger(__name__)

COMM_TYPES = ("comm_open", "comm_msg", "comm_close")

# What a tap reports to its listener: ("comm", comm_id), ("status", state), ("shutdown", None),
# ("dead", reason), ("rejected", reason)
TapListener = Callable[[str, Any], None]


class TapError(Exception):
    """The connection file cannot be used."""


@dataclass(frozen=True)
class KernelConnection:
    path: str
    transport: str
    ip: str
    iopub_port: int
    key: bytes
    signature_scheme: str
    kernel_name: str | None = None

    @property
    def iopub_url(self) -> str:
        if self.transport == "ipc":
            return f"ipc://{self.ip}-{self.iopub_port}"
        return f"tcp://{self.ip}:{self.iopub_port}"

    @property
    def ipc_path(self) -> str | None:
        return f"{self.ip}-{self.iopub_port}" if self.transport == "ipc" else None


def read_connection_file(path: str | os.PathLike[str]) -> KernelConnection:
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise TapError(f"cannot read kernel connection file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise TapError(f"kernel connection file {path} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise TapError(f"kernel connection file {path} is not a JSON object")
    transport = raw.get("transport", "tcp")
    if transport not in ("tcp", "ipc"):
        raise TapError(f"kernel connection file {path}: unsupported transport {transport!r}")
    ip, port = raw.get("ip"), raw.get("iopub_port")
    if not isinstance(ip, str) or not isinstance(port, int):
        raise TapError(f"kernel connection file {path} has no usable ip / iopub_port")
    key = raw.get("key", "")
    if not isinstance(key, str) or not key:
        # Without a key nothing can be verified, and anyone on the host could feed the tap.
        raise TapError(f"kernel connection file {path} has no signing key: messages cannot be verified")
    scheme = raw.get("signature_scheme", "hmac-sha256")
    if not isinstance(scheme, str) or not scheme.startswith("hmac-"):
        raise TapError(f"kernel connection file {path}: unsupported signature scheme {scheme!r}")
    if transport == "tcp" and ip in ("0.0.0.0", "*", ""):
        ip = "127.0.0.1"
    return KernelConnection(str(path), transport, ip, port, key.encode(), scheme, raw.get("kernel_name"))


class KernelTap:
    """Subscribe to one kernel's IOPub and keep its comm table."""

    def __init__(self, connection: KernelConnection | str | os.PathLike[str],
                 listener: TapListener | None = None, poll_s: float = 0.5) -> None:
        self.connection = connection if isinstance(connection, KernelConnection) else read_connection_file(connection)
        # JSON only: the default unpacker is JSON, set it explicitly so nothing is ever unpickled.
        self.session = Session(key=self.connection.key, signature_scheme=self.connection.signature_scheme,
                               packer="json", unpacker="json")
        self.table = CommTable()
        self.listener = listener
        # Optional (msg_type, content, buffers, now) for every verified comm message, comms the table
        # never saw opened included (a view that joined late still learns the kernel's values).
        self.comm_listener: Callable[[str, dict[str, Any], list[bytes], float], None] | None = None
        self.poll_s = poll_s
        self.last_msg_id: str | None = None  # header msg_id of the message being applied (a carrier)
        self.received = 0  # verified messages
        self.rejected = 0  # unsigned, badly signed, replayed or malformed messages
        self.reject_reasons: dict[str, int] = {}
        self.execution_state: str | None = None
        self.state = "connecting"  # connecting | live | shutdown | dead | stopped
        self.shutdown_requested = False  # the kernel answered a shutdown_request (seen on IOPub)
        self.connected_at: float | None = None
        self.last_message_at: float | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._stopping = False
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- messages -------------------------------------------------------------------------------

    def handle(self, frames: list[bytes], now: float | None = None) -> str | None:
        """Verify and apply one multipart IOPub message; return its msg_type, or None if rejected."""
        now = time.monotonic() if now is None else now
        try:
            _idents, parts = self.session.feed_identities(frames, copy=True)
            msg = self.session.deserialize(parts, content=True, copy=True)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            reason = _reject_reason(exc)
            self.rejected += 1
            self.reject_reasons[reason] = self.reject_reasons.get(reason, 0) + 1
            log.warning("kernel tap rejected an IOPub message: %s", reason)
            self._tell("rejected", reason)
            return None
        self.received += 1
        self.last_message_at = now
        header = msg.get("header") or {}
        self.last_msg_id = header.get("msg_id") if isinstance(header.get("msg_id"), str) else None
        msg_type = header.get("msg_type") or msg.get("msg_type")
        content = msg.get("content") if isinstance(msg.get("content"), dict) else {}
        if msg_type in COMM_TYPES:
            buffers = [bytes(b) for b in msg.get("buffers") or []]
            apply_iopub_comm(self.table, msg_type, content, buffers, now)
            cid = content.get("comm_id")
            rec = self.table.comms.get(cid) if msg_type == "comm_open" and isinstance(cid, str) else None
            if rec is not None and rec.is_output_widget:
                # `with out:` captures are routed by the daemon by parent msg_id; the kernel's own
                # widget never holds them, so its outputs are unknown here, not empty.
                rec.captured = None
            if isinstance(cid, str):
                self._tell("comm", cid)
            if self.comm_listener is not None:
                try:
                    self.comm_listener(msg_type, content, buffers, now)
                except Exception:
                    log.exception("kernel tap comm listener failed")
        elif msg_type == "status":
            st = content.get("execution_state")
            self.execution_state = st if isinstance(st, str) else None
            if st in ("dead", "shutdown"):
                self._mark("shutdown" if st == "shutdown" else "dead", f"kernel status {st}")
            elif self.state in ("connecting", "dead"):
                self.state = "live"
            self._tell("status", st)
        elif msg_type == "shutdown_reply":
            # Published on IOPub when the kernel handles a shutdown_request: a requested shutdown.
            self.shutdown_requested = True
            self._mark("shutdown", "shutdown requested")
            self._tell("shutdown", content)
        return msg_type

    def _mark(self, state: str, reason: str) -> None:
        if self.state != state:
            self.state = state
            if state == "dead":
                self._tell("dead", reason)

    def _tell(self, what: str, payload: Any) -> None:
        if self.listener is not None:
            try:
                self.listener(what, payload)
            except Exception:
                log.exception("kernel tap listener failed")

    # -- the socket ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and read until `stop()`. Raises TapError if the endpoint cannot be used."""
        if self._stopping:
            return
        # A socket of its own per tap, so per loop: an asyncio socket belongs to the loop that
        # first polled it. The context is shared (see _context).
        sock = self._sock = _context().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            sock.connect(self.connection.iopub_url)
        except zmq.ZMQError as exc:
            self._close_socket()
            raise TapError(f"cannot connect to {self.connection.iopub_url}: {exc}") from None
        self.connected_at = time.monotonic()
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        if self.state == "connecting":
            self.state = "live"
        watcher = asyncio.create_task(self._watch_endpoint())
        collected = False
        try:
            while not self._stopping:
                try:
                    frames = await sock.recv_multipart(copy=True)
                except zmq.ZMQError:
                    if self._stopping:
                        break
                    raise
                self.handle(frames)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        except GeneratorExit:
            collected = True  # closed by the garbage collector: it must not await anything
            raise
        finally:
            # Synchronous teardown first: it must happen even if this coroutine is being closed
            # outside its loop (a task left pending, then collected), where scheduling fails.
            self._close_socket()
            with contextlib.suppress(RuntimeError):
                watcher.cancel()
            if not collected:
                with contextlib.suppress(BaseException):
                    await watcher
            if self.state not in ("dead", "shutdown"):
                self.state = "stopped"

    def _close_socket(self) -> None:
        """Close the socket now, linger 0: nothing is sent on a SUB socket, nothing to wait for."""
        sock, self._sock = self._sock, None
        if sock is not None and not sock.closed:
            try:
                sock.close(linger=0)
            except RuntimeError:
                # the asyncio socket could not unregister from a loop that is gone: close the
                # underlying zmq socket all the same
                zmq.Socket.close(sock, linger=0)

    async def _watch_endpoint(self) -> None:
        """An ipc endpoint disappears when the kernel exits: the one death sign a passive tap sees."""
        path = self.connection.ipc_path
        if path is None:
            return
        while not self._stopping:
            await asyncio.sleep(self.poll_s)
            if not os.path.exists(path) and self.state not in ("dead", "shutdown"):
                self._mark("dead", f"IOPub endpoint {path} disappeared")

    def stop(self) -> None:
        """Stop reading. Safe from any thread and after the tap's loop stopped: the socket is
        closed at once when the loop is not running (a cancel would only be delivered when it
        runs again, maybe never); otherwise `run()` closes it on its own loop."""
        self._stopping = True
        task, loop = self._task, self._loop
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is not None and loop.is_running() and here is not loop:
            if task is not None:  # another thread: hand the cancel to the tap's own loop
                loop.call_soon_threadsafe(task.cancel)
            return
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # a closed loop cannot schedule the wakeup
                task.cancel()
        if loop is None or not loop.is_running():
            self._close_socket()

    async def close(self) -> None:
        """`stop()`, then wait until `run()` has closed its socket (on the tap's own loop)."""
        self.stop()
        task = self._task
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task}, timeout=5)

    def summary(self) -> dict[str, Any]:
        return {"endpoint": self.connection.iopub_url, "state": self.state, "received": self.received,
                "rejected": self.rejected, "reject_reasons": dict(self.reject_reasons),
                "comms": len(self.table.comms), "shutdown_requested": self.shutdown_requested,
                "execution_state": self.execution_state}


_CONTEXT: zmq.asyncio.Context | None = None


def _context() -> zmq.asyncio.Context:
    """One zmq context for every tap, kept for the life of the process.

    A context per tap was collected together with its socket when a tap's teardown did not run
    (a task failed outside its loop); the garbage collector clears weak references before it
    finalizes, so the context's `__del__` saw no sockets to close and its `term()` waited
    forever for the open one (test runs hung there). This context is never
    collected, and pyzmq does not terminate contexts at interpreter exit. Every tap closes its
    own socket."""
    global _CONTEXT
    if _CONTEXT is None or _CONTEXT.closed:
        _CONTEXT = zmq.asyncio.Context()
    return _CONTEXT


def _reject_reason(exc: Exception) -> str:
    text = str(exc)
    for known in ("Unsigned Message", "Invalid Signature", "Duplicate Signature", "<IDS|MSG>"):
        if known.lower() in text.lower():
            return {"<IDS|MSG>": "not a Jupyter message"}.get(known, known.lower())
    return f"malformed: {type(exc).__name__}"
