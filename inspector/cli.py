"""Command line: `runtimed-inspector [gui|rooms|snapshot|watch|check|testbed|demo] ...`.

Every failure prints one line naming its cause on stderr and exits with the code documented
in the README (`inspector.errors.EXIT_CODES`). Never a traceback.

A command pays only for what it uses: `--version` imports nothing, the parser imports only the
module of the command being run, and a missing socket is reported before the session's
modules (automerge, the divergence engine) are loaded.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import __version__
from .errors import EXIT_CODES, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, InspectorError

log = logging.getLogger("inspector")

EXAMPLES = {
    "rooms": "examples:\n  runtimed-inspector rooms\n  runtimed-inspector rooms --socket /tmp/rt.sock --json",
    "snapshot": "examples:\n  runtimed-inspector snapshot --notebook 3f2a…\n"
                "  runtimed-inspector snapshot --socket /tmp/rt.sock --notebook /home/me/a.ipynb --settle-ms 500 | jq .comms",
    "watch": "examples:\n  runtimed-inspector watch --notebook 3f2a…\n"
             "  runtimed-inspector watch --notebook 3f2a… --frames | jq -c 'select(.kind==\"broadcast\")'",
}

# Subcommands that live in their own modules: (module, attribute providing add_parser)
PLUGINS = (
    ("inspector.check", "add_parser"),
    ("inspector.testbed.command", "add_parser"),
    ("inspector.demo", "add_parser"),
    ("inspector.ui.app", "add_parser"),
    ("inspector.desktop_entry", "add_parser"),
    ("inspector.history_cli", "add_parser"),
    ("inspector.recording_cli", "add_parser"),  # after the commands it gives FILE and --record to
    ("inspector.ui.recording_window", "add_parser"),
)
# Which plugin modules a command needs: `check` brings the divergence engine (and the kernel
# option) to every command that joins a room.
PLUGIN_HELP = {
    "check": "watch a room for S seconds; exit 1 with a summary if comm views diverged",
    "testbed": "run a runtimed-compatible daemon (protocol v2) with a real kernel and fault injection",
    "demo": "start the testbed with a sample widget notebook and open the inspector on it",
    "gui": "open the desktop app (the default with no command)",
    "install-desktop": "add the app to the desktop's application menu (this installation)",
    "history": "one comm key over time: every value each view held, who wrote it, findings, hop latency",
    "record": "join a room and record the session to a file (replay it with snapshot/watch/check/open FILE)",
    "open": "open the desktop app on a recording",
    "diff": "what changed between two events of a recording, per cell, comm and key (JSON)",
    "report": "a bug-report bundle from a recording (--redact: no source text, outputs or strings)",
    "export": "export a recording for another tool (--format pcapng: Wireshark)",
}
NEEDS = {
    "rooms": (),
    "snapshot": ("inspector.check", "inspector.recording_cli"),
    "watch": ("inspector.check", "inspector.recording_cli"),
    "check": ("inspector.check", "inspector.recording_cli"),
    "testbed": ("inspector.testbed.command",),
    "demo": ("inspector.check", "inspector.demo"),
    "gui": ("inspector.check", "inspector.ui.app", "inspector.recording_cli"),
    "install-desktop": ("inspector.desktop_entry",),
    "history": ("inspector.check", "inspector.history_cli"),
    "record": ("inspector.check", "inspector.recording_cli"),
    "open": ("inspector.ui.recording_window",),
    "diff": ("inspector.recording_cli",),
    "report": ("inspector.recording_cli",),
    "export": ("inspector.recording_cli",),
}
COMMANDS = tuple(NEEDS)
# Options that must not be negative (nor NaN), whichever command defines them.
NON_NEGATIVE = ("log_mb", "keepalive_s", "timeout", "duration", "indent", "settle_ms", "quit_after")


def _common(p: argparse.ArgumentParser, notebook: bool = True) -> None:
    p.add_argument("--socket", metavar="PATH", help="daemon socket (default: $RUNTIMED_SOCKET_PATH, "
                   "else the first runtimed socket found in the cache directory)")
    p.add_argument("--allow-other-user", action="store_true",
                   help="connect to a socket owned by another user (refused by default)")
    if notebook:
        p.add_argument("--notebook", metavar="ID", required=True, help="notebook id exactly as `rooms` lists it")
        p.add_argument("--allow-kernel-launch", action="store_true",
                       help="join an inactive room even though the daemon will launch a kernel for it")
        p.add_argument("--no-blobs", action="store_true", help="do not resolve output manifests over HTTP")
        p.add_argument("--log-mb", type=float, default=64.0, metavar="N",
                       help="bound the session's event log (events and kept frame bytes) to N MiB (default 64)")
        p.add_argument("--keepalive-s", type=float, default=60.0, metavar="S",
                       help="send the read-only keep-alive every S seconds on a daemon that drops quiet peers "
                            "(v4: after 300 s; default 60; 0: never)")


def _after_command(p: argparse.ArgumentParser) -> None:
    """-v/-vv and --version are accepted after the command too (`rooms -v`)."""
    if not any("--version" in a.option_strings for a in p._actions):
        p.add_argument("--version", action="version", version=f"runtimed-inspector {__version__}")
    if not any("-v" in a.option_strings for a in p._actions):
        p.add_argument("-v", "--verbose", dest="verbose_after", action="count", default=0, help=argparse.SUPPRESS)


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with `commands`, only their modules are imported (the other commands are
    listed by name and help line, enough for `--help` and for "invalid choice")."""
    wanted = set(COMMANDS if commands is None else commands)
    parser = argparse.ArgumentParser(
        prog="runtimed-inspector",
        description="See live what a runtimed notebook room holds, and where views of widget state disagree. "
                    "With no command, opens the desktop app.",
        epilog="exit codes:\n" + "\n".join(f"  {k:>3}  {v}" for k, v in sorted(EXIT_CODES.items())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"runtimed-inspector {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("rooms", help="list the daemon's rooms (no room is joined)", epilog=EXAMPLES["rooms"],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p, notebook=False)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_rooms)

    p = sub.add_parser("snapshot", help="join a room, wait until it settles, print one JSON snapshot, leave",
                       epilog=EXAMPLES["snapshot"], formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--settle-ms", type=int, default=300, metavar="N",
                   help="quiet time (no frame in) before the snapshot is taken (default 300)")
    p.add_argument("--timeout", type=float, default=20.0, metavar="S", help="give up after S seconds (default 20)")
    p.add_argument("--indent", type=int, default=2, help="JSON indent (0 for one line)")
    p.add_argument("--events", action="store_true", help="include the event log in the output")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("watch", help="join a room and print one JSON object per event until interrupted",
                       epilog=EXAMPLES["watch"], formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--frames", action="store_true", help="also print every frame in and out")
    p.add_argument("--for", dest="duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: until interrupted)")
    p.set_defaults(func=cmd_watch)

    modules = {mod for cmd in wanted for mod in NEEDS.get(cmd, ())}
    loaded: set[str] = set()
    for mod_name, attr in PLUGINS:
        if mod_name not in modules:
            continue
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as exc:
            # Only a missing optional third-party extra (PySide6, qasync) leaves a command out;
            # a broken module of the project's own fails loudly.
            if str(getattr(exc, "name", "") or "").split(".")[0] in ("inspector", ""):
                raise
            log.debug("command module %s unavailable: %s", mod_name, exc)
            continue
        getattr(mod, attr)(sub)
        loaded.add(mod_name)
    for name, help_text in PLUGIN_HELP.items():
        if name not in sub.choices:  # not loaded: its name and help line only
            sub.add_parser(name, help=help_text, add_help=False)
    for name in wanted:
        if name in sub.choices:
            _after_command(sub.choices[name])
    return parser


def _non_negative(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for dest in NON_NEGATIVE:
        value = getattr(args, dest, None)
        if isinstance(value, int | float) and not isinstance(value, bool) and (value < 0 or math.isnan(value)):
            option = "--for" if dest == "duration" else "--" + dest.replace("_", "-")
            parser.error(f"argument {option}: must not be negative (got {value})")


# --------------------------------------------------------------------------- helpers


def resolve_socket(args: argparse.Namespace) -> str:
    if getattr(args, "socket", None):
        return args.socket
    from .discovery import default_socket

    return default_socket()


def divergence_options(args: argparse.Namespace) -> Any:
    """The session's divergence option from the flags `check` adds (absent flags: the defaults)."""
    from .divergence import DivergenceOptions, SettleConfig

    settle = SettleConfig(quiet_s=getattr(args, "quiet_ms", 250) / 1000,
                          clear_s=getattr(args, "clear_ms", 2000) / 1000,
                          updates_dual_written=not getattr(args, "no_update_dual_write", False))
    return DivergenceOptions(settle=settle, kernel_connection=getattr(args, "kernel_connection", None))


def make_session(args: argparse.Namespace) -> Any:
    from .history_feed import HistoryOptions
    from .recording.session_recording import RecordingOptions
    from .session import PeerSession, SessionConfig

    cfg = SessionConfig(
        socket_path=resolve_socket(args),
        notebook_id=args.notebook,
        allow_other_user=args.allow_other_user,
        allow_kernel_launch=getattr(args, "allow_kernel_launch", False),
        resolve_blobs=not getattr(args, "no_blobs", False),
        keep_frame_bodies=False,
        divergence=divergence_options(args),
        integrity=integrity_options(args),
        history=HistoryOptions(),  # every value each view held: `history`, the latency block, findings
        # the ring is always on; --record FILE (recording_cli) also writes a file from the start
        recording=RecordingOptions(file=getattr(args, "record", None)),
        keepalive_s=getattr(args, "keepalive_s", 60.0) or None,
        log_max_bytes=int(getattr(args, "log_mb", 64.0) * 1024 * 1024),
    )
    return PeerSession(cfg)


def integrity_options(args: argparse.Namespace) -> Any:
    """The session's integrity option; a `--saved FILE` that cannot be read fails here, before
    any connection (a one-line error, exit code 2)."""
    from .integrity import IntegrityOptions
    from .saved_state import read_saved_state

    saved = getattr(args, "saved", None)
    if saved:
        read_saved_state(saved)
    return IntegrityOptions(saved_path=saved)


def run_async(coro: Any) -> int:
    """Run a command coroutine; Ctrl-C ends it cleanly with exit code 130."""
    import asyncio

    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def fail(exc: InspectorError) -> int:
    print(f"runtimed-inspector: {exc}", file=sys.stderr)
    return exc.exit_code


def print_json(obj: Any, indent: int | None = None) -> None:
    """One JSON document on stdout (msgspec: a 10k-cell snapshot in a fraction of json's time)."""
    import msgspec

    data = msgspec.json.encode(obj, enc_hook=str)
    if indent:
        data = msgspec.json.format(data, indent=indent)
    sys.stdout.write(data.decode("utf-8") + "\n")
    sys.stdout.flush()


def preflight(args: argparse.Namespace) -> None:
    """Refuse a missing socket, one that is not a socket, or another user's, before the
    session's modules are imported (the connection repeats this check and the peer check)."""
    from .discovery import check_socket

    check_kernel_connection(args)
    check_socket(resolve_socket(args), args.allow_other_user)


def check_kernel_connection(args: argparse.Namespace) -> None:
    """A `--kernel-connection` file that is not there is the command line's fault (exit 2)."""
    import os

    path = getattr(args, "kernel_connection", None)
    if path in (None, "auto"):
        return
    full = os.path.expanduser(path)
    if not os.path.isfile(full):
        raise InspectorError(f"--kernel-connection: no kernel connection file at {path}"
                             f"{' (a directory)' if os.path.isdir(full) else ''}", exit_code=EXIT_USAGE)


# --------------------------------------------------------------------------- commands


def cmd_rooms(args: argparse.Namespace) -> int:
    preflight(args)
    from .pool import probe, require_supported
    from .protocol import messages as m

    async def go() -> int:
        p = await probe(resolve_socket(args), allow_other_user=args.allow_other_user)
        require_supported(p)  # a daemon of another protocol: exit 6 with its version, no listing
        if args.json:
            print_json({
                "daemon": {"socket": p.path, "protocol_version": p.protocol_version,
                           "daemon_version": p.daemon_version, "blob_port": p.blob_port, "pid": p.pid},
                "supported": p.supported,
                "rooms": [m.to_builtins(r) for r in p.rooms],
            }, indent=2)
            return EXIT_OK
        print(f"daemon {p.daemon_version or '?'} (protocol {p.protocol_version}) at {p.path}")
        if not p.rooms:
            print("no rooms")
            return EXIT_OK
        print(f"{'NOTEBOOK ID':<40} {'PEERS':>5}  {'KERNEL':<20} {'STATE':<9} PATH")
        for r in p.rooms:
            kernel = f"{r.kernel_type or '?'} {r.kernel_status or '?'}" if r.has_kernel else "-"
            print(f"{r.notebook_id:<40} {r.active_peers:>5}  {kernel:<20} {r.state or '-':<9} {r.notebook_path or ''}")
        return EXIT_OK

    return _guarded(go)


def cmd_snapshot(args: argparse.Namespace) -> int:
    preflight(args)
    from .session import unless_ended

    async def go() -> int:
        session = make_session(args)
        # every step of the join within --timeout: the probe tries two protocol versions, so each
        # gets under half (a socket that never answers is then named as such, just before it)
        session.config.connect_timeout = min(session.config.connect_timeout, max(0.2, args.timeout / 2 - 0.1))
        session.config.handshake_timeout = min(session.config.handshake_timeout, args.timeout)
        async with session.running() as task:
            await unless_ended(session.wait_settled(args.settle_ms / 1000, args.timeout), task,
                               "the connection ended before the snapshot was taken")
            out = session.snapshot().to_json()
            if (bad := session.malformed_line()) is not None:
                print(bad, file=sys.stderr)
            if args.events:
                out["events"] = [e.to_json() for e in session.log.events()]
            print_json(out, indent=args.indent or None)
            return EXIT_OK

    return _guarded(go)


def cmd_watch(args: argparse.Namespace) -> int:
    preflight(args)
    import asyncio
    import contextlib
    import signal

    import msgspec

    from . import events as ev

    encoder = msgspec.json.Encoder(enc_hook=str)

    async def go() -> int:
        session = make_session(args)
        ending = False

        def show(e: ev.Event) -> None:
            if e.kind == ev.FRAME and not args.frames:
                return
            if ending and (e.kind == ev.ERROR or (e.kind == ev.CONNECTION and e.data.get("state") == "error")):
                return  # the connection we close ourselves (--for ended during connect) is no daemon's fault
            sys.stdout.write(encoder.encode(e.to_json()).decode("utf-8") + "\n")
            sys.stdout.flush()

        session.log.subscribe(show)
        loop = asyncio.get_running_loop()

        def settle(e: ev.Event) -> None:
            if e.kind == ev.CONNECTION and e.data.get("state") == "live":
                from .collector import settle_after_join

                loop.call_soon(settle_after_join)  # after the join's own work, which is on the stack now

        session.log.subscribe(settle)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        # like the window: reconnect with backoff; only an error before the first live
        # connection that no retry cures ends the command
        async with session.running(forever=True) as task:
            timer = asyncio.create_task(asyncio.sleep(args.duration)) if args.duration is not None else None
            stopper = asyncio.create_task(stop.wait())
            try:
                done, _ = await asyncio.wait({task, stopper} | ({timer} if timer else set()),
                                             return_when=asyncio.FIRST_COMPLETED)
                if task in done:
                    task.result()
                    return EXIT_OK
                ending = True
                if stopper in done:
                    return EXIT_INTERRUPTED
                return _watch_verdict(session, args.duration)
            finally:
                for t in (stopper, timer):
                    if t:
                        t.cancel()

    return _guarded(go)


def _watch_verdict(session: Any, duration: float) -> int:
    """`watch --for S` ended: 0 only if the room was live at the end; else one line saying what
    happened (never joined: exit 10; lost and not back: exit 9)."""
    from .errors import EXIT_CLOSED, EXIT_TIMEOUT

    if session.state == "live":
        return EXIT_OK
    lc = session.lifecycle()
    why = str(session.error) if session.error is not None else f"the connection is {session.state}"
    if lc.room == "gone":
        print(f"runtimed-inspector: the room was evicted or closed during the watch ({why})", file=sys.stderr)
        return EXIT_CLOSED
    if not session.was_live:
        missing = "; ".join(session.missing()) if session.profile is not None else "the daemon's answer"
        print(f"runtimed-inspector: the room was never live in {duration:g} s: {why} "
              f"(still waiting for {missing})", file=sys.stderr)
        return EXIT_TIMEOUT
    print(f"runtimed-inspector: not live when the watch ended: {why} "
          f"(disconnected for {lc.disconnected_s:.1f} s)", file=sys.stderr)
    return EXIT_CLOSED


def _guarded(go: Any) -> int:
    try:
        return run_async(go())
    except InspectorError as exc:
        return fail(exc)


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    words = argv[: argv.index("--")] if "--" in argv else argv
    command = next((a for a in words if a in COMMANDS), None)
    if "--version" in words and not any(a in ("-h", "--help") for a in words):
        print(f"runtimed-inspector {__version__}")  # nothing else to import for this
        return EXIT_OK
    first_word = next((a for a in argv if not a.startswith("-")), None)
    if (command is None and not any(a in ("-h", "--help") for a in argv)
            and (first_word is None or not argv[0].isidentifier())):
        # No command: the desktop app. Leading global flags (-v) stay before it.
        lead = 0
        while lead < len(argv) and argv[lead] in ("-v", "-vv", "-vvv", "--verbose"):
            lead += 1
        argv = [*argv[:lead], "gui", *argv[lead:]]
        command = "gui"
    try:
        if (command in ("rooms", "snapshot", "watch") and not any(a in ("-h", "--help") for a in words)
                and (command == "rooms" or any(a.split("=")[0] == "--notebook" for a in words))):  # not FILE
            # A missing socket is known without the engine's modules: parse without them first,
            # and without the log file unless more logging was asked for.
            light = build_parser(())
            early, unknown = light.parse_known_args(argv)
            _non_negative(light, early)
            if not unknown:
                early.verbose += getattr(early, "verbose_after", 0)
                if early.verbose:
                    _setup_logging(early.verbose)
                try:
                    preflight(early)
                except InspectorError as exc:
                    return fail(exc)
        parser = build_parser(() if command is None else (command,))
        args = parser.parse_args(argv)
        _non_negative(parser, args)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else EXIT_USAGE
    args.verbose = (args.verbose or 0) + getattr(args, "verbose_after", 0)
    _setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    started = time.monotonic()
    try:
        code = args.func(args)
    except InspectorError as exc:
        code = fail(exc)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    log.debug("command %s finished in %.2f s with %s", args.command, time.monotonic() - started, code)
    return code


def _setup_logging(verbose: int) -> None:
    from .logging_setup import setup_logging  # the project's own module: a broken one fails loudly

    setup_logging(verbose)


if __name__ == "__main__":
    sys.exit(main())
