"""`runtimed-inspector demo`: the one-command tour.

Starts the testbed daemon on a private socket (a fresh 0700 temp dir) with the bundled widgets
notebook, launches its kernel, attaches the inspector to the room and runs the notebook's code
cells, so the widgets appear live. In the window, a "Faults" menu turns testbed faults on and off
and "Nudge the slider" changes a slider from the kernel, so divergence can be seen appear.

`--headless` runs the same scenario without a window and prints one `snapshot` JSON object once
the room has settled. With no display the plain command does the same (with a note on stderr).
This module is Qt-free; the window side lives in `inspector.ui.demo_panel`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, InspectorError

log = logging.getLogger("inspector.demo")

SAMPLE = "widgets-demo.ipynb"
DIR_PREFIX = "runtimed-inspector-demo-"
SOCKET_NAME = "runtimed.sock"
SOCKET_PATH_MAX = 100  # sun_path is 104 bytes on macOS, 108 on Linux (with the NUL)

# The faults offered in the window, in menu order (all of them: each shows up differently).
# doc-delay-ms needs a value: long enough to see the doc lag, short enough to catch up.
DELAY_FAULT = "doc-delay-ms=1500"

# A cell run from the kernel: the slider moves, so the doc and the feed must both follow.
NUDGE_SOURCE = "a.value = (a.value + 13) % 101  # nudged from the kernel"
ADD_SLIDER_SOURCE = ("c = w.IntSlider(value=5, description='c')  # a new widget: a comm_open\n"
                     "c")

EXAMPLES = """examples:
  runtimed-inspector demo
  runtimed-inspector demo --headless | jq '.comms[].model_name'
  runtimed-inspector demo --headless --fault doc-drop-update | jq .divergence
  runtimed-inspector demo --screenshot demo.png --quit-after 20"""


def fault_choices() -> list[str]:
    """Every testbed fault as the window's menu offers it."""
    from .testbed.faults import FAULTS, VALUED

    return [DELAY_FAULT if name in VALUED else name for name in FAULTS]


def sample_notebook() -> str:
    """Path of the bundled sample notebook (inside the installed package)."""
    return str(resources.files("inspector.testbed").joinpath("samples", SAMPLE))


class DemoScenario:
    """The private directory, the testbed's arguments and the steps of the tour.

    The step coroutines run on the testbed's own event loop (the GUI hands them to a
    `TestbedThread`; headless they run on the one loop).
    """

    def __init__(self, faults: Iterable[str] = (), keep_alive: float = 300.0) -> None:
        self.faults = list(faults)
        self.keep_alive = keep_alive
        self.dir = ""
        self.socket_path = ""
        self.notebook_path = ""
        self.nudge_cell: str | None = None
        self.added_slider = False

    # -- the private directory ---------------------------------------------------------------

    def make_dir(self) -> str:
        # mkdtemp creates the directory 0700: nobody else can reach the socket inside it.
        # A socket path has ~104 bytes at most: under a long $TMPDIR, use /tmp instead.
        base = tempfile.gettempdir()
        if len(os.path.join(base, DIR_PREFIX + "x" * 8, SOCKET_NAME).encode()) > SOCKET_PATH_MAX and os.path.isdir("/tmp"):
            base = "/tmp"
        self.dir = tempfile.mkdtemp(prefix=DIR_PREFIX, dir=base)
        os.chmod(self.dir, 0o700)
        self.socket_path = os.path.join(self.dir, SOCKET_NAME)
        # A copy, so the room (and the kernel's working directory) never touch the installed file
        self.notebook_path = os.path.join(self.dir, SAMPLE)
        shutil.copyfile(sample_notebook(), self.notebook_path)
        return self.dir

    def remove_dir(self) -> None:
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def testbed_kwargs(self) -> dict[str, Any]:
        return {"notebooks": [self.notebook_path], "faults": self.faults, "keep_alive": self.keep_alive,
                "auto_launch": False}

    # -- steps (on the testbed loop) ---------------------------------------------------------

    @staticmethod
    def notebook_id(tb: Any) -> str:
        return tb.rooms[0]

    async def launch_kernel(self, tb: Any) -> str:
        """Start the room's kernel; returns its connection file (the inspector's kernel view)."""
        nid = self.notebook_id(tb)
        reply = await tb.launch_kernel(nid)
        kernel = tb.room(nid).kernel
        if kernel is None:
            raise InspectorError(f"the demo kernel did not start: {getattr(reply, 'error', reply)}")
        return kernel.km.connection_file

    def code_cells(self, tb: Any) -> list[str]:
        return [c["id"] for c in tb.cells(self.notebook_id(tb)) if c.get("cell_type") == "code"]

    async def run_cells(self, tb: Any, on_cell: Callable[[int, int], None] | None = None) -> None:
        nid = self.notebook_id(tb)
        cells = self.code_cells(tb)
        for i, cell_id in enumerate(cells):
            if on_cell is not None:
                on_cell(i, len(cells))
            await tb.run_cell(nid, cell_id)

    async def nudge(self, tb: Any) -> None:
        """Move slider `a` from the kernel (one cell, re-run on every nudge)."""
        nid = self.notebook_id(tb)
        if self.nudge_cell is None:
            self.nudge_cell = tb.add_cell(nid, NUDGE_SOURCE)
        await tb.run_cell(nid, self.nudge_cell)

    async def add_slider(self, tb: Any) -> None:
        """Open a new widget from the kernel (shows faults that act on comm_open)."""
        await tb.run_cell(self.notebook_id(tb), ADD_SLIDER_SOURCE)
        self.added_slider = True


