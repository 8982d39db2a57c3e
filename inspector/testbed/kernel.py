"""A real ipykernel driven through jupyter_client (pyzmq underneath).

The room owns one `Kernel`: it starts the process, forwards every IOPub message to the
room's handler in arrival order, sends execute and comm messages on the shell channel, and
notices when the process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_client.manager import AsyncKernelManager

log = logging.getLogger("inspector.testbed.kernel")

IopubHandler = Callable[[dict[str, Any]], Awaitable[None]]
DeathHandler = Callable[[], Awaitable[None]]


class Kernel:
    kernel_type = "python"
    env_source = "uv:prewarmed"

    def __init__(self, on_iopub: IopubHandler, on_death: DeathHandler) -> None:
        self._on_iopub = on_iopub
        self._on_death = on_death
        self.km: AsyncKernelManager | None = None
        self.kc: Any = None
        self.status = "starting"
        self.dead = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ipc_dir: str | None = None

    async def start(self, cwd: str | None = None) -> None:
        # IPC sockets in a private directory, as runtimed's Python kernels use: no TCP port,
        # nothing reachable by other users, and the same transport a tap must handle.
        self._ipc_dir = tempfile.mkdtemp(prefix="rti-kernel-", dir="/tmp")
        km = AsyncKernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(self._ipc_dir, "k"))
        km.shutdown_wait_time = 3.0
        self.km = km
        # The kernel runs with this interpreter, so ipykernel and ipywidgets are importable.
        km.kernel_spec.argv[0] = sys.executable
        kc = None
        try:
            await km.start_kernel(cwd=cwd) if cwd else await km.start_kernel()
            kc = km.client()
            kc.start_channels()
            await kc.wait_for_ready(timeout=60)
        except BaseException:  # failed or cancelled mid-start: leave no process or socket behind
            if kc is not None:
                kc.stop_channels()
            with contextlib.suppress(Exception):
                await asyncio.shield(km.shutdown_kernel(now=True))
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            raise
        self.kc = kc
        self.status = "idle"
        self._tasks = [
            asyncio.create_task(self._iopub_loop(), name="kernel-iopub"),
            asyncio.create_task(self._shell_loop(), name="kernel-shell"),
            asyncio.create_task(self._watch(), name="kernel-watch"),
        ]

    @property
    def pid(self) -> int | None:
        prov = getattr(self.km, "provisioner", None)
        proc = getattr(prov, "process", None)
        return getattr(proc, "pid", None)

    async def _iopub_loop(self) -> None:
        while True:
            try:
                msg = await self.kc.get_iopub_msg()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a closed socket ends the loop
                log.debug("iopub loop ended: %s", exc)
                return
            try:
                await self._on_iopub(msg)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("IOPub handler failed on %s", msg.get("msg_type"))

    async def _shell_loop(self) -> None:
        while True:
            try:
                msg = await self.kc.get_shell_msg()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("shell loop ended: %s", exc)
                return
            parent = (msg.get("parent_header") or {}).get("msg_id")
            fut = self._replies.pop(parent, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            km = self.km
            if km is None:
                return
            if not await km.is_alive():
                self.dead = True
                self.status = "error"
                for fut in self._replies.values():
                    if not fut.done():
                        fut.set_exception(RuntimeError("kernel died"))
                self._replies.clear()
                await self._on_death()
                return

    def execute(self, code: str) -> tuple[str, asyncio.Future[dict[str, Any]]]:
        """Send execute_request; return its msg_id and a future for the execute_reply."""
        msg_id = self.kc.execute(code, store_history=True, allow_stdin=False)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[msg_id] = fut
        return msg_id, fut

    def send_shell(self, message: dict[str, Any]) -> None:
        """Forward a full Jupyter message from a peer (send_comm) to the shell channel."""
        header = message.get("header") or {}
        msg_type = str(header.get("msg_type") or message.get("msg_type") or "comm_msg")
        session = self.kc.session
        msg = session.msg(msg_type, content=message.get("content") or {},
                          parent=message.get("parent_header") or None,
                          metadata=message.get("metadata") or {})
        if header.get("msg_id"):
            msg["header"]["msg_id"] = header["msg_id"]
            msg["msg_id"] = header["msg_id"]
        buffers = [bytes(b) for b in message.get("buffers") or []]
        session.send(self.kc.shell_channel.socket, msg, buffers=buffers)

    async def interrupt(self) -> None:
        await self.km.interrupt_kernel()

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self.kc is not None:
            with contextlib.suppress(Exception):
                self.kc.stop_channels()
        if self.km is not None:
            try:
                if await self.km.is_alive():
                    await self.km.shutdown_kernel(now=False)
                else:
                    await self.km.cleanup_resources()
            except Exception:
                log.exception("kernel shutdown failed; killing")
                with contextlib.suppress(Exception):
                    await self.km.shutdown_kernel(now=True)
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            self._ipc_dir = None
        self.status = "shutdown"
