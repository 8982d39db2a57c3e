"""One notebook room: the shared document, its peers, the kernel, CommState and its dual-write.

Everything here runs on the daemon's single asyncio loop, so the order of operations is the
order the code reads: for every IOPub comm message the CommState mutation comes first, then
the `doc.comms` write (#808), then the broadcast, as in the daemon's IOPub task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from automerge.core import SyncState

from ..comm_table import CommRecord, CommTable
from ..protocol import messages as m
from ..protocol.framing import FrameType, encode_frame, encode_typed
from ..protocol.presence import encode_presence
from .kernel import Kernel
from .notebook_doc import NotebookDoc

if TYPE_CHECKING:
    from .server import Daemon

log = logging.getLogger("inspector.testbed.room")

_SYNC = object()  # queue marker: "generate a sync message for this peer now"
_CLOSE = object()
_OUTPUT_TYPES = ("stream", "display_data", "execute_result", "error", "clear_output")
_LABEL_STRIP = re.compile("[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def clean_label(label: str) -> str:
    """Peer labels as the daemon relays them: no control/zero-width/bidi chars, trimmed, <= 64."""
    text = _LABEL_STRIP.sub("", label).strip()[:64]
    return text or "peer"


def render_terminal(text: str) -> str:
    """Minimal terminal emulation for stream text: a bare `\\r` rewinds the current line."""
    lines = text.split("\n")
    out = []
    for line in lines:
        if "\r" in line:
            parts = [p for p in line.split("\r")]
            rendered = ""
            for part in parts:
                rendered = part + rendered[len(part):]
            line = rendered
        out.append(line)
    return "\n".join(out)


class Peer:
    """One notebook connection as the room sees it: a sync state and an ordered outbox."""

    def __init__(self, room: Room, writer: asyncio.StreamWriter, peer_id: str | None = None) -> None:
        self.room = room
        self.writer = writer
        self.peer_id = peer_id or str(uuid.uuid4())
        self.sync_state = SyncState()
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.sync_pending = False
        self.presence: dict[str, Any] = {}
        self.label: str | None = None
        self.closed = False

    def send(self, frame: bytes) -> None:
        if not self.closed:
            self.outbox.put_nowait(frame)

    def wake_sync(self) -> None:
        # One pending marker is enough: the message is generated when the marker is reached.
        if not self.sync_pending and not self.closed:
            self.sync_pending = True
            self.outbox.put_nowait(_SYNC)

    def first_sync_frame(self) -> bytes | None:
        msg = self.room.doc.doc.generate_sync_message(self.sync_state)
        return None if msg is None else encode_typed(FrameType.AUTOMERGE_SYNC, msg.encode())

    def close(self) -> None:
        if not self.closed:
            self.outbox.put_nowait(_CLOSE)
            self.closed = True

    async def writer_loop(self) -> None:
        try:
            while True:
                item = await self.outbox.get()
                if item is _CLOSE:
                    return
                if item is _SYNC:
                    self.sync_pending = False
                    frame = self.first_sync_frame()
                    if frame is None:
                        continue
                else:
                    frame = item
                self.writer.write(frame)
                await self.writer.drain()
        except (ConnectionError, OSError):
            return


class Room:
    def __init__(self, daemon: Daemon, notebook_id: str, doc: NotebookDoc, *, trusted: bool = True,
                 pinned: bool = False, path: str | None = None) -> None:
        self.daemon = daemon
        self.notebook_id = notebook_id
        self.doc = doc
        self.trusted = trusted
        self.pinned = pinned  # rooms from the command line survive eviction (kernel stopped only)
        self.path = path
        self.peers: list[Peer] = []
        self.comms = CommTable()  # the daemon's CommState
        self.kernel: Kernel | None = None
        self.kernel_lock = asyncio.Lock()
        self.queue: list[str] = []
        self.executing: str | None = None
        self._queue_wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._evict_task: asyncio.Task[None] | None = None
        self._msg_cell: dict[str, str] = {}  # execute msg_id -> cell_id
        self._idle: dict[str, asyncio.Future[None]] = {}
        self._done_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._stream: dict[str, tuple[int, str, str, str]] = {}  # cell -> (index, name, raw text, hash)
        self._cell_clear_wait: set[str] = set()
        self._cell_errored: set[str] = set()
        self._comm_clear_wait: set[str] = set()  # Output widgets with a deferred clear_output
        self._doc_seq: dict[str, int] = {}  # seq written to the doc per comm (faults may differ)
        self._delayed: asyncio.Queue[tuple[float, Callable[[], Any]]] | None = None
        self._delay_task: asyncio.Task[None] | None = None
        self.listeners: list[Callable[[Any], None]] = []  # in-process broadcast observers
        self.created_at = time.time()

    # -- fan-out ---------------------------------------------------------------------------

    @property
    def faults(self) -> Any:
        return self.daemon.faults

    def doc_changed(self) -> None:
        for peer in self.peers:
            peer.wake_sync()

    def broadcast(self, msg: Any) -> None:
        frame = encode_typed(FrameType.BROADCAST, m.encode(msg))
        for peer in self.peers:
            peer.send(frame)
        for listener in list(self.listeners):
            try:
                listener(msg)
            except Exception:
                log.exception("broadcast listener failed")

    # -- peers -----------------------------------------------------------------------------

    def join(self, peer: Peer, reply: bytes) -> None:
        """Join sequence (wire-protocol §7.1), all in one synchronous step so no event slips in."""
        peer.send(encode_frame(reply))
        first = peer.first_sync_frame()
        if first is not None:
            peer.send(first)
        if self.comms.comms:
            peer.send(encode_typed(FrameType.BROADCAST, m.encode(self.comm_sync())))
        snapshot = self.presence_snapshot(exclude=peer, sender="daemon")
        if snapshot is not None:
            peer.send(snapshot)
        self.peers.append(peer)
        if self._evict_task is not None:
            self._evict_task.cancel()
            self._evict_task = None
        if len(self.peers) == 1 and self.kernel is None and self.trusted and self.daemon.auto_launch:
            asyncio.get_running_loop().create_task(self.launch_kernel(auto=True))

    def leave(self, peer: Peer) -> None:
        if peer not in self.peers:
            return
        self.peers.remove(peer)
        peer.close()
        left = encode_typed(FrameType.PRESENCE, encode_presence({"type": "left", "peer_id": peer.peer_id}))
        for other in self.peers:
            other.send(left)
        if not self.peers:
            self._evict_task = asyncio.get_running_loop().create_task(self._evict_later())

    async def _evict_later(self) -> None:
        await asyncio.sleep(self.daemon.keep_alive)
        if self.peers:
            return
        log.info("evicting room %s after %.1fs with no peers", self.notebook_id, self.daemon.keep_alive)
        await self.shutdown_kernel(broadcast=False)
        if not self.pinned:
            self.daemon.rooms.pop(self.notebook_id, None)

    def comm_sync(self) -> m.CommSync:
        return m.CommSync(comms=[
            m.CommSnapshot(comm_id=r.comm_id, target_name=r.target_name, state=r.state,
                           model_module=r.model_module, model_name=r.model_name,
                           buffers=[list(b) for b in r.open_buffers])
            for r in self.comms.ordered()
        ])

    # -- presence (§10) --------------------------------------------------------------------

    def presence_snapshot(self, exclude: Peer | None, sender: str) -> bytes | None:
        peers = [
            {"peer_id": p.peer_id, "peer_label": p.label or "peer",
             "channels": [{"channel": ch, "data": data} for ch, data in p.presence.items()]}
            for p in self.peers if p is not exclude and p.presence
        ]
        if not peers:
            return None
        return encode_typed(FrameType.PRESENCE, encode_presence({"type": "snapshot", "peer_id": sender, "peers": peers}))

    def presence_update(self, peer: Peer, raw: dict[str, Any]) -> None:
        channel = raw.get("channel")
        if not isinstance(channel, str) or channel == "kernel_state":
            return  # the daemon owns kernel_state
        first = not peer.presence
        label = raw.get("peer_label")
        if isinstance(label, str):
            peer.label = clean_label(label)
        peer.presence[channel] = raw.get("data")
        relay: dict[str, Any] = {"type": "update", "peer_id": peer.peer_id}
        if peer.label is not None:
            relay["peer_label"] = peer.label
        relay["channel"] = channel
        relay["data"] = raw.get("data")
        frame = encode_typed(FrameType.PRESENCE, encode_presence(relay))
        for other in self.peers:
            if other is not peer:
                other.send(frame)
        if first:
            snap = self.presence_snapshot(exclude=peer, sender="daemon")
            if snap is not None:
                peer.send(snap)

    # -- kernel lifecycle ------------------------------------------------------------------

    def _launched(self, kernel: Kernel, already: bool) -> Any:
        import sys

        cfg = m.LaunchedEnvConfig(python_path=sys.executable, venv_path=sys.prefix)
        cls = m.KernelAlreadyRunning if already else m.KernelLaunched
        return cls(kernel_type=kernel.kernel_type, env_source=kernel.env_source, launched_config=cfg)

    async def launch_kernel(self, auto: bool = False) -> Any:
        async with self.kernel_lock:
            if self.kernel is not None:
                return self._launched(self.kernel, already=True)
            self._clear_comm_state()
            self.broadcast(m.KernelStatus(status="starting", cell_id=None))
            kernel = Kernel(self._on_iopub, self._on_kernel_death)
            cwd = None
            if self.path:
                import os

                cwd = os.path.dirname(self.path) or None
            try:
                await kernel.start(cwd)
            except Exception as exc:
                log.exception("kernel launch failed")
                if auto:
                    self.broadcast(m.KernelStatus(status=f"error: {exc}", cell_id=None))
                return m.ErrorResponse(error=f"Failed to launch kernel: {exc}")
            self.kernel = kernel
            self.daemon.kernels_started += 1
            self._worker = asyncio.get_running_loop().create_task(self._execution_worker())
            self.broadcast(m.KernelStatus(status="idle", cell_id=None))
            if auto:
                self.broadcast(m.KernelStatus(status="idle", cell_id=None))
            log.info("kernel launched in room %s (pid %s)", self.notebook_id, kernel.pid)
            return self._launched(kernel, already=False)

    async def shutdown_kernel(self, broadcast: bool = True) -> Any:
        async with self.kernel_lock:
            kernel = self.kernel
            if kernel is None:
                return m.NoKernel()
            if broadcast:
                self.broadcast(m.KernelStatus(status="shutdown", cell_id=None))
            self.kernel = None
            if self._worker is not None:
                self._worker.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._worker
                self._worker = None
            had_queue = bool(self.queue or self.executing)
            self.queue.clear()
            self.executing = None
            self._fail_waiters()
            await kernel.shutdown()  # stops the IOPub task first: no comm message after this
            self._clear_comm_state()
            if had_queue and broadcast:
                self.broadcast(m.QueueChanged(executing=None, queued=[]))
            return m.KernelShuttingDown()

    async def _on_kernel_death(self) -> None:
        # Seed-era daemon: the dead kernel stays in the room and CommState is kept.
        log.warning("kernel in room %s died", self.notebook_id)
        self.queue.clear()
        self.executing = None
        self._fail_waiters()
        self.broadcast(m.KernelStatus(status="error", cell_id=None))
        self.broadcast(m.QueueChanged(executing=None, queued=[]))
        self.broadcast(m.QueueChanged(executing=None, queued=[]))

    def _fail_waiters(self) -> None:
        for futs in self._done_waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_exception(RuntimeError("execution cancelled: kernel gone"))
        self._done_waiters.clear()
        for fut in self._idle.values():
            if not fut.done():
                fut.cancel()
        self._idle.clear()

    def kernel_info(self) -> m.KernelInfo:
        k = self.kernel
        if k is None:
            return m.KernelInfo(kernel_type=None, env_source=None, status="not_started")
        return m.KernelInfo(kernel_type=k.kernel_type, env_source=k.env_source, status=k.status)

    def room_info(self) -> dict[str, Any]:
        """RoomInfo as the daemon serializes it: the kernel keys exactly when has_kernel."""
        info: dict[str, Any] = {"notebook_id": self.notebook_id, "active_peers": len(self.peers),
                                "has_kernel": self.kernel is not None}
        if self.kernel is not None:
            info.update(kernel_type=self.kernel.kernel_type, env_source=self.kernel.env_source,
                        kernel_status=self.kernel.status)
        return info

    # -- execution queue -------------------------------------------------------------------

    def _queue_changed(self) -> None:
        self.broadcast(m.QueueChanged(executing=self.executing, queued=list(self.queue)))

    def enqueue(self, cell_id: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done_waiters.setdefault(cell_id, []).append(fut)
        self.queue.append(cell_id)
        self._queue_changed()
        self._queue_wake.set()
        return fut

    async def _execution_worker(self) -> None:
        while True:
            while not self.queue:
                self._queue_wake.clear()
                await self._queue_wake.wait()
            kernel = self.kernel
            if kernel is None or kernel.dead:
                return
            cell_id = self.queue.pop(0)
            self.executing = cell_id
            self._queue_changed()
            cell = self.doc.cell(cell_id)
            source = cell["source"] if cell else ""
            self._cell_errored.discard(cell_id)
            msg_id, reply = kernel.execute(source)
            self._msg_cell[msg_id] = cell_id
            idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle[msg_id] = idle
            try:
                await asyncio.gather(reply, idle)
            except (RuntimeError, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and self.kernel is kernel and not kernel.dead:
                    raise
                return
            finally:
                self._idle.pop(msg_id, None)
            self.executing = None
            # FIFO outbox: the sync marker queued by this cell's doc writes goes out first.
            self.broadcast(m.ExecutionDone(cell_id=cell_id))
            for fut in self._done_waiters.pop(cell_id, [])[:1]:
                if not fut.done():
                    fut.set_result(None)
            rest = self._done_waiters.get(cell_id)
            if rest == []:
                self._done_waiters.pop(cell_id, None)
            if cell_id in self._cell_errored:
                # stop on error: the rest of the queue is dropped
                for dropped in self.queue:
                    for fut in self._done_waiters.pop(dropped, []):
                        if not fut.done():
                            fut.set_exception(RuntimeError(f"not run: cell {cell_id} raised"))
                self.queue.clear()
            self._queue_changed()

    # -- IOPub -----------------------------------------------------------------------------

    async def _on_iopub(self, msg: dict[str, Any]) -> None:
        mt = msg.get("msg_type") or msg.get("header", {}).get("msg_type")
        content = msg.get("content") or {}
        parent_id = (msg.get("parent_header") or {}).get("msg_id") or ""
        cell_id = self._msg_cell.get(parent_id)
        if mt == "status":
            state = content.get("execution_state")
            if state == "starting" or not isinstance(state, str):
                return  # the launch path reports starting itself
            if self.kernel is not None and not self.kernel.dead:
                self.kernel.status = state
            self.broadcast(m.KernelStatus(status=state, cell_id=cell_id))
            if state == "idle" and parent_id in self._idle and not self._idle[parent_id].done():
                self._idle[parent_id].set_result(None)
        elif mt == "execute_input":
            if cell_id is not None:
                count = content.get("execution_count")
                self._stream.pop(cell_id, None)
                self._cell_clear_wait.discard(cell_id)
                self.doc.reset_outputs(cell_id, str(count) if isinstance(count, int) else "null")
                self.doc_changed()
                self.broadcast(m.ExecutionStarted(cell_id=cell_id, execution_count=int(count or 0)))
        elif mt in _OUTPUT_TYPES:
            target = self.comms.capture_target(parent_id) if parent_id else None
            if target is not None:
                self._route_capture(target, mt, content)
            elif cell_id is not None:
                self._cell_output(cell_id, mt, content)
        elif mt == "update_display_data":
            self._update_display(content)
        elif mt in ("comm_open", "comm_msg", "comm_close"):
            self._on_comm(mt, content, [bytes(b) for b in msg.get("buffers") or []])

    # -- cell outputs ----------------------------------------------------------------------

    @staticmethod
    def nbformat_output(mt: str, content: dict[str, Any]) -> dict[str, Any]:
        if mt == "stream":
            return {"output_type": "stream", "name": content.get("name", "stdout"), "text": content.get("text", "")}
        if mt == "error":
            return {"output_type": "error", "ename": content.get("ename", ""), "evalue": content.get("evalue", ""),
                    "traceback": content.get("traceback", [])}
        out: dict[str, Any] = {"output_type": mt, "data": content.get("data") or {},
                               "metadata": content.get("metadata") or {}}
        if mt == "execute_result":
            out["execution_count"] = content.get("execution_count")
        if content.get("transient"):
            out["transient"] = content["transient"]
        return out

    def _cell_output(self, cell_id: str, mt: str, content: dict[str, Any]) -> None:
        store = self.daemon.blobs
        if mt == "clear_output":
            if content.get("wait"):
                self._cell_clear_wait.add(cell_id)
            else:
                self._stream.pop(cell_id, None)
                self.doc.reset_outputs(cell_id)
                self.doc_changed()
            return
        if cell_id in self._cell_clear_wait:
            self._cell_clear_wait.discard(cell_id)
            self._stream.pop(cell_id, None)
            self.doc.reset_outputs(cell_id)
        if mt == "stream":
            name = content.get("name", "stdout")
            chunk = content.get("text", "")
            outputs = self.doc.outputs(cell_id)
            last = self._stream.get(cell_id)
            if last and last[1] == name and last[0] == len(outputs) - 1 and outputs[last[0]] == last[3]:
                raw = last[2] + chunk
                digest = store.store_manifest({"output_type": "stream", "name": name, "text": render_terminal(raw)})
                self.doc.set_output(cell_id, last[0], digest)
                index: int | None = last[0]
                self._stream[cell_id] = (last[0], name, raw, digest)
            else:
                digest = store.store_manifest({"output_type": "stream", "name": name, "text": render_terminal(chunk)})
                idx = self.doc.append_output(cell_id, digest)
                index = None
                if idx is not None:
                    self._stream[cell_id] = (idx, name, chunk, digest)
            self.doc_changed()
            self.broadcast(m.OutputBroadcast(cell_id=cell_id, output_type="stream", output_json=digest, output_index=index))
            return
        output = self.nbformat_output(mt, content)
        digest = store.store_manifest(output)
        self.doc.append_output(cell_id, digest)
        self._stream.pop(cell_id, None)
        if mt == "error":
            self._cell_errored.add(cell_id)
        self.doc_changed()
        self.broadcast(m.OutputBroadcast(cell_id=cell_id, output_type=mt, output_json=digest))

    def _update_display(self, content: dict[str, Any]) -> None:
        display_id = (content.get("transient") or {}).get("display_id")
        if not display_id:
            return
        store = self.daemon.blobs
        for cell_id in self.doc.cell_ids():
            for index, entry in enumerate(self.doc.outputs(cell_id)):
                manifest = store.get_json(entry) if len(entry) == 64 else None
                if manifest is None:
                    try:
                        manifest = json.loads(entry)
                    except ValueError:
                        continue
                    raw = True
                else:
                    raw = False
                if not isinstance(manifest, dict) or (manifest.get("transient") or {}).get("display_id") != display_id:
                    continue
                new = {"output_type": manifest.get("output_type", "display_data"), "data": content.get("data") or {},
                       "metadata": content.get("metadata") or {}, "transient": {"display_id": display_id}}
                if new["output_type"] == "execute_result":
                    new["execution_count"] = manifest.get("execution_count")
                self.doc.set_output(cell_id, index, json.dumps(new) if raw else store.store_manifest(new))
                self.doc_changed()
                self.broadcast(m.DisplayUpdate(display_id=display_id, data=content.get("data") or {},
                                               metadata=content.get("metadata") or {}))
                return

    # -- Output-widget capture (comm-semantics §4 + #808 outputs list) -----------------------

    def _route_capture(self, comm_id: str, mt: str, content: dict[str, Any]) -> None:
        rec = self.comms.comms.get(comm_id)
        model, seq = (rec.model_name, rec.seq) if rec else (None, None)
        if mt == "clear_output":
            wait = bool(content.get("wait"))
            if wait:
                self._comm_clear_wait.add(comm_id)
            else:
                self._comm_clear_wait.discard(comm_id)
                self._doc_comm_write(lambda: self.doc.clear_comm_outputs(comm_id), model, seq)
            inner: dict[str, Any] = {"method": "clear_output", "wait": wait}
        else:
            output = self.nbformat_output(mt, content)
            if not self.faults.active("doc-drop-output", model, seq):
                digest = self.daemon.blobs.store_manifest(output)
                clear_first = comm_id in self._comm_clear_wait

                def write() -> None:
                    if clear_first:
                        self.doc.clear_comm_outputs(comm_id)
                    self.doc.append_comm_output(comm_id, digest)

                self._doc_comm_write(write, model, seq)
            self._comm_clear_wait.discard(comm_id)
            inner = {"method": "output", "output": output}
        self.broadcast(m.Comm(msg_type="comm_msg",
                              content={"comm_id": comm_id, "data": {"method": "custom", "content": inner}},
                              buffers=[]))

    # -- comms: CommState, dual-write, broadcast --------------------------------------------

    def _doc_comm_write(self, write: Callable[[], Any], model: str | None, seq: int | None) -> None:
        """Apply one `doc.comms` write now, or late under doc-delay-ms (order always kept)."""
        if self.faults.any("doc-delay-ms") or (self._delayed is not None and not self._delayed.empty()):
            fault = self.faults.active("doc-delay-ms", model, seq)
            delay = (fault.value or 0) / 1000.0 if fault else 0.0
            if self._delayed is None:
                self._delayed = asyncio.Queue()
                self._delay_task = asyncio.get_running_loop().create_task(self._delayed_writer())
            self._delayed.put_nowait((time.monotonic() + delay, write))
            return
        write()
        self.doc_changed()

    async def _delayed_writer(self) -> None:
        assert self._delayed is not None
        while True:
            due, write = await self._delayed.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                write()
            except Exception:
                log.exception("delayed doc write failed")
            self.doc_changed()

    def _clear_comm_state(self) -> None:
        self.comms.clear()
        self._comm_clear_wait.clear()
        self._doc_seq.clear()
        self._doc_comm_write(self.doc.clear_comms, None, None)

    def _on_comm(self, mt: str, content: dict[str, Any], buffers: list[bytes]) -> None:
        comm_id = content.get("comm_id")
        if not isinstance(comm_id, str):
            return
        data = content.get("data") if isinstance(content.get("data"), dict) else {}
        if mt == "comm_open":
            target = str(content.get("target_name", ""))
            rec = self.comms.open(comm_id, target, data.get("state", {}), buffers)
            self._dual_write_open(rec)
            bc: dict[str, Any] = {"comm_id": comm_id, "target_name": target, "data": data}
            if content.get("target_module") is not None:
                bc["target_module"] = content["target_module"]
            self.broadcast(m.Comm(msg_type="comm_open", content=bc, buffers=[list(b) for b in buffers]))
        elif mt == "comm_msg":
            rec = self.comms.comms.get(comm_id)
            model, seq = (rec.model_name, rec.seq) if rec else (None, None)
            is_update = data.get("method") == "update" and "state" in data
            if is_update and self.comms.update(comm_id, data["state"]) is not None:
                assert rec is not None
                if not self.faults.active("doc-drop-update", model, seq):
                    state_json = json.dumps(rec.state)
                    self._doc_comm_write(lambda: self.doc.update_comm_state(comm_id, state_json), model, seq)
            if is_update and self.faults.active("feed-drop-update", model, seq):
                return
            self.broadcast(m.Comm(msg_type="comm_msg", content={"comm_id": comm_id, "data": data},
                                  buffers=[list(b) for b in buffers]))
        elif mt == "comm_close":
            rec = self.comms.close(comm_id)
            self._comm_clear_wait.discard(comm_id)
            model, seq = (rec.model_name, rec.seq) if rec else (None, None)
            if rec is not None and not self.faults.active("doc-skip-close", model, seq):
                self._doc_seq.pop(comm_id, None)
                self._doc_comm_write(lambda: self.doc.remove_comm(comm_id), model, seq)
            if self.faults.active("feed-drop-close", model, seq):
                return
            self.broadcast(m.Comm(msg_type="comm_close", content={"comm_id": comm_id, "data": data}, buffers=[]))

    def _dual_write_open(self, rec: CommRecord) -> None:
        model, seq = rec.model_name, rec.seq
        if self.faults.active("doc-skip-open", model, seq):
            return
        written_model = rec.model_name or ""
        if self.faults.active("doc-wrong-model", model, seq):
            written_model = "DOMWidgetModel" if written_model != "DOMWidgetModel" else "WidgetModel"
        doc_seq = seq
        swap: tuple[str, int] | None = None
        prev = [c for c in self._doc_seq if c != rec.comm_id]
        if prev and self.faults.active("doc-seq-duplicate", model, seq):
            doc_seq = self._doc_seq[prev[-1]]
        elif prev and self.faults.active("doc-seq-reorder", model, seq):
            doc_seq = self._doc_seq[prev[-1]]
            swap = (prev[-1], seq)
        self._doc_seq.pop(rec.comm_id, None)
        self._doc_seq[rec.comm_id] = doc_seq
        if swap is not None:
            self._doc_seq[swap[0]] = swap[1]
        state_json = json.dumps(rec.state)
        comm_id, target, module = rec.comm_id, rec.target_name, rec.model_module or ""

        def write() -> None:
            self.doc.put_comm(comm_id, target, module, written_model, state_json, doc_seq)
            if swap is not None:
                self.doc.set_comm_seq(*swap)

        self._doc_comm_write(write, model, seq)

    # -- teardown --------------------------------------------------------------------------

    async def close(self) -> None:
        if self._evict_task is not None:
            self._evict_task.cancel()
        for peer in list(self.peers):
            peer.close()
        await self.shutdown_kernel(broadcast=False)
        if self._delay_task is not None:
            self._delay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delay_task
