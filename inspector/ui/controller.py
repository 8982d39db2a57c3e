"""Runs one PeerSession on the Qt event loop (asyncio via qasync) and turns its activity into
coalesced Qt signals: at most one snapshot refresh per `min_interval_ms`, however fast frames
arrive, and a retry countdown while disconnected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal

from .. import events as ev
from ..core_process import ProcessSession  # at the window's start: its decoders take a while to build
from ..snapshot import Snapshot

if TYPE_CHECKING:
    from ..session import PeerSession

log = logging.getLogger(__name__)


def make_session(socket_path: str, notebook_id: str, options: argparse.Namespace | None = None) -> Any:
    """A session exactly as the CLI makes one (with its divergence option), keeping frame bytes
    for the hex view. `options` carries the gui command's flags (--kernel-connection, settle...).

    Its core runs in a child process (`inspector.core_process`): automerge holds the GIL for the
    whole of a join, which would freeze the window for seconds on a big room. `--core-in-window`
    runs it on the window's loop instead (a `PeerSession`)."""
    from .. import cli

    args = argparse.Namespace(**vars(options)) if options is not None else argparse.Namespace()
    args.socket, args.notebook = socket_path, notebook_id
    for name, default in (("allow_other_user", False), ("allow_kernel_launch", False), ("no_blobs", False)):
        if getattr(args, name, None) is None:
            setattr(args, name, default)
    if not getattr(args, "core_in_window", False):
        return ProcessSession(args, socket_path, notebook_id)
    session = cli.make_session(args)
    session.config.keep_frame_bodies = True
    return session


class SessionController(QObject):
    """Owns the session task; the window only listens to these signals."""

    state_changed = Signal(str, str)  # state, detail (e.g. "reconnecting in 3 s", an error message)
    snapshot_ready = Signal(object)  # Snapshot
    countdown = Signal(float)  # seconds until the next reconnect attempt

    def __init__(self, parent: QObject | None = None, min_interval_ms: int = 80) -> None:
        super().__init__(parent)
        self.session: PeerSession | None = None
        self._task: asyncio.Task[Any] | None = None
        self._unsubs: list[Any] = []
        self.min_interval = min_interval_ms / 1000
        self._last_refresh = 0.0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.refresh_now)
        self._tick = QTimer(self)
        self._tick.setInterval(200)
        self._tick.timeout.connect(self._on_tick)
        self.refreshes = 0
        self.last_detail = ""
        self._settle_after_refresh = False  # a join completed: settle the collector once its tree is built
        self.collector_pauses_ms: list[float] = []

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, session: PeerSession) -> None:
        """Adopt `session` and keep it connected (reconnecting with backoff) until `stop()`."""
        self.session = session
        self._unsubs = [session.add_listener(self._on_change), session.log.subscribe(self._on_event)]
        self._task = asyncio.get_event_loop().create_task(self._run(session))
        self._tick.start()
        self.state_changed.emit(session.state, "")
        self.schedule_refresh()

    async def _run(self, session: PeerSession) -> None:
        try:
            await session.run_forever()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - shown to the user, never a crash of the window
            log.exception("session ended")
            self.state_changed.emit("error", f"{type(exc).__name__}: {exc}")

    async def stop(self) -> None:
        for unsub in self._unsubs:
            unsub()
        self._unsubs = []
        self._tick.stop()
        self._timer.stop()
        session, task = self.session, self._task
        self._task = None
        if session is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.stop(), 3)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # -- coalescing ----------------------------------------------------------------------------

    def _on_change(self, paths: set[str]) -> None:
        self.schedule_refresh()

    def schedule_refresh(self) -> None:
        if self._timer.isActive():
            return  # already due: this change rides along
        wait = max(0.0, self.min_interval - (time.monotonic() - self._last_refresh))
        self._timer.start(int(wait * 1000))

    def refresh_now(self) -> Snapshot | None:
        if self.session is None:
            return None
        self._last_refresh = time.monotonic()
        snap = self.session.snapshot()
        self.refreshes += 1
        self.snapshot_ready.emit(snap)
        if self._settle_after_refresh and self.session.state == "live":
            from ..collector import freeze_survivors, settle_after_join

            self._settle_after_refresh = False
            # the joined room's tree included; with the core in its own process the window makes
            # little garbage, and a full collection here would be the join's longest pause
            elsewhere = getattr(self.session, "core_elsewhere", False)
            self.collector_pauses_ms.append(freeze_survivors() if elsewhere else settle_after_join())
        return snap

    # -- connection state ----------------------------------------------------------------------

    def _on_event(self, event: ev.Event) -> None:
        if event.kind == ev.CONNECTION and (data := event.data).get("state"):
            # connection events without a state (the kernel tap's) leave the peer's state alone
            self.last_detail = data.get("detail", "")
            if data["state"] == "live":
                self._settle_after_refresh = True
            self.state_changed.emit(data["state"], self.last_detail)
        elif event.kind == ev.ERROR and self.session is not None and self.session.state == "error":
            self.state_changed.emit("error", event.summary)

    def _on_tick(self) -> None:
        s = self.session
        if s is None:
            return
        if s.retry_at is not None:
            self.countdown.emit(max(0.0, s.retry_at - time.monotonic()))
