"""The session core in a child process, so the window never waits on the document.

Automerge's binding holds the GIL for the whole of each call (`receive_sync_message` takes ~250 ms
for a 1,000-cell room's join and ~3 s at 10,000 cells; see docs/core-off-gui-thread.md), so no
thread can keep a window responsive while it runs. The window's session runs instead in a child
(`python -m inspector.core_process`), exactly as the CLI runs one (`cli.make_session`: the same
divergence, integrity, history and recorder options), and ships what the window shows over a
socket pair:

- snapshots as changed entries and a header (`inspector.snapshot_stream`), one message decoded
  per event-loop callback;
- every event and frame record of its log, which the parent's log adopts with their numbers;
- every key-history entry, into the parent's own `KeyHistory` (the history pane reads it);
- a status: connection state, the next retry, each document's sync health, the recorder's;
- the views of the comm and the key the window watches (the compare table, the shading).

The parent asks for what it cannot hold (a blob's content or bytes, starting or stopping a
recording, saving the ring) with `Call` and gets a `Reply`. `ProcessSession` is the parent's end:
it offers the window what a `PeerSession` does (state, log, snapshot, listeners, run/stop), so the
window's controller drives either. Nothing received from the daemon is executed in either process;
the child is read-only exactly as the CLI is.

Messages are msgpack, each preceded by its length (4 bytes, big-endian), at most `MAX_MESSAGE`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from . import events as ev
from .divergence import CompareViews
from .events import Event, EventLog, FrameRecord
from .key_history import Entry, KeyHistory
from .snapshot import DaemonView, FeedView, KernelView, Snapshot
from .snapshot_stream import (
    NOT_SHIPPED,
    UNSHIPPABLE,
    CellChunk,
    CommChunk,
    FeedChunk,
    Header,
    SnapshotAssembler,
    SnapshotEncoder,
)

log = logging.getLogger(__name__)

MAX_MESSAGE = 256 * 1024 * 1024  # a chunk of 500 entries; far above any room seen, far below memory
SHIP_EVERY_S = 0.05  # the child coalesces snapshots and log batches to at most 20 per second
STATUS_EVERY_S = 0.5  # also how long an idle child sleeps between two looks at its status
WATCH_EVERY_S = 1.0  # the watched views' ages move on while the room is idle
BATCH = 500  # events, frame records or key-history entries per message
HIGH_WATER = 8 * 1024 * 1024  # the parent is slow: stop shipping snapshots until it reads


# -- messages ----------------------------------------------------------------------------------------

class ReplicaHealth(msgspec.Struct, array_like=True):
    name: str
    messages_in: int
    unapplied: int
    converged: bool


class RecorderStatus(msgspec.Struct, array_like=True):
    ring_bytes: int
    ring_age: float
    ring_size: int | None
    file: str | None


class Status(msgspec.Struct, tag="status", array_like=True):
    state: str
    error: str | None
    retry_at: float | None
    replicas: list[ReplicaHealth]
    recorder: RecorderStatus | None
    has: list[str]  # which parts the session has: divergence, integrity, history, resolver
    tap: tuple[str, int] | None = None  # the kernel tap's state and messages so far; None: no tap
    connections: int = 0  # connections made so far (a reconnect adds one)


class LogBatch(msgspec.Struct, tag="log", array_like=True):
    events: list[Event]
    frames: list[FrameRecord]


class Entries(msgspec.Struct, tag="entries", array_like=True):
    entries: list[Entry]


class Watched(msgspec.Struct, tag="watched", array_like=True):
    comm_id: str | None
    views: CompareViews | None
    key: tuple[str, str] | None
    intervals: list[tuple[float, float | None]]


class Reply(msgspec.Struct, tag="reply", array_like=True):
    id: int
    value: Any = None
    error: str | None = None


class Watch(msgspec.Struct, tag="watch", array_like=True):
    comm_id: str | None
    key: tuple[str, str] | None


class Call(msgspec.Struct, tag="call", array_like=True):
    id: int
    op: str
    args: list[Any]


class Stop(msgspec.Struct, tag="stop", array_like=True):
    pass


ToParent = CellChunk | CommChunk | FeedChunk | Header | Status | LogBatch | Entries | Watched | Reply
ToChild = Watch | Call | Stop
_LEN = struct.Struct(">I")
# msgspec compiles a decoder's types on first use (~20 ms for these): done at import, when the
# window starts, rather than at the first attach
msgspec.msgpack.Decoder(ToParent)


class CoreProcessError(Exception):
    """The child broke the protocol or went away."""


async def read_message(reader: asyncio.StreamReader) -> bytes | None:
    """One message's bytes, or None at the end of the stream."""
    try:
        head = await reader.readexactly(_LEN.size)
    except asyncio.IncompleteReadError:
        return None
    (n,) = _LEN.unpack(head)
    if n > MAX_MESSAGE:
        raise CoreProcessError(f"a message of {n} bytes from the other process (at most {MAX_MESSAGE})")
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        return None