# --------------------------------------------------------------------------- command line


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo", help="start the testbed with a sample widget notebook and open the inspector on it",
        description="Start the testbed daemon on a private socket with a sample widget notebook and a real "
                    "kernel, run the notebook, and open the inspector attached to it. The window's Faults "
                    "menu turns testbed faults on and off; 'Nudge the slider' changes a widget from the "
                    "kernel so divergence appears live. Everything is removed on quit.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--headless", action="store_true",
                   help="no window: run the same scenario and print one snapshot JSON object "
                        "(the default when there is no display)")
    p.add_argument("--fault", metavar="NAME[:SELECTOR]", action="append", default=[],
                   help="start with this testbed fault on (see `testbed --list-faults`); repeatable")
    p.add_argument("--settle-ms", type=int, default=500, metavar="N",
                   help="headless: quiet time before the snapshot is taken (default 500)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="headless: give up after S seconds (default 120)")
    p.add_argument("--indent", type=int, default=2, help="headless: JSON indent (0 for one line)")
    p.add_argument("--screenshot", metavar="FILE", help="write a PNG of the window (at --quit-after, else after 3 s)")
    p.add_argument("--quit-after", metavar="S", type=float, help="close the window after S seconds")
    from .check import add_settle_options

    add_settle_options(p)
    p.set_defaults(func=run)
    return p


def testbed_missing() -> list[str]:
    """The testbed kernel's packages (the `testbed` extra) that are not installed."""
    return [name for name in ("ipykernel", "ipywidgets") if importlib.util.find_spec(name) is None]


def has_display(env: dict[str, str] | None = None, platform: str | None = None) -> bool:
    """Whether a window can open: X11/Wayland on Unix, or a Qt platform chosen explicitly."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if env.get("QT_QPA_PLATFORM"):
        return True
    if platform == "darwin" or platform.startswith("win"):
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def run(args: argparse.Namespace) -> int:
    from .testbed.faults import FaultError, FaultSet

    try:
        FaultSet(args.fault)
    except FaultError as exc:
        print(f"runtimed-inspector: {exc}", file=sys.stderr)
        return EXIT_USAGE
    missing = testbed_missing()
    if missing:
        print(f"runtimed-inspector: the demo's kernel needs {' and '.join(missing)}: "
              "pip install 'runtimed-inspector[testbed]'", file=sys.stderr)
        return EXIT_USAGE
    if not args.headless:
        if not has_display():
            print("runtimed-inspector: no display (DISPLAY/WAYLAND_DISPLAY unset): running the demo headless",
                  file=sys.stderr)
        else:
            missing = [name for name in ("PySide6", "qasync") if importlib.util.find_spec(name) is None]
            if missing:
                print(f"runtimed-inspector: the desktop app is not installed (no {', '.join(missing)}): "
                      "running the demo headless", file=sys.stderr)
            else:
                # by name: the core never imports the GUI package (the import contract); a broken
                # GUI module fails loudly rather than passing for a missing install
                return importlib.import_module("inspector.ui.demo_panel").run_demo_gui(args)
    try:
        return asyncio.run(run_headless(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


async def run_headless(args: argparse.Namespace, out: Any = None) -> int:
    """The scenario without a window: print one settled snapshot as JSON."""
    from . import cli
    from .session import unless_ended
    from .testbed.daemon import Testbed

    out = out or sys.stdout
    scenario = DemoScenario(args.fault)
    scenario.make_dir()
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        # SIGTERM ends the demo like Ctrl-C: kernel stopped, socket and directory removed
        loop.add_signal_handler(signal.SIGTERM, lambda: main.cancel() if main else None)
    try:
        async with Testbed(scenario.socket_path, **scenario.testbed_kwargs()) as tb:
            nid = scenario.notebook_id(tb)
            connection = await scenario.launch_kernel(tb)
            sargs = argparse.Namespace(**vars(args))
            sargs.socket, sargs.notebook = scenario.socket_path, nid
            sargs.allow_other_user = sargs.allow_kernel_launch = False
            sargs.no_blobs = False
            sargs.kernel_connection = connection
            session = cli.make_session(sargs)
            async with session.running() as task:
                await unless_ended(session.wait_for(lambda s: s.connection == "live", args.timeout), task)
                await unless_ended(scenario.run_cells(tb), task)
                expected = len(scenario.code_cells(tb))
                await unless_ended(session.wait_for(lambda s: _ran(s, expected), args.timeout), task)
                await unless_ended(session.wait_settled(args.settle_ms / 1000, args.timeout), task)
                snap = session.snapshot()
            out.write(json.dumps(snap.to_json(), indent=args.indent or None, default=str) + "\n")
            out.flush()
            return EXIT_OK
    except InspectorError as exc:
        print(f"runtimed-inspector: {exc}", file=sys.stderr)
        return exc.exit_code
    except asyncio.CancelledError:
        return EXIT_INTERRUPTED
    finally:
        scenario.remove_dir()


def _ran(snap: Any, code_cells: int) -> bool:
    """Every code cell executed and every output manifest resolved (or failed to)."""
    code = [c for c in snap.cells if c.cell_type == "code"]
    if len(code) < code_cells or any(c.execution_count is None for c in code):
        return False
    outputs = [o for c in snap.cells for o in c.outputs] + [o for c in snap.comms for o in c.outputs]
    return all(o.manifest is not None or o.error is not None for o in outputs)
