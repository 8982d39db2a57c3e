"""The demo's controls in the window: a "Faults" menu (and toolbar button) that turns testbed
faults on and off, "Nudge the slider" and "Add a slider", which change widgets from the kernel
so divergence appears live, and the tour that launches the kernel, attaches and runs the cells.

The testbed runs on its own loop in a `TestbedThread`; every call into it goes through
`run_coroutine_threadsafe`, so the window never waits on the kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QLabel, QMenu, QToolBar, QToolButton

from ..demo import DemoScenario, fault_choices
from ..snapshot import Snapshot
from ..testbed.daemon import TestbedThread
from ..testbed.faults import FAULTS, Fault
from . import theme as th
from .recent import RecentConnections

log = logging.getLogger(__name__)


class DemoPanel(QObject):
    """Owns the demo's menu, toolbar and tour; the window shows it via `add_demo_panel`."""

    def __init__(self, window: Any, bed: TestbedThread, scenario: DemoScenario) -> None:
        super().__init__(window)
        self.window = window
        self.bed = bed
        self.scenario = scenario
        self.notebook_id = ""
        self.ready = False  # the tour finished: every cell ran
        self.error: str | None = None
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._diverged: set[str] = set()
        self._busy = ""

        # the demo's socket is gone after quit: remember its room only for this run
        private = RecentConnections(os.path.join(scenario.dir, "recent.json"))
        window.recent = window.attach_view.recent = private

        # the menu holds the faults and the two kernel actions: named "Demo", not "Faults" like its button
        self.menu = QMenu("&Demo", window)
        self.menu.setToolTipsVisible(True)
        active = {Fault.parse(f).name for f in scenario.faults}
        self.fault_actions: dict[str, QAction] = {}
        for spec in fault_choices():
            name = Fault.parse(spec).name
            a = QAction(spec, self)
            a.setCheckable(True)
            a.setChecked(name in active)
            a.setToolTip(FAULTS[name])
            a.setStatusTip(FAULTS[name])
            a.toggled.connect(lambda _on: self.apply_faults())
            self.menu.addAction(a)
            self.fault_actions[spec] = a
        self.menu.addSeparator()
        self.act_clear = QAction("All faults off", self)
        self.act_clear.triggered.connect(self.clear_faults)
        self.menu.addAction(self.act_clear)
        self.menu.addSeparator()
        self.act_nudge = QAction("Nudge the slider", self)
        self.act_nudge.setShortcut(QKeySequence("Ctrl+Shift+N"))
        self.act_nudge.setToolTip("Run a cell that moves slider a from the kernel (Ctrl+Shift+N)")
        self.act_nudge.triggered.connect(self.nudge)
        self.act_add = QAction("Add a slider", self)
        self.act_add.setToolTip("Run a cell that opens a new IntSlider (a comm_open)")
        self.act_add.triggered.connect(self.add_slider)
        for a in (self.act_nudge, self.act_add):
            a.setEnabled(False)  # until the notebook has run
            self.menu.addAction(a)

        tb = QToolBar("Demo", window)
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        title = QLabel("<b>Demo</b>", tb)
        title.setContentsMargins(8, 0, 8, 0)
        tb.addWidget(title)
        self.faults_button = QToolButton(tb)
        self.faults_button.setText("Faults ▾")
        self.faults_button.setToolTip("Turn testbed faults on and off")
        self.faults_button.setMenu(self.menu)
        self.faults_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        tb.addWidget(self.faults_button)
        tb.addAction(self.act_nudge)
        tb.addAction(self.act_add)
        tb.addSeparator()
        self.status = QLabel(tb)
        self.status.setTextFormat(Qt.TextFormat.RichText)
        self.status.setContentsMargins(8, 0, 8, 0)
        tb.addWidget(self.status)
        self.toolbar = tb
        window.addAction(self.act_nudge)
        window.controller.snapshot_ready.connect(self._on_snapshot)
        self._show_status()

    # -- calls into the testbed loop -----------------------------------------------------------

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run `fn(*args)` on the testbed loop (awaited there if it is a coroutine)."""
        assert self.bed.loop is not None

        async def call() -> Any:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        cf = asyncio.run_coroutine_threadsafe(call(), self.bed.loop)
        self._pending.add(cf)
        cf.add_done_callback(self._pending.discard)
        return asyncio.wrap_future(cf)

    def _spawn(self, coro: Any, what: str) -> asyncio.Task[Any]:
        async def guarded() -> None:
            self._busy = what
            self._show_status()
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - shown in the toolbar, never a crash of the window
                log.exception("demo step failed: %s", what)
                self.error = f"{what} failed: {exc}"
            finally:
                self._busy = ""
                self._show_status()

        task = asyncio.get_event_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the tour --------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[Any]:
        """Launch the kernel, attach the window to the room and run the notebook's cells."""
        self.window.attach_view.extra_sockets.insert(0, self.scenario.socket_path)
        return self._spawn(self._tour(), "starting")

    async def _tour(self) -> None:
        tb = self.bed.testbed
        self.notebook_id = await self.submit(self.scenario.notebook_id, tb)
        self._busy = "starting the kernel…"
        self._show_status()
        connection = await self.submit(self.scenario.launch_kernel, tb)
        # the kernel's own IOPub view joins the comparison (doc, feed and kernel)
        opts = argparse.Namespace(**vars(self.window.session_options or argparse.Namespace()))
        opts.kernel_connection = connection
        self.window.session_options = opts
        self.window.attach(self.scenario.socket_path, self.notebook_id)
        await self._until(lambda: self.window.state == "live", 30, "the inspector to join the room")
        cells = await self.submit(self.scenario.code_cells, tb)
        for i, cell_id in enumerate(cells):
            self._busy = f"running cell {i + 1} of {len(cells)}…"
            self._show_status()
            await self.submit(tb.run_cell, self.notebook_id, cell_id)
        await self._until(lambda: self.slider_id() is not None, 15, "slider a in the tree")
        self.ready = True
        # show a widget in the detail pane: the first diverged comm (a fault was on from the
        # start), else slider a, in doc, feed and kernel
        snap = self.window.snapshot
        diverged = [d.comm_id for d in snap.divergence if d.status == "diverged"] if snap else []
        self.window.select_path(f"comms/{diverged[0] if diverged else self.slider_id()}")
        for a in (self.act_nudge, self.act_add):
            a.setEnabled(True)

    async def _until(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    def slider_id(self) -> str | None:
        """Comm id of slider `a` (the one the nudge moves), once the window shows it."""
        snap = self.window.snapshot
        for c in snap.comms if snap is not None else ():
            if c.model_name == "IntSliderModel" and isinstance(c.state, dict) and c.state.get("description") == "a":
                return c.comm_id
        return None

    # -- actions ---------------------------------------------------------------------------------

    def active_faults(self) -> list[str]:
        return [spec for spec, a in self.fault_actions.items() if a.isChecked()]

    def apply_faults(self) -> asyncio.Task[Any]:
        faults = self.active_faults()
        self.error = None
        return self._spawn(self.submit(self.bed.testbed.set_faults, faults), "setting faults")

    def clear_faults(self) -> None:
        for a in self.fault_actions.values():
            a.blockSignals(True)
            a.setChecked(False)
            a.blockSignals(False)
        self.apply_faults()

    def nudge(self) -> asyncio.Task[Any]:
        return self._spawn(self.submit(self.scenario.nudge, self.bed.testbed), "nudging the slider")

    def add_slider(self) -> asyncio.Task[Any]:
        return self._spawn(self.submit(self.scenario.add_slider, self.bed.testbed), "adding a slider")

    # -- status ----------------------------------------------------------------------------------

    def _on_snapshot(self, snap: Snapshot) -> None:
        diverged = {d.comm_id for d in snap.divergence if d.status == "diverged"}
        new = diverged - self._diverged
        self._diverged = diverged
        if new and self.ready:
            # the point of the demo: take the user to the comm that just diverged
            cid = next(d.comm_id for d in snap.divergence if d.comm_id in new)
            self.window.select_path(f"comms/{cid}")

    def _show_status(self) -> None:
        t = th.theme()
        faults = self.active_faults()
        if faults:
            parts = [f"<span style='color:{t.diverged_fg.name()}'>faults on: <b>{', '.join(faults)}</b></span>"]
        else:
            parts = [f"<span style='color:{t.ok_fg.name()}'>no faults</span>"]
        if self._busy:
            parts.append(f"<span style='color:{t.muted_fg.name()}'>{self._busy}</span>")
        if self.error:
            parts.append(f"<span style='color:{t.diverged_fg.name()}'>{_esc(self.error)}</span>")
        parts.append(f"<span style='color:{t.muted_fg.name()}'>testbed at {_esc(self.scenario.socket_path)}</span>")
        self.status.setText(" · ".join(parts))

    # -- shutdown --------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Cancel what is still running on the testbed loop (the testbed itself stops after)."""
        for task in list(self._tasks):
            task.cancel()
        for cf in list(self._pending):
            cf.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def start_testbed(scenario: DemoScenario) -> TestbedThread:
    """The demo's testbed on its own loop, in the scenario's private directory."""
    scenario.make_dir()
    return TestbedThread(scenario.socket_path, **scenario.testbed_kwargs()).start()


def run_demo_gui(args: argparse.Namespace) -> int:
    """`runtimed-inspector demo` with a window; the testbed stops (kernel, socket, temp dir) on quit."""
    from .app import run_window

    scenario = DemoScenario(args.fault)
    bed: TestbedThread | None = None
    try:
        bed = start_testbed(scenario)

        def setup(window: Any) -> None:
            panel = DemoPanel(window, bed, scenario)
            window.add_demo_panel(panel)
            # SIGTERM / Ctrl-C close the window, so quitting runs the same cleanup
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: window.close())
            panel.start()

        return run_window(args, setup)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"runtimed-inspector: the demo testbed did not start: {exc}", file=sys.stderr)
        return 1
    finally:
        if bed is not None:
            bed.stop()
        scenario.remove_dir()