def framed(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


# -- the child -----------------------------------------------------------------------------------------

def _safe_encode(enc: msgspec.msgpack.Encoder, msg: Any) -> bytes:
    """`msg` as msgpack; an item msgpack cannot carry (an integer beyond 64 bits, nesting too
    deep: hostile content) is shipped with that value replaced by a marker, never dropped."""
    try:
        return enc.encode(msg)
    except UNSHIPPABLE:
        pass
    if isinstance(msg, LogBatch):
        return enc.encode(LogBatch([_shippable(e, "held") for e in msg.events], msg.frames))
    if isinstance(msg, Entries):
        return enc.encode(Entries([_shippable(e, "value") for e in msg.entries]))
    if isinstance(msg, Watched):
        return enc.encode(msgspec.structs.replace(msg, views=None))
    if isinstance(msg, Reply):
        return enc.encode(Reply(msg.id, None, f"the answer cannot be shipped: {NOT_SHIPPED}"))
    raise CoreProcessError(f"cannot ship {type(msg).__name__}")


def _shippable(item: Any, field: str) -> Any:
    try:
        msgspec.msgpack.encode(item)
        return item
    except UNSHIPPABLE:
        return msgspec.structs.replace(item, **{field: NOT_SHIPPED})


class Publisher:
    """The child's side: watches one session and ships what the window needs."""

    def __init__(self, session: Any, writer: asyncio.StreamWriter) -> None:
        self.session = session
        self.writer = writer
        self.snapshots = SnapshotEncoder()
        self._enc = msgspec.msgpack.Encoder()
        self._events: list[Event] = []
        self._entries: list[Entry] = []
        self._frame_seq = 0
        self._dirty = True
        self._last_status: Status | None = None
        self._status_at = 0.0
        self._watch = Watch(None, None)
        self._watch_at = 0.0
        self._watch_due = True
        # set by anything there is to ship: an idle child ships the first change at once, not
        # at the next tick (a single slider move reached the window 25 ms later on average)
        self._wake = asyncio.Event()
        self._unsubs = [session.add_listener(self._on_change), session.log.subscribe(self._on_event)]
        hist = getattr(session, "history", None)
        if hist is not None:
            hist.history.on_add = self._on_entry

    def close(self) -> None:
        for u in self._unsubs:
            u()
        hist = getattr(self.session, "history", None)
        if hist is not None:
            hist.history.on_add = None

    def _on_change(self, _paths: set[str]) -> None:
        self._dirty = True
        self._wake.set()

    def _on_event(self, e: Event) -> None:
        self._events.append(e)
        self._wake.set()

    def _on_entry(self, e: Entry) -> None:
        self._entries.append(e)
        self._wake.set()

    def watch(self, w: Watch) -> None:
        self._watch = w
        self._watch_due = True
        self._wake.set()

    def send(self, msg: Any) -> None:
        self.writer.write(framed(_safe_encode(self._enc, msg)))

    async def run(self) -> None:
        failed = ""
        while True:
            self._wake.clear()
            try:
                self.ship()
            except Exception as exc:  # noqa: BLE001 - a bug here must not silence the window
                why = f"{type(exc).__name__}: {exc}"
                if why != failed:  # once per distinct failure, in the window's timeline
                    failed = why
                    log.exception("shipping to the window failed")
                    self.session.log.emit(ev.ERROR, f"the session core could not ship an update: {why}",
                                          {"type": type(exc).__name__})
                self._dirty = True
            await self.writer.drain()
            await asyncio.sleep(SHIP_EVERY_S)  # the least gap between two ships
            if not (self._wake.is_set() or self._dirty):
                # idle: until something is to ship, or the status is due again (its ages move)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), STATUS_EVERY_S)

    def ship(self, force: bool = False) -> None:
        """Whatever changed since the last call, in the order the parent needs it."""
        now = time.monotonic()
        # in pieces: the window takes one message per callback, and a join's key history (a
        # value for every key of 2,000 comms: 40,000 entries) took 300 ms as one
        if self._events or self._new_frames():
            events, frames = self._events[:], self._take_frames()
            self._events.clear()
            for i in range(0, max(len(events), len(frames)), BATCH):
                self.send(LogBatch(events[i:i + BATCH], frames[i:i + BATCH]))
        if self._entries:
            entries = self._entries[:]
            self._entries.clear()
            for i in range(0, len(entries), BATCH):
                self.send(Entries(entries[i:i + BATCH]))
        status = self.status()
        if force or status != self._last_status or now - self._status_at > STATUS_EVERY_S:
            self.send(status)
            self._last_status, self._status_at = status, now
        slow = self.writer.transport.get_write_buffer_size() > HIGH_WATER
        if (self._dirty or force) and not slow:
            self._dirty = False
            for data in self.snapshots.encode(self.session.snapshot()):
                self.writer.write(framed(data))
            self._watch_due = True
        if self._watch_due or now - self._watch_at > WATCH_EVERY_S:
            self.send(self.watched())
            self._watch_due, self._watch_at = False, now

    def _new_frames(self) -> bool:
        return self.session.log.last_frame_seq > self._frame_seq

    def _take_frames(self) -> list[FrameRecord]:
        lg = self.session.log
        out = lg.frames_since(self._frame_seq)
        self._frame_seq = lg.last_frame_seq
        return out

    def status(self) -> Status:
        s = self.session
        reps = [ReplicaHealth(r.name, r.messages_in, len(r.unapplied), bool(r.converged))
                for r in (getattr(s, "replicas", None) or {}).values()]
        rec = getattr(s, "recording", None)
        recorder = None
        if rec is not None:
            ring = rec.recorder.ring
            recorder = RecorderStatus(rec.options.ring_bytes, rec.options.ring_age,
                                      ring.size if ring is not None else None, rec.file)
        has = [n for n in ("divergence", "integrity", "history", "resolver") if getattr(s, n, None) is not None]
        tap = getattr(s, "tap", None)
        return Status(s.state, str(s.error) if s.error is not None else None, s.retry_at, reps, recorder, has,
                      (tap.state, tap.received) if tap is not None else None, s.connections)

    def watched(self) -> Watched:
        from .integrity import with_saved

        s, w = self.session, self._watch
        views = None
        if w.comm_id is not None and (div := getattr(s, "divergence", None)) is not None:
            integ = getattr(s, "integrity", None)
            views = with_saved(div.key_views(w.comm_id), integ.saved_state() if integ is not None else None,
                               w.comm_id)
        intervals: list[tuple[float, float | None]] = []
        if w.key is not None and (hist := getattr(s, "history", None)) is not None:
            intervals = hist.divergence_intervals(*w.key)
        return Watched(w.comm_id, views, w.key, intervals)

    async def answer(self, call: Call) -> Reply:
        s = self.session
        try:
            if call.op == "fetch_blob":
                if s.resolver is None:
                    raise RuntimeError("not connected")
                blob = await s.resolver.fetch_content(str(call.args[0]))
                return Reply(call.id, dataclasses.asdict(blob))
            if call.op == "blob_bytes":
                integ = getattr(s, "integrity", None)
                return Reply(call.id, integ.blob_bytes(str(call.args[0])) if integ is not None else None)
            rec = getattr(s, "recording", None)
            if rec is None:
                raise RuntimeError("this session has no recorder")
            if call.op == "record_start":
                rec.start_file(str(call.args[0]))
                return Reply(call.id, rec.file)
            if call.op == "record_stop":
                return Reply(call.id, rec.stop_file())
            if call.op == "save_ring":
                return Reply(call.id, rec.save_ring(str(call.args[0]), call.args[1]))
            raise ValueError(f"unknown call {call.op!r}")
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the window as text
            return Reply(call.id, None, f"{type(exc).__name__}: {exc}")
        finally:
            self._dirty = True  # a recording started or stopped: the status says so at once


async def serve(sock: socket.socket, args: argparse.Namespace) -> int:
    """The child's life: one session, run as the CLI runs it, until the parent says stop or goes."""
    from .cli import make_session

    reader, writer = await asyncio.open_unix_connection(sock=sock)
    session = make_session(args)
    session.config.keep_frame_bodies = True  # the window's hex view
    pub = Publisher(session, writer)
    loop = asyncio.get_running_loop()

    def settle(e: Event) -> None:
        # as `watch` does, after each join: the collector's full passes skip the joined room (the
        # pause is the child's, the window does not wait on it)
        if e.kind == ev.CONNECTION and e.data.get("state") == "live":
            from .collector import settle_after_join

            loop.call_soon(settle_after_join)

    session.log.subscribe(settle)
    run = asyncio.create_task(session.run_forever())
    shipping = asyncio.create_task(pub.run())
    dec = msgspec.msgpack.Decoder(ToChild)
    calls: set[asyncio.Task[Any]] = set()

    async def answer(call: Call) -> None:
        pub.send(await pub.answer(call))

    async def commands() -> None:
        while (data := await read_message(reader)) is not None:  # None: the window is gone
            msg = dec.decode(data)
            if isinstance(msg, Stop):
                return
            if isinstance(msg, Watch):
                pub.watch(msg)
            else:
                t = asyncio.create_task(answer(msg))
                calls.add(t)
                t.add_done_callback(calls.discard)

    listening = asyncio.create_task(commands())
    code = 0
    try:
        await asyncio.wait({run, listening}, return_when=asyncio.FIRST_COMPLETED)
        if run.done() and not run.cancelled() and (exc := run.exception()) is not None:
            # run_forever only ends on stop: anything else is a bug, shown in the window's log
            log.error("the session ended: %r", exc)
            session.log.emit(ev.ERROR, f"the session core failed: {type(exc).__name__}: {exc}",
                             {"type": type(exc).__name__})
            code = 1
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(session.stop(), 5)
        run.cancel()
        with contextlib.suppress(BaseException):
            await run
        for t in (shipping, listening, *calls):
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(Exception):
            pub.ship(force=True)  # the closing events and the final state
            await asyncio.wait_for(writer.drain(), 5)
        pub.close()
        writer.close()
    return code


def child_main(argv: list[str]) -> int:
    """`python -m inspector.core_process FD OPTIONS_JSON`."""
    from .logging_setup import stderr_level

    fd, options = int(argv[0]), msgspec.json.decode(argv[1].encode())
    # stderr only: the window's process owns the rotating log file
    logging.basicConfig(level=stderr_level(int(options.get("verbose") or 0)), stream=sys.stderr,
                        format="runtimed-inspector core %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=fd)
    return asyncio.run(serve(sock, argparse.Namespace(**options)))


# -- the parent ---------------------------------------------------------------------------------------

def child_command(fd: int, options: dict[str, Any]) -> list[str]:
    """How to start the child (a frozen bundle routes this form to `child_main`: packaging/entry.py)."""
    return [sys.executable, "-m", "inspector.core_process", str(fd), msgspec.json.encode(options).decode()]


def _jsonable_options(args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for k, v in vars(args).items():
        try:
            msgspec.json.encode(v)
        except (TypeError, msgspec.EncodeError):
            continue  # a parser's callable: the child does not run a command
        out[k] = v
    return out


class _Config:
    def __init__(self, socket_path: str, notebook_id: str) -> None:
        self.socket_path = socket_path
        self.notebook_id = notebook_id
        self.keep_frame_bodies = True


@dataclasses.dataclass
class _Replica:
    name: str
    messages_in: int
    unapplied: range  # only its length is read: changes waiting for their dependencies
    converged: bool


class _Part:
    """Base of the parent's stand-ins for the child's session parts."""

    def __init__(self, owner: ProcessSession) -> None:
        self.owner = owner


class _Divergence(_Part):
    @property
    def tap(self) -> _Tap | None:
        return self.owner.tap  # the one tap the child's engine reads

    def key_views(self, comm_id: str, now: float | None = None) -> CompareViews | None:
        """The child's views of the comm (saved state included) as last shipped; asking for
        another comm watches it, and its views follow within one shipment."""
        o = self.owner
        o.watch(comm_id=comm_id)
        w = o.watched
        return w.views if w is not None and w.comm_id == comm_id else None


class _Integrity(_Part):
    def saved_state(self) -> None:
        return None  # the child's key views already carry the saved notebook's state

    def blob_bytes(self, digest: str) -> bytes | None:
        """Bytes the child already resolved; a miss asks for them, and a refresh follows."""
        o = self.owner
        if digest in o.blobs:
            return o.blobs[digest]
        if digest not in o.blob_asks:
            o.blob_asks.add(digest)
            o.spawn_call("blob_bytes", digest, then=lambda v, d=digest: o.got_blob(d, v))
        return None


class _Resolver(_Part):
    async def fetch_content(self, digest: str) -> Any:
        from .blobs import Blob

        value = await self.owner.call("fetch_blob", digest)
        return Blob(**value)


class _History(_Part):
    def __init__(self, owner: ProcessSession, history: KeyHistory) -> None:
        super().__init__(owner)
        self.history = history

    def divergence_intervals(self, comm_id: str, key: str) -> list[tuple[float, float | None]]:
        o = self.owner
        o.watch(key=(comm_id, key))
        w = o.watched
        return list(w.intervals) if w is not None and w.key == (comm_id, key) else []


class _Tap:
    def __init__(self, state: str, received: int) -> None:
        self.state = state  # connecting | live | dead | ...
        self.received = received  # IOPub messages the child's kernel tap took


class _Ring:
    def __init__(self, size: int) -> None:
        self.size = size


class _Recorder:
    def __init__(self, ring: _Ring | None) -> None:
        self.ring = ring


class _Recording(_Part):
    """The child's recorder: its bounds as last shipped; starting and stopping are calls."""

    def __init__(self, owner: ProcessSession, st: RecorderStatus) -> None:
        super().__init__(owner)
        from .recording.session_recording import RecordingOptions

        self.options = RecordingOptions(ring_bytes=st.ring_bytes, ring_age=st.ring_age)
        self.recorder = _Recorder(_Ring(st.ring_size) if st.ring_size is not None else None)
        self.file = st.file

    async def start_file(self, path: str) -> None:
        self.file = await self.owner.call("record_start", os.path.abspath(path), errors=OSError)

    async def stop_file(self) -> str | None:
        path = await self.owner.call("record_stop")
        self.file = None
        return path

    async def save_ring(self, path: str, last: float | None = None) -> int:
        return int(await self.owner.call("save_ring", os.path.abspath(path), last, errors=OSError))


class ProcessSession:
    """The window's end of a session whose core runs in a child process (see the module text).

    It offers what the window reads of a `PeerSession`: `state`, `error`, `retry_at`, `log`,
    `replicas` (their health), `snapshot()`, `add_listener`, `run_forever()`, `stop()`, and the
    parts `divergence`, `integrity`, `history`, `recording`, `resolver` once the child says it
    has them."""

    core_elsewhere = True  # the replicas live in the child: this process holds only what it shows

    def __init__(self, args: argparse.Namespace, socket_path: str, notebook_id: str) -> None:
        self.args = args
        self.config = _Config(socket_path, notebook_id)
        self.log = EventLog(max_bytes=int(getattr(args, "log_mb", 64.0) * 1024 * 1024))
        self.state = "connecting"
        self.error: str | None = None
        self.retry_at: float | None = None
        self.replicas: dict[str, _Replica] = {}
        self.divergence: _Divergence | None = None
        self.integrity: _Integrity | None = None
        # the child's session always keeps a key history (cli.make_session); the window's pane
        # takes this one at attach, before the child has said anything
        self._key_history = KeyHistory()
        self.history: _History | None = _History(self, self._key_history)
        self.recording: _Recording | None = None
        self.resolver: _Resolver | None = None
        self.tap: _Tap | None = None
        self.connections = 0
        self.watched: Watched | None = None
        self._watching = Watch(None, None)
        self.blobs: dict[str, bytes | None] = {}
        self.blob_asks: set[str] = set()
        self._assembler = SnapshotAssembler()
        self._snapshot = Snapshot(DaemonView(socket=socket_path), notebook_id, None, (), (), {}, (),
                                  FeedView(received_comm_sync=False, comms=(), baseline="pending"), KernelView(),
                                  connection="connecting", taken_at=time.time())
        self._listeners: list[Callable[[set[str]], None]] = []
        self._writer: asyncio.StreamWriter | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._call_seq = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._enc = msgspec.msgpack.Encoder()
        self.messages = 0  # from the child, for the figures
        self.longest_take_ms = 0.0  # the longest single message handled on this loop

    # -- what the window reads ---------------------------------------------------------------------

    def clock(self) -> float:
        return time.monotonic()  # the child's monotonic clock is the same (one machine)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def add_listener(self, fn: Callable[[set[str]], None]) -> Callable[[], None]:
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def _notify(self) -> None:
        for fn in list(self._listeners):
            fn(set())

    # -- watching and calls ------------------------------------------------------------------------

    def watch(self, comm_id: str | None = ..., key: tuple[str, str] | None = ...) -> None:  # type: ignore[assignment]
        w = Watch(self._watching.comm_id if comm_id is ... else comm_id,
                  self._watching.key if key is ... else key)
        if w != self._watching:
            self._watching = w
            self._send(w)

    def _send(self, msg: Any) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(framed(self._enc.encode(msg)))

    async def call(self, op: str, *args: Any, errors: type[Exception] = RuntimeError) -> Any:
        """Ask the child; its failure is raised here as `errors` with the child's message."""
        if self._writer is None or self._writer.is_closing():
            raise errors("the session is not running")
        self._call_seq += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[self._call_seq] = fut
        self._send(Call(self._call_seq, op, list(args)))
        reply: Reply = await fut
        if reply.error is not None:
            raise errors(reply.error)
        return reply.value

    def spawn_call(self, op: str, *args: Any, then: Callable[[Any], None]) -> None:
        async def run() -> None:
            with contextlib.suppress(Exception):
                then(await self.call(op, *args))

        t = asyncio.get_running_loop().create_task(run())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def got_blob(self, digest: str, data: bytes | None) -> None:
        self.blob_asks.discard(digest)
        if data is not None:
            self.blobs[digest] = data
            self._notify()

    # -- running -----------------------------------------------------------------------------------

    async def run_forever(self) -> None:
        """Start the child and follow it until `stop()` or until it ends."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            opts = _jsonable_options(self.args)
            self._proc = await asyncio.create_subprocess_exec(*child_command(child.fileno(), opts),
                                                              pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        finally:
            child.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        if self._watching != Watch(None, None):
            self._send(self._watching)
        dec = msgspec.msgpack.Decoder(ToParent)
        try:
            while True:
                data = await read_message(reader)
                if data is None:
                    break
                t0 = time.perf_counter()
                self._take(dec.decode(data))
                self.longest_take_ms = max(self.longest_take_ms, (time.perf_counter() - t0) * 1000)
                self.messages += 1
                await asyncio.sleep(0)  # one message per callback: the window draws in between
        except (CoreProcessError, msgspec.DecodeError) as exc:
            self._ended(f"the session process broke its protocol: {exc}")
            raise
        finally:
            for fut in self._calls.values():
                if not fut.done():
                    fut.set_result(Reply(0, None, "the session process ended"))
            self._calls.clear()
            self._writer.close()
        code = await self._proc.wait()
        if not self._stopping:
            self._ended(f"the session process exited with code {code}")

    def _ended(self, why: str) -> None:
        if self.state == "error":
            return
        self.state, self.error = "error", why
        self.log.emit(ev.ERROR, why, {"type": "CoreProcessError"})
        self.log.emit(ev.CONNECTION, f"error: {why}", {"state": "error", "detail": why})
        self._notify()

    def _take(self, msg: Any) -> None:
        if isinstance(msg, (CellChunk, CommChunk, FeedChunk)):
            self._assembler.take_message(msg)
        elif isinstance(msg, Header):
            self._snapshot = self._assembler.take_message(msg) or self._snapshot
            self._notify()
        elif isinstance(msg, LogBatch):
            for rec in msg.frames:
                self.log.adopt_frame(rec)
            for e in msg.events:
                if e.kind == ev.CONNECTION and (st := e.data.get("state")):
                    self.state = st  # before the listeners hear it, as a PeerSession does
                self.log.adopt(e)
        elif isinstance(msg, Entries):
            for entry in msg.entries:
                self._key_history.add(entry)
        elif isinstance(msg, Status):
            self._take_status(msg)
        elif isinstance(msg, Watched):
            changed = msg != self.watched
            self.watched = msg
            if changed:
                self._notify()
        elif isinstance(msg, Reply):
            fut = self._calls.pop(msg.id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    def _take_status(self, st: Status) -> None:
        self.state, self.error, self.retry_at = st.state, st.error, st.retry_at
        self.replicas = {r.name: _Replica(r.name, r.messages_in, range(r.unapplied), r.converged) for r in st.replicas}
        has = set(st.has)
        self.tap = _Tap(*st.tap) if st.tap is not None else None
        self.connections = st.connections
        self.divergence = _Divergence(self) if "divergence" in has else None
        self.integrity = _Integrity(self) if "integrity" in has else None
        self.resolver = _Resolver(self) if "resolver" in has else None
        if st.recorder is not None:
            if self.recording is None:
                self.recording = _Recording(self, st.recorder)
            else:
                self.recording.recorder.ring = _Ring(st.recorder.ring_size) if st.recorder.ring_size is not None \
                    else None
                self.recording.file = st.recorder.file

    async def stop(self) -> None:
        """Ask the child to end its session (it flushes its recorder) and wait for it."""
        self._stopping = True
        self._send(Stop())
        proc = self._proc
        if proc is None:
            return
        try:
            await asyncio.wait_for(proc.wait(), 2.5)  # within the window's 3 s for a stop
        except TimeoutError:
            proc.kill()
            await proc.wait()


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
