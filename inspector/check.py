"""`runtimed-inspector check`: watch a room for a while and fail if comm views diverged.

Made for CI jobs of widget libraries: exit 0 when nothing diverged during the watch, 1 with
one line per divergence (comm id, model, kind, keys) when something did, 12 when nothing
diverged but a view could not know some comms (docs/verdicts.md). Also gives `snapshot`
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
from dataclasses import dataclass, field
from typing import Any

from .divergence import IN_SYNC, PENDING, SEVERITY_RANK
from .errors import EXIT_DIVERGED, EXIT_OK, EXIT_UNKNOWN, Timeout
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
                   help="warnings (facts about one view: dangling or forward references, seq anomalies, "
                        "integrity warnings: orphaned comms, saved-notebook differences; key-history warnings: "
                        "value regressions, no-op rewrites, flooding, slow hops) and information (feed gaps, "
                        "comms kept after a kernel death) fail too")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--timeout", type=float, default=20.0, metavar="S",
                   help="give up if the room cannot be joined within S seconds (default 20)")
    add_kernel_option(p)
    add_settle_options(p)
    p.set_defaults(func=run)
    add_saved_option(p)
    # snapshot and watch get the kernel view and the engine too
    for name in ("snapshot", "watch"):
        other = subparsers.choices.get(name)
        if other is not None and not any("--kernel-connection" in a.option_strings for a in other._actions):
            add_kernel_option(other)
            if name == "snapshot":
                add_saved_option(other)


def add_saved_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--saved", metavar="FILE", default=None,
                   help="a saved .ipynb whose widget state is compared with the room (default: the room's "
                        "own file, when the daemon names it and it is on disk)")


def _fails(d: Divergence, strict: bool) -> bool:
    """Errors (views disagree) fail; warnings and information (facts about one view) only with --strict."""
    if d.status == "pending" or d.kind in (PENDING, IN_SYNC):
        return False
    return strict or SEVERITY_RANK.get(d.severity, 0) >= SEVERITY_RANK["error"]


def unknown_lines(unknown: dict[str, tuple[str, ...]]) -> list[str]:
    """One statement per view that cannot speak for some comms."""
    return [f"{view} view unknown for {len(ids)} comm{'s' if len(ids) != 1 else ''} opened before it attached"
            + f" ({', '.join(ids[:3])}{', …' if len(ids) > 3 else ''})"
            for view, ids in sorted(unknown.items())]


def summary_line(d: Divergence) -> str:
    keys = "; ".join(
        f"{k.key}: " + ", ".join(f"{side} {json.dumps(v, default=str)[:40]}" for side, v in k.values.items())
        for k in d.keys[:4])
    return (f"{d.comm_id}  {d.model_name or '-'}  {d.kind}  [{d.severity}]"
            + (f"  keys {keys}" if keys else "") + (f"  — {d.detail}" if d.detail else ""))


def finding_line(f: dict[str, Any]) -> str:
    """One key-history finding (docs/history.md) as `check` prints it."""
    return f"warning: {f['comm_id']}  {f['key']}  {f['kind']}  [{f['source']}]  — {f['detail']}"


@dataclass
class Watched:
    """What a check saw: every divergence reported, the views compared, the kernel tap (if any)."""

    found: dict[tuple[str, str], Divergence]
    sources: tuple[str, ...]
    tap: Any
    integrity: Any = None  # the last integrity report (`inspector.integrity.IntegrityReport`)
    unknown: dict[str, tuple[str, ...]] = field(default_factory=dict)  # view -> comms it never saw opened
    malformed: str | None = None  # one line about malformed data from the daemon
    findings: tuple[dict[str, Any], ...] = ()  # the key history's (warnings: fail only --strict)
    pending: int = 0  # findings still pending when the watch ended (the views were still moving)
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
        # snapshots at a steady rate, as the window takes them: the integrity tracker times
        # forward references by the snapshots it is fed
        end = time.monotonic() + duration
        while (left := end - time.monotonic()) > 0:
            session.snapshot()
            await unless_ended(asyncio.sleep(min(0.25, left)), task, "the connection ended during the check")
        # Let what is still pending settle (bounded by the settle windows).
        cfg = sd.engine.config
        # a burst the daemon is still writing settles at its own pace (docs/verdicts.md)
        limit = time.monotonic() + max(cfg.clear_s + cfg.quiet_s, cfg.burst_quiet_max_s) + 0.5
        # ticks through the core, not the engine directly: a recording of the check (--record)
        # then holds every time the engine was run at, and `check FILE` gives this verdict
        while time.monotonic() < limit:
            session.tick(time.monotonic())
            due = sd.engine.next_deadline()
            if due is None:
                break
            await asyncio.sleep(min(0.05, max(0.0, due - time.monotonic()) + 0.005))  # until the next deadline
        sd = session.divergence or sd  # a reconnect bound a fresh engine
        end = time.monotonic()
        session.tick(end)
        for d in sd.divergences(include_pending=False, now=end):
            seen[(d.comm_id, d.kind)] = d
        # taken while still connected: the views and the tap end with the connection
        pending = sum(1 for d in sd.divergences() if d.status == "pending")
        snap = session.snapshot(taken_at=time.time())
        return Watched(seen, sd.sources(), sd.tap, integrity=snap.integrity, unknown=sd.unknown(),
                       malformed=session.malformed_line(), findings=snap.findings, pending=pending,
                       lifecycle=session.lifecycle(), lifecycle_counts=counts)


async def wait_until(pred: Any, timeout: float, poll: float = 0.02) -> None:
    """Poll a condition that no event announces (the tap's subscription)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise Timeout(f"condition not met within {timeout:g} s")
        await asyncio.sleep(poll)


def integrity_json(report: Any) -> Any:
    if report is None:
        return None
    return {"warnings": list(report.warnings()), "report": report.to_json()}


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
        try:
            watched = await watch_room(session, args.duration, args.timeout)
        finally:
            if session.recording is not None:
                session.recording.finish()
        return print_verdict(args, watched, args.duration)

    return cli._guarded(go)


def print_verdict(args: argparse.Namespace, watched: Watched, duration: float) -> int:
    """The check's output and exit code (a live watch, or a recording's replay: `check FILE`)."""
    found, tap = watched.found, watched.tap
    failing = [d for d in found.values() if _fails(d, args.strict)]
    notes = [d for d in found.values() if not _fails(d, args.strict)]
    failing.sort(key=lambda d: (-SEVERITY_RANK.get(d.severity, 0), d.comm_id, d.kind))
    unknown = watched.unknown
    if watched.malformed is not None:
        print(watched.malformed, file=sys.stderr)
    # integrity and key-history findings are warnings: they fail only --strict (docs/verdicts.md)
    integrity = watched.integrity.warnings() if watched.integrity is not None else ()
    failed = bool(failing) or (args.strict and (bool(integrity) or bool(watched.findings)))
    pending = watched.pending
    status = "diverged" if failed else ("unknown" if unknown else "pending" if pending else "settled")
    lc = watched.lifecycle
    gap_line = _gap_line(lc) if lc is not None else ""
    if args.json:
        import msgspec

        print(json.dumps({
            "status": status,
            "unknown": {view: list(ids) for view, ids in unknown.items()},
            "pending": pending,
            "diverged": [msgspec.to_builtins(d) for d in failing],
            "info": [msgspec.to_builtins(d) for d in notes],
            "ok": status == "settled",
            "integrity": integrity_json(watched.integrity),
            "sources": list(watched.sources),
            "kernel_tap": tap.summary() if tap is not None else None,
            "findings": list(watched.findings),
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
        for f in watched.findings:
            print(finding_line(f))
        if tap is not None and tap.rejected:
            print(f"note: the kernel tap rejected {tap.rejected} IOPub message(s) "
                  f"({', '.join(f'{k}: {v}' for k, v in tap.reject_reasons.items())})")
        for line in integrity:
            print(("integrity: " if args.strict else "warning: integrity: ") + line)
        for line in unknown_lines(unknown):
            print("unknown: " + line)
        if pending:
            print(f"pending: {pending} finding(s) still settling when the watch ended (the views were still moving)")
        srcs = ", ".join(watched.sources)
        if failing:
            verdict = f"{len(failing)} divergence(s)"
        elif unknown:
            verdict = "no divergence seen, but " + "; ".join(unknown_lines(unknown))
        elif pending:
            verdict = f"no divergence settled; {pending} finding(s) still pending"
        else:
            verdict = "no divergence"
        if integrity:
            verdict += f", {len(integrity)} integrity warning(s)"
        if watched.findings:
            verdict += f", {len(watched.findings)} history warning(s)"
        print(f"check: {verdict} in {duration:g} s (views: {srcs}){gap_line}", file=sys.stderr)
    if failed:
        return EXIT_DIVERGED
    return EXIT_UNKNOWN if unknown or pending else EXIT_OK
