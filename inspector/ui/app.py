"""`runtimed-inspector gui`: the desktop app's entry point.

This module imports no Qt at import time, so the CLI can register the subcommand (and print a
clear message) on machines without PySide6.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import EXIT_USAGE


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "gui", help="open the desktop app (the default with no command)",
        description="Open the live inspector window.",
        epilog="examples:\n"
               "  runtimed-inspector                                  # pick a daemon and a room\n"
               "  runtimed-inspector gui --notebook 3f2a…            # straight to a room\n"
               "  runtimed-inspector gui --notebook 3f2a… --kernel-connection auto\n"
               "  QT_QPA_PLATFORM=offscreen runtimed-inspector gui --notebook 3f2a… --screenshot w.png --quit-after 5",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", metavar="PATH", help="daemon socket (default: discovered)")
    p.add_argument("--notebook", metavar="ID", help="attach to this room right away")
    p.add_argument("--allow-other-user", action="store_true", help="connect to a socket owned by another user")
    p.add_argument("--allow-kernel-launch", action="store_true",
                   help="join an inactive room even though the daemon will launch a kernel for it")
    p.add_argument("--screenshot", metavar="FILE", help="write a PNG of the window (at --quit-after, else after 3 s)")
    p.add_argument("--quit-after", metavar="S", type=float, help="close the app after S seconds")
    p.add_argument("--demo", action="store_true", help=argparse.SUPPRESS)  # synthetic data, for docs
    p.add_argument("--core-in-window", action="store_true",
                   help="run the session on the window's thread instead of a child process "
                        "(the window then freezes while a big room joins)")
    from ..check import add_kernel_option, add_settle_options

    add_kernel_option(p)
    add_settle_options(p)
    p.set_defaults(func=run_gui)
    return p


def icon_paths() -> list[Path]:
    """Application icons shipped with the package or the source tree, largest first."""
    roots = [Path(__file__).parent / "resources", Path(__file__).resolve().parents[2] / "resources" / "icons"]
    found: list[Path] = []
    for root in roots:
        if root.is_dir():
            found += sorted(root.rglob("*.png"), key=lambda p: -_size_hint(p)) + sorted(root.rglob("*.svg"))
    return found


def _size_hint(p: Path) -> int:
    for part in reversed(p.parts):
        head = part.split("x")[0]
        if head.isdigit():
            return int(head)
    return 0


def run_gui(args: argparse.Namespace) -> int:
    try:
        import qasync  # noqa: F401
        from PySide6.QtWidgets import QApplication  # noqa: F401
    except ImportError as exc:
        print(f"runtimed-inspector: the desktop app needs PySide6 and qasync ({exc}); "
              "install with `pip install runtimed-inspector[gui]`, or use the rooms/snapshot/watch commands",
              file=sys.stderr)
        return EXIT_USAGE
    from ..demo import has_display

    if not has_display():
        print("runtimed-inspector: no display to open the window on (DISPLAY and WAYLAND_DISPLAY are unset); "
              "use snapshot/watch/check headless, or QT_QPA_PLATFORM=offscreen with --screenshot",
              file=sys.stderr)
        return EXIT_USAGE
    return run_window(args)


def make_app(argv: list[str] | None = None) -> Any:
    from PySide6.QtGui import QGuiApplication, QIcon
    from PySide6.QtWidgets import QApplication

    from .. import APP_ID, APP_NAME, __version__

    app = QApplication.instance() or QApplication(argv or [APP_NAME])
    QApplication.setApplicationName(APP_NAME)
    QApplication.setApplicationDisplayName("Runtimed Inspector")
    QApplication.setApplicationVersion(__version__)
    QApplication.setOrganizationName(APP_NAME)
    QGuiApplication.setDesktopFileName(APP_ID)
    apply_appearance(app, os.environ.get("RUNTIMED_INSPECTOR_THEME", ""))
    icon = QIcon()
    for path in icon_paths():
        icon.addFile(str(path))
    if not icon.isNull():
        app.setWindowIcon(icon)
    import gc

    # Everything imported so far lives for the whole run: keep it out of full collections, whose
    # pauses would otherwise show up as stalls of the event loop during update storms.
    gc.freeze()
    return app


def apply_appearance(app: Any, name: str) -> None:
    """RUNTIMED_INSPECTOR_THEME=dark|light: that appearance whatever the desktop's (screenshots,
    a desktop that reports none); anything else follows the system."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QColor, QGuiApplication, QPalette

    if name not in ("dark", "light"):
        return
    app.setStyle("Fusion")
    hints = QGuiApplication.styleHints()
    if hasattr(hints, "setColorScheme"):
        hints.setColorScheme(Qt.ColorScheme.Dark if name == "dark" else Qt.ColorScheme.Light)
    if name == "light":
        app.setPalette(app.style().standardPalette())
        return
    pal = QPalette()
    colours = {
        QPalette.ColorRole.Window: "#202124", QPalette.ColorRole.WindowText: "#e8eaed",
        QPalette.ColorRole.Base: "#17181a", QPalette.ColorRole.AlternateBase: "#24262a",
        QPalette.ColorRole.Text: "#e8eaed", QPalette.ColorRole.Button: "#2b2d31",
        QPalette.ColorRole.ButtonText: "#e8eaed", QPalette.ColorRole.Highlight: "#3574f0",
        QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#2b2d31",
        QPalette.ColorRole.ToolTipText: "#e8eaed", QPalette.ColorRole.PlaceholderText: "#8a8f96",
        QPalette.ColorRole.Link: "#8ab4f8", QPalette.ColorRole.Mid: "#3c4043", QPalette.ColorRole.Dark: "#111214",
        QPalette.ColorRole.Light: "#3c4043", QPalette.ColorRole.Midlight: "#34373b",
    }
    for role, colour in colours.items():
        pal.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6f747a"))
    app.setPalette(pal)


