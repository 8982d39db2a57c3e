"""`runtimed-inspector check`: watch a room for a while and fail if comm views diverged.

Made for CI jobs of widget libraries: exit 0 when nothing diverged during the watch, 1 with
one line per divergence (comm id, model, kind, keys) when something did. Also gives `snapshot`
and `watch` the `--kernel-connection` and settle options (`cli.divergence_options` turns them
into the session's declared divergence option).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from .divergence import IN_SYNC, PENDING, SEVERITY_RANK
from .errors import EXIT_DIVERGED, EXIT_OK, Timeout
from .session import PeerSession, unless_ended
from .snapshot import Divergence

EXAMPLES = """examples:
  runtimed-inspector check --notebook 3f2a… --for 30
  runtimed-inspector check --socket /tmp/rt.sock --notebook 3f2a… --for 10 \\
      --kernel-connection ~/.cache/runt/connections/lawful-owl.json"""


def add_kernel_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel-connection", metavar="FILE", default=None,
                   help="the kernel's Jupyter connection file: also compare with the kernel's own view, "
                        "replayed from its IOPub channel (read-only, HMAC-verified); 'auto' finds the "
                        "room's kernel on a v4 daemon (runtime agent -> kernel process -> connection file)")


def add_settle_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet-ms", type=int, default=250, metavar="N",
                   help="a difference is reported once both views were quiet for N ms (default 250)")
    p.add_argument("--clear-ms", type=int, default=2000, metavar="N",
                   help="...and N ms after a kernel launch, shutdown or death (default 2000)")
    p.add_argument("--no-update-dual-write", action="store_true",
                   help="the daemon does not write every state update to the document (68abbd94 era): "
                        "state differences are information only")


def add_parser(subparsers: Any) -> None:
    from . import cli

    p = subparsers.add_parser(
        "check", help="watch a room for S seconds; exit 1 with a summary if comm views diverged",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli._common(p)
    p.add_argument("--for", dest="duration", type=float, default=10.0, metavar="S",
                   help="how long to watch, in seconds (default 10)")
    p.add_argument("--strict", action="store_true",
                   help="information-grade findings (feed gaps, comms kept after a kernel death) fail too")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--timeout", type=float, default=20.0, metavar="S",
                   help="give up if the room cannot be joined within S seconds (default 20)")
    add_kernel_option(p)
    add_settle_options(p)
    p.set_defaults(func=run)
    # snapshot and watch get the kernel view and the engine too
    for name in ("snapshot", "watch"):
        other = subparsers.choices.get(name)
        if other is not None and not any("--kernel-connection" in a.option_strings for a in other._actions):
            add_kernel_option(other)


def _fails(d: Divergence, strict: bool) -> bool:
    if d.status == "pending" or d.kind in (PENDING, IN_SYNC):
        return False
    return strict or SEVERITY_RANK.get(d.severity, 0) >= SEVERITY_RANK["warn"]


def summary_line(d: Divergence) -> str:
    keys = "; ".join(
        f"{k.key}: " + ", ".join(f"{side} {json.dumps(v, default=str)[:40]}" for side, v in k.values.items())
        for k in d.keys[:4])
    return (f"{d.comm_id}  {d.model_name or '-'}  {d.kind}  [{d.severity}]"
            + (f"  keys {keys}" if keys else "") + (f"  — {d.detail}" if d.detail else ""))


@dataclass
class Watched:
    """What a check saw: every divergence reported, the views compared, the kernel tap (if any)."""

    found: dict[tuple[str, str], Divergence]
    sources: tuple[str, ...]
    tap: Any
    lifecycle: Any = None  # the session's LifecycleView at the end (gaps, kernel restarts, room gone)
    lifecycle_counts: dict[str, int] | None = None  # lifecycle events seen during the check, by what


async def watch_room(session: PeerSession, duration: float, join_timeout: float) -> Watched:
    """Run the session for `duration` seconds after the join; every divergence reported meanwhile."""
    seen: dict[tuple[str, str], Divergence] = {}
    counts: dict[str, int] = {}

    def on_event(e: Any) -> None:
        if e.kind == "lifecycle":
            counts[e.data.get("what", "?")] = counts.get(e.data.get("what", "?"), 0) + 1
        if e.kind != "divergence":
            return
        for raw in e.data.get("divergences", ()):
            if raw.get("status") != "pending":
                seen[(raw["comm_id"], raw["kind"])] = _div(raw)

    session.log.subscribe(on_event)
    # reconnects like the window (same backoff); the gaps are reported with the verdict
    async with session.running(forever=True) as task:
        await unless_ended(session.wait_for(lambda s: s.connection == "live", join_timeout), task,
                           "the connection ended before the room was joined")
        sd = session.divergence  # this connection's binding
        assert sd is not None, "cli.make_session always declares the divergence option"
        if sd.kernel_connection:
            # the kernel view only sees what is published after it subscribed: wait for it (bounded)
            with contextlib.suppress(Timeout):
                await unless_ended(wait_until(lambda: sd.tap is not None and sd.tap.state != "connecting", 2.0),
                                   task)
        print(f"check: watching room {session.config.notebook_id} for {duration:g} s "
              f"(views: {', '.join(sd.sources())})", file=sys.stderr, flush=True)
        await unless_ended(asyncio.sleep(duration), task, "the connection ended during the check")
        # Let what is still pending settle (bounded by the settle windows).
        cfg = sd.engine.config
        limit = time.monotonic() + cfg.clear_s + cfg.quiet_s + 0.5
        while time.monotonic() < limit:
            sd.run()
            due = sd.engine.next_deadline()
            if due is None:
                break
            await asyncio.sleep(min(0.05, max(0.0, due - time.monotonic()) + 0.005))  # until the next deadline
        sd = session.divergence or sd  # a reconnect bound a fresh engine
        sd.run()
        for d in sd.divergences(include_pending=False):
            seen[(d.comm_id, d.kind)] = d
        # taken while still connected: the views and the tap end with the connection
        return Watched(seen, sd.sources(), sd.tap, session.lifecycle(), counts)


async def wait_until(pred: Any, timeout: float, poll: float = 0.02) -> None:
    """Poll a condition that no event announces (the tap's subscription)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise Timeout(f"condition not met within {timeout:g} s")
        await asyncio.sleep(poll)


def _gap_line(lc: Any) -> str:
    """`; disconnected for 4.2 s (1 gap)`, the kernel's restarts and a room gone, for the verdict."""
    parts = []
    if lc.gaps_s:
        parts.append(f"disconnected for {lc.disconnected_s:.1f} s ({len(lc.gaps_s)} gap{'s' if len(lc.gaps_s) > 1 else ''})")
    if lc.kernel_restarts:
        parts.append(f"kernel restarted {lc.kernel_restarts}x")
    if lc.room == "gone":
        parts.append("the room was evicted or closed")
    return "; " + "; ".join(parts) if parts else ""


def _div(raw: dict[str, Any]) -> Divergence:
    import msgspec

    return msgspec.convert(raw, Divergence)


def run(args: argparse.Namespace) -> int:
    from . import cli

    cli.preflight(args)

    async def go() -> int:
        session = cli.make_session(args)
        watched = await watch_room(session, args.duration, args.timeout)
        lc = watched.lifecycle
        gap_line = _gap_line(lc) if lc is not None else ""
        found, tap = watched.found, watched.tap
        failing = [d for d in found.values() if _fails(d, args.strict)]
        notes = [d for d in found.values() if not _fails(d, args.strict)]
        failing.sort(key=lambda d: (-SEVERITY_RANK.get(d.severity, 0), d.comm_id, d.kind))
        if args.json:
            import msgspec

            print(json.dumps({
                "ok": not failing,
                "diverged": [msgspec.to_builtins(d) for d in failing],
                "info": [msgspec.to_builtins(d) for d in notes],
                "sources": list(watched.sources),
                "kernel_tap": tap.summary() if tap is not None else None,
                "gaps_s": list(lc.gaps_s) if lc is not None else [],
                "disconnected_s": lc.disconnected_s if lc is not None else 0.0,
                "lifecycle": {**(watched.lifecycle_counts or {}),
                              "room": lc.room if lc is not None else None,
                              "kernel": lc.kernel if lc is not None else None,
                              "kernel_restarts": lc.kernel_restarts if lc is not None else 0},
            }, indent=2, default=str))
        else:
            for d in failing:
                print(summary_line(d))
            for d in notes:
                print("note: " + summary_line(d))
            if tap is not None and tap.rejected:
                print(f"note: the kernel tap rejected {tap.rejected} IOPub message(s) "
                      f"({', '.join(f'{k}: {v}' for k, v in tap.reject_reasons.items())})")
            srcs = ", ".join(watched.sources)
            verdict = (f"{len(failing)} divergence(s)" if failing else "no divergence")
            print(f"check: {verdict} in {args.duration:g} s (views: {srcs}){gap_line}", file=sys.stderr)
        return EXIT_DIVERGED if failing else EXIT_OK

    return cli._guarded(go)
