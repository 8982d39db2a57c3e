"""The flight recorder's commands: `record`, `diff`, `report`, `export`, and a recording FILE
where `snapshot`, `watch` and `check` take a room (`--record FILE` on `gui`, `watch`, `check`).

Offline, the recording drives the session core again (`inspector.replay_driver`): the same
tree, the same event log (the seqs `watch` printed) and the verdict the live `check` had. A
file that cannot be read fails with one line and exit code 12; a recording cut short (a kill)
opens with everything before the cut, and says where it was cut on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from typing import Any

from . import cli
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .replay_driver import At, Replay, open_recording, parse_at

RECORD_EXAMPLES = """examples:
  runtimed-inspector record --notebook 3f2a… --for 60 -o slider-bug.rtirec
  runtimed-inspector check slider-bug.rtirec          # the verdict the live session had
  runtimed-inspector snapshot slider-bug.rtirec --at 120 | jq .comms"""


def add_parser(subparsers: Any) -> None:
    from .check import add_kernel_option, add_settle_options

    p = subparsers.add_parser("record", help=cli.PLUGIN_HELP["record"], epilog=RECORD_EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    cli._common(p)
    p.add_argument("--for", dest="duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: until interrupted)")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="the recording to write (*.rtirec)")
    p.add_argument("--timeout", type=float, default=20.0, metavar="S",
                   help="give up if the room cannot be joined within S seconds (default 20)")
    add_kernel_option(p)
    add_settle_options(p)
    p.set_defaults(func=cmd_record)

    p = subparsers.add_parser("diff", help=cli.PLUGIN_HELP["diff"])
    p.add_argument("recording", metavar="FILE")
    p.add_argument("--from", dest="from_", metavar="N", required=True, help="an event seq, 12.5s, or a wall time")
    p.add_argument("--to", metavar="M", required=True, help="an event seq, 12.5s, or a wall time")
    p.set_defaults(func=cmd_diff)

    p = subparsers.add_parser("report", help=cli.PLUGIN_HELP["report"])
    p.add_argument("recording", metavar="FILE")
    p.add_argument("-o", "--output", metavar="BUNDLE.zip", required=True)
    p.add_argument("--redact", action="store_true",
                   help="replace cell sources, outputs and string widget values by their length and hash")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("export", help=cli.PLUGIN_HELP["export"])
    p.add_argument("recording", metavar="FILE")
    p.add_argument("--format", choices=("pcapng",), required=True)
    p.add_argument("-o", "--output", metavar="OUT.pcapng", required=True)
    p.set_defaults(func=cmd_export)

    # a recording where snapshot, watch and check take a room; --record on the live commands
    for name, offline in (("snapshot", offline_snapshot), ("watch", offline_watch), ("check", offline_check)):
        cmd = subparsers.choices.get(name)
        if cmd is not None:
            _take_file(cmd, offline)
    for name in ("gui", "watch", "check"):
        cmd = subparsers.choices.get(name)
        if cmd is not None:
            cmd.add_argument("--record", metavar="FILE", default=None,
                             help="also record the session to FILE (the ring of the last minutes is always kept)")
    snap = subparsers.choices.get("snapshot")
    if snap is not None:
        snap.add_argument("--at", metavar="N", default=None,
                          help="with FILE: the room as of event seq N (as `watch FILE` prints it), "
                               "12.5s after the start, or a wall time")


def _take_file(parser: argparse.ArgumentParser, offline: Any) -> None:
    """`command FILE`: --notebook becomes optional, and FILE (a recording) replaces the room."""
    for action in parser._actions:
        if "--notebook" in action.option_strings:
            action.required = False
    parser.add_argument("recording", metavar="FILE", nargs="?", default=None,
                        help="a recording (instead of --notebook): replayed offline")
    live = parser.get_default("func")

    def dispatch(args: argparse.Namespace) -> int:
        if args.recording is not None:
            if args.notebook is not None:
                print("runtimed-inspector: give --notebook ID or a recording FILE, not both", file=sys.stderr)
                return EXIT_USAGE
            return offline(args)
        if args.notebook is None:
            print("runtimed-inspector: the following arguments are required: --notebook (or a recording FILE)",
                  file=sys.stderr)
            return EXIT_USAGE
        return live(args)

    parser.set_defaults(func=dispatch)


def _replay(path: str) -> Replay:
    rp = Replay(path)
    if rp.reader.tail is not None:
        print(f"runtimed-inspector: {path}: {rp.reader.tail} (the recording was cut short: replaying what "
              "was written before the cut)", file=sys.stderr)
    return rp


def _at(rp: Replay, text: str | None) -> At | None:
    return None if text is None else parse_at(text, rp.meta)


# -- offline commands ----------------------------------------------------------------------------


def offline_snapshot(args: argparse.Namespace) -> int:
    rp = _replay(args.recording)
    core = rp.run(_at(rp, getattr(args, "at", None)))
    out = core.snapshot(taken_at=rp.wall_of(core.now or rp.meta.start_mono)).to_json()
    out["recording"] = {"file": args.recording, "records_replayed": rp.index, "records": len(rp)}
    if args.events:
        out["events"] = [e.to_json() for e in core.log.events()]
    cli.print_json(out, indent=args.indent or None)
    return EXIT_OK


def offline_watch(args: argparse.Namespace) -> int:
    import msgspec

    from . import events as ev

    encoder = msgspec.json.Encoder(enc_hook=str)
    rp = _replay(args.recording)

    def show(e: ev.Event) -> None:
        if e.kind == ev.FRAME and not args.frames:
            return
        sys.stdout.write(encoder.encode(e.to_json()).decode("utf-8") + "\n")

    rp.core.log.subscribe(show)
    limit = None if args.duration is None else At(mono=rp.meta.start_mono + args.duration)
    try:
        rp.run(limit)
        sys.stdout.flush()
    except BrokenPipeError:  # `watch FILE | head`: the reader has what it wanted
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the interpreter's exit flush goes nowhere)
    return EXIT_OK


def offline_check(args: argparse.Namespace) -> int:
    from .check import Watched, _div, print_verdict

    rp = _replay(args.recording)
    core = rp.core
    seen: dict[tuple[str, str], Any] = {}

    def on_event(e: Any) -> None:
        if e.kind == "divergence":
            for raw in e.data.get("divergences", ()):
                if raw.get("status") != "pending":
                    seen[(raw["comm_id"], raw["kind"])] = _div(raw)

    sources: list[str] = []
    unknown: dict[str, tuple[str, ...]] = {}
    pending = [0]

    def verdict_now(c: Any) -> None:
        # what the live check took at its end, while still connected (the views end with it)
        if c.divergence is not None and c.state == "live":
            for d in c.divergence.divergences(include_pending=False, now=c.now):
                seen[(d.comm_id, d.kind)] = d
            sources[:] = c.divergence.sources()
            unknown.clear()
            unknown.update(c.divergence.unknown())
            pending[0] = sum(1 for d in c.divergence.divergences() if d.status == "pending")

    core.log.subscribe(on_event)
    rp.before_close = verdict_now
    rp.run()
    verdict_now(core)
    duration = round(rp.reader.monos[len(rp) - 1] - rp.meta.start_mono, 1) if len(rp) else 0.0
    print(f"check: replaying {args.recording} ({len(rp)} records, {duration:.1f} s of room {rp.meta.notebook_id})",
          file=sys.stderr)
    snap = core.snapshot()  # the key history's findings, as the live check printed them
    return print_verdict(args, Watched(seen, tuple(sources), None, integrity=snap.integrity,
                                       unknown=dict(unknown), findings=snap.findings, pending=pending[0],
                                       lifecycle=core.lifecycle()),
                         duration)


def cmd_diff(args: argparse.Namespace) -> int:
    from .recording_diff import diff_points

    rp = _replay(args.recording)
    a, b = _at(rp, args.from_), _at(rp, args.to)
    assert a is not None and b is not None
    cli.print_json(diff_points(args.recording, a, b), indent=2)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    import msgspec

    from .recording.report import build_report

    rp = _replay(args.recording)
    core = rp.run()
    divs = ([msgspec.to_builtins(d) for d in core.divergence.divergences(include_pending=False, now=core.now)]
            if core.divergence is not None else [])
    snap = core.snapshot(taken_at=rp.wall_of(core.now or rp.meta.start_mono)).to_json()
    rp.reader.close()
    try:
        manifest = build_report(args.recording, args.output, snapshot=snap, divergences=divs, redact=args.redact)
    except OSError as exc:
        from .errors import BadRecording

        raise BadRecording(f"{args.output}: {exc.strerror or exc}") from None
    print(f"report: {args.output} ({len(manifest['files'])} files, {len(divs)} divergence(s)"
          f"{', redacted' if args.redact else ''})", file=sys.stderr)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from .recording.pcapng import export_pcapng
    from .recording.records import Mark

    reader = open_recording(args.recording)
    comments = {i: [rec.text] for i, rec in reader.records() if isinstance(rec, Mark)}
    try:
        n = export_pcapng(reader, args.output, comments)
    except OSError as exc:
        from .errors import BadRecording

        raise BadRecording(f"{args.output}: {exc.strerror or exc}") from None
    print(f"export: {n} packets to {args.output} ({len(comments)} divergence transition(s) as comments)",
          file=sys.stderr)
    return EXIT_OK


# -- recording a live room -----------------------------------------------------------------------


def cmd_record(args: argparse.Namespace) -> int:
    cli.preflight(args)
    from .session import unless_ended

    args.record = args.output

    async def go() -> int:
        session = cli.make_session(args)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        started = time.monotonic()
        try:
            async with session.running() as task:
                await unless_ended(session.wait_for(lambda s: s.connection == "live", args.timeout), task,
                                   "the connection ended before the room was joined")
                print(f"record: recording room {args.notebook} to {args.output}"
                      + (f" for {args.duration:g} s" if args.duration is not None else " until interrupted"),
                      file=sys.stderr, flush=True)
                waits = {task, asyncio.ensure_future(stop.wait())}
                if args.duration is not None:
                    waits.add(asyncio.ensure_future(asyncio.sleep(args.duration)))
                done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for t in pending - {task}:
                    t.cancel()
                if task in done:
                    task.result()
                interrupted = stop.is_set()
        finally:
            if session.recording is not None:
                session.recording.finish()
        print(f"record: {args.output}: {time.monotonic() - started:.1f} s recorded", file=sys.stderr)
        return EXIT_INTERRUPTED if interrupted else EXIT_OK

    return cli._guarded(go)