def window_size(env: dict[str, str] | None = None) -> tuple[int, int] | None:
    """RUNTIMED_INSPECTOR_WINDOW_SIZE=WxH: the window's first size (screenshots at known sizes)."""
    text = (os.environ if env is None else env).get("RUNTIMED_INSPECTOR_WINDOW_SIZE", "")
    w, _, h = text.lower().partition("x")
    if w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0:
        return int(w), int(h)
    return None


def run_window(args: argparse.Namespace, setup: Callable[[Any], None] | None = None) -> int:
    """Show the window until it closes. `setup(window)`, when given, replaces the start view
    (attach / the room in --notebook) once the loop runs; the demo uses it."""
    import asyncio

    from .. import discovery
    from .main_window import InspectorWindow

    app = make_app(sys.argv[:1])
    window = InspectorWindow()
    window.session_options = args
    size = window_size()
    if size is not None:
        window.resize(*size)
    exit_code = 0

    async def main() -> None:
        nonlocal exit_code
        done = asyncio.Event()
        app.aboutToQuit.connect(done.set)
        # Closing the window ends main(), and main() ends the loop once the shutdown has run;
        # quitting Qt right away would stop the loop in the middle of the shutdown.
        app.setQuitOnLastWindowClosed(False)
        app.lastWindowClosed.connect(done.set)
        window.show()
        if setup is not None:
            setup(window)
        elif getattr(args, "demo", False):
            _demo(window)
        elif args.notebook:
            window.attach(args.socket or discovery.default_socket(), args.notebook)
        else:
            if args.socket:
                window.attach_view.extra_sockets.insert(0, args.socket)
                window.attach_view.socket_edit.setText(args.socket)
            window.show_attach()
        if args.screenshot and args.quit_after is None:
            asyncio.get_event_loop().call_later(3.0, lambda: save_screenshot(window, args.screenshot))
        if args.quit_after is not None:
            async def quit_later() -> None:
                await asyncio.sleep(args.quit_after)
                if args.screenshot:
                    save_screenshot(window, args.screenshot)
                window.close()
                done.set()
            asyncio.get_event_loop().create_task(quit_later())
        window.destroyed.connect(done.set)
        await done.wait()
        await window.shutdown()

    try:
        run_qt(main())
    except KeyboardInterrupt:
        exit_code = 130
    return exit_code


def run_qt(coro: Any) -> Any:
    """`qasync.run`, except that only the main thread gets a Qt event loop: a thread that makes
    its own loop while the app runs (the demo's testbed, jupyter_client's heartbeat thread) must
    get a plain one, or it drives Qt from the wrong thread."""
    import asyncio
    import threading

    import qasync
    from PySide6.QtWidgets import QApplication

    class Policy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            if threading.current_thread() is threading.main_thread():
                return qasync.QEventLoop(QApplication.instance())
            return super().new_event_loop()

    old = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(Policy())
    try:
        return asyncio.run(coro)
    finally:
        asyncio.set_event_loop_policy(old)


def save_screenshot(window: Any, path: str) -> bool:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ok = bool(window.grab().save(path, "PNG"))
    print(f"screenshot {'written to' if ok else 'FAILED:'} {path}", file=sys.stderr)
    return ok


def _demo(window: Any) -> None:
    """Synthetic data in the window (docs only): no daemon involved."""
    from . import sample_snapshots as ss

    snap = ss.make_snapshot(n_cells=24, n_comms=14)
    snap = ss.diverge(snap, 2, 3, 7)
    snap = ss.diverge(snap, 6, 41, 42, status="pending", since_ms=90)
    window.stack.setCurrentWidget(window.main_split)
    window._set_state("synthetic", "synthetic data for the docs: no daemon")
    window.setWindowTitle("synthetic notebook")
    window.apply_snapshot(snap)
