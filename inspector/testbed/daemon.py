"""The testbed daemon as a Python object: `Testbed` (asyncio) and `TestbedThread` (own loop).

    async with Testbed("/tmp/tb/rt.sock", faults=["doc-drop-update:IntSliderModel"]) as tb:
        nid = tb.create_room(["import ipywidgets as w", "s = w.IntSlider(); s"])
        ...  # a peer joins over the socket; the kernel auto-launches
        await tb.run_cell(nid, 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from ..comm_table import CommRecord
from .faults import Fault, FaultSet
from .notebook_doc import NotebookDoc
from .room import Room
from .server import DAEMON_VERSION, Daemon

log = logging.getLogger("inspector.testbed")

CellSpec = str | dict[str, Any]


class Testbed:
    """Start/stop the server; create rooms, run cells and read state in-process."""

    __test__ = False  # not a pytest test class

    def __init__(self, socket_path: str, notebooks: Iterable[str] = (), faults: Iterable[Fault | str] = (), *,
                 keep_alive: float = 30.0, auto_launch: bool = True, blob_dir: str | None = None,
                 write_daemon_json: bool = True) -> None:
        self.socket_path = os.path.abspath(socket_path)
        self.notebooks = list(notebooks)
        self.fault_set = FaultSet(list(faults))
        self.daemon = Daemon(self.socket_path, faults=self.fault_set, keep_alive=keep_alive,
                             auto_launch=auto_launch, blob_dir=blob_dir)
        self.write_daemon_json = write_daemon_json
        self._daemon_json: str | None = None
        self.started = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Testbed:
        for path in self.notebooks:
            self.add_notebook(path)
        await self.daemon.start()
        self.started = True
        if self.write_daemon_json:
            self._write_daemon_json()
        log.info("testbed daemon %s listening on %s (blob port %s)", DAEMON_VERSION, self.socket_path, self.blob_port)
        for line in self.fault_set.describe():
            log.warning("fault active: %s", line)
        return self

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        await self.daemon.stop()
        if self._daemon_json:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._daemon_json)
            self._daemon_json = None

    async def __aenter__(self) -> Testbed:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _write_daemon_json(self) -> None:
        # Beside the socket, as discovery expects; never over another daemon's file.
        path = os.path.join(os.path.dirname(self.socket_path), "daemon.json")
        if os.path.exists(path):
            log.info("not writing %s: it already exists", path)
            return
        info = {
            "endpoint": self.socket_path,
            "pid": os.getpid(),
            "version": DAEMON_VERSION,
            "started_at": _dt.datetime.now(_dt.UTC).isoformat().replace("+00:00", "Z"),
            "blob_port": self.blob_port,
        }
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(info, fh, indent=2)
        self._daemon_json = path

    @property
    def blob_port(self) -> int:
        return self.daemon.blob_server.port

    @property
    def blob_dir(self) -> str:
        return self.daemon.blobs.root

    # -- faults ----------------------------------------------------------------------------

    def set_faults(self, faults: Iterable[Fault | str]) -> None:
        """Replace the active faults (takes effect for the next kernel message)."""
        self.fault_set.set(list(faults))
        for line in self.fault_set.describe() or ["(none)"]:
            log.warning("faults now: %s", line)

    @property
    def faults(self) -> list[str]:
        return [str(f) for f in self.fault_set]

    # -- rooms -----------------------------------------------------------------------------

    def create_room(self, cells: Iterable[CellSpec] = (), notebook_id: str | None = None,
                    metadata: dict[str, Any] | None = None) -> str:
        """An untitled (UUID) room with these cells; strings are code cells. Returns its id."""
        nid = notebook_id or str(uuid.uuid4())
        doc = NotebookDoc.new(nid)
        doc.set_metadata_snapshot(metadata or {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "runt": {"schema_version": "1"},
        })
        for cell in cells:
            if isinstance(cell, str):
                doc.append_cell("code", cell)
            else:
                doc.append_cell(cell.get("cell_type", "code"), cell.get("source", ""), cell.get("id"),
                                cell.get("metadata"))
        self.daemon.add_room(nid, doc)
        return nid

    def add_notebook(self, path: str) -> str:
        """A file-backed room from an .ipynb, or a room from a saved .automerge document."""
        if path.endswith(".automerge"):
            with open(path, "rb") as fh:
                return self.daemon.load_saved_doc(fh.read()).notebook_id
        return self.daemon.load_ipynb(path).notebook_id

    def load_saved_doc(self, data: bytes, notebook_id: str | None = None) -> str:
        return self.daemon.load_saved_doc(data, notebook_id).notebook_id

    def room(self, notebook_id: str) -> Room:
        return self.daemon.rooms[notebook_id]

    @property
    def rooms(self) -> list[str]:
        return list(self.daemon.rooms)

    def cell_ids(self, notebook_id: str) -> list[str]:
        return self.room(notebook_id).doc.cell_ids()

    def add_cell(self, notebook_id: str, source: str, cell_type: str = "code") -> str:
        room = self.room(notebook_id)
        cid = room.doc.append_cell(cell_type, source)
        room.doc_changed()
        return cid

    # -- kernel ----------------------------------------------------------------------------

    async def launch_kernel(self, notebook_id: str) -> Any:
        return await self.room(notebook_id).launch_kernel()

    async def shutdown_kernel(self, notebook_id: str) -> Any:
        return await self.room(notebook_id).shutdown_kernel()

    async def restart_kernel(self, notebook_id: str) -> None:
        """As the UI restarts at this era: shutdown_kernel, then launch_kernel."""
        await self.shutdown_kernel(notebook_id)
        await self.launch_kernel(notebook_id)

    async def wait_kernel(self, notebook_id: str, timeout: float = 60.0) -> None:
        room = self.room(notebook_id)
        await self.wait_until(lambda: room.kernel is not None and not room.kernel_lock.locked(), timeout)

    async def run_cell(self, notebook_id: str, cell: str | int, timeout: float = 60.0) -> str:
        """Queue a cell (id, index, or new source appended as a cell) and wait for execution_done."""
        room = self.room(notebook_id)
        ids = room.doc.cell_ids()
        if isinstance(cell, int):
            cell_id = ids[cell]
        elif cell in ids:
            cell_id = cell
        else:
            cell_id = self.add_cell(notebook_id, cell)
        if room.kernel is None:
            await self.wait_kernel(notebook_id, timeout) if room.kernel_lock.locked() else await room.launch_kernel()
        await asyncio.wait_for(room.enqueue(cell_id), timeout)
        return cell_id

    # -- state -----------------------------------------------------------------------------

    def doc_comms(self, notebook_id: str) -> dict[str, dict[str, Any]]:
        """comm_id -> doc entry (state parsed) as written into `doc.comms`."""
        return self.room(notebook_id).doc.comms()

    def comm_state(self, notebook_id: str) -> list[CommRecord]:
        """The daemon's CommState, in open order."""
        return self.room(notebook_id).comms.ordered()

    def cells(self, notebook_id: str) -> list[dict[str, Any]]:
        return self.room(notebook_id).doc.cells()

    def manifest(self, digest: str) -> Any:
        return self.daemon.blobs.get_json(digest)

    def on_broadcast(self, notebook_id: str, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Observe a room's broadcasts in-process; returns an unsubscribe function."""
        room = self.room(notebook_id)
        room.listeners.append(callback)
        return lambda: room.listeners.remove(callback) if callback in room.listeners else None

    @staticmethod
    async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            await asyncio.sleep(interval)

    async def serve_forever(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        await stop.wait()


class TestbedThread:
    """A Testbed on its own event loop in a background thread (for Qt tests and the demo)."""

    __test__ = False  # not a pytest test class

    def __init__(self, socket_path: str, notebooks: Iterable[str] = (), faults: Iterable[Fault | str] = (),
                 **kwargs: Any) -> None:
        self._args = (socket_path, list(notebooks), list(faults))
        self._kwargs = kwargs
        self.testbed: Testbed | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def socket_path(self) -> str:
        return os.path.abspath(self._args[0])

    def start(self, timeout: float = 30.0) -> TestbedThread:
        self._thread = threading.Thread(target=self._run, name="testbed-daemon", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("testbed did not start")
        if self._error is not None:
            raise RuntimeError(f"testbed failed to start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            tb = Testbed(*self._args, **self._kwargs)
            try:
                await tb.start()
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                return
            self.testbed = tb
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await tb.stop()

        try:
            loop.run_until_complete(main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = 120.0) -> Any:
        """Run `fn(*args)` on the testbed loop (awaited if it returns a coroutine); return its result."""
        assert self.loop is not None

        async def run() -> Any:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        fut: Future[Any] = asyncio.run_coroutine_threadsafe(run(), self.loop)
        return fut.result(timeout)

    def set_faults(self, faults: Iterable[Fault | str]) -> None:
        assert self.testbed is not None
        self.call(self.testbed.set_faults, list(faults))

    def stop(self, timeout: float = 30.0) -> None:
        if self.loop is None or self._thread is None:
            return
        if self._stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> TestbedThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
