"""`runtimed-inspector history FILE|--notebook ID --comm ID --key K [--json]`: one key's story.

Every value each source held for the key, with time, writer (and the peer behind it), carrier
and timeline event; then the history findings for that key and the per-hop latency of its comm.
FILE is a saved key history (`KeyHistory.save`, the window's "save history"); with `--notebook`
the room is watched live for `--for` seconds first (the history starts when the inspector joins:
what happened before is unknown, and said so).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from .errors import EXIT_OK, EXIT_USAGE, InspectorError
from .history_findings import Thresholds, detect
from .hop_latency import latency_block
from .key_history import Entry, KeyHistory

EXAMPLES = """examples:
  runtimed-inspector history saved-history.json --comm 3f9c --key value
  runtimed-inspector history --notebook 3f2a… --for 20 --comm 3f9c --key value --json
  runtimed-inspector history --notebook 3f2a… --for 20 --comm 3f9c --key value --save key.json"""


class HistoryUsage(InspectorError):
    exit_code = EXIT_USAGE


def add_parser(subparsers: Any) -> None:
    from . import check, cli

    p = subparsers.add_parser("history", help="one comm key over time: every value each view held, who wrote it, "
                              "what carried it, findings and hop latency", epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", metavar="FILE", help="a saved key history (JSON)")
    cli._common(p, notebook=False)
    p.add_argument("--notebook", metavar="ID", help="watch this room live instead of reading FILE")
    p.add_argument("--allow-kernel-launch", action="store_true",
                   help="join an inactive room even though the daemon will launch a kernel for it")
    p.add_argument("--for", dest="duration", type=float, default=10.0, metavar="S",
                   help="with --notebook: how long to watch, in seconds (default 10)")
    p.add_argument("--timeout", type=float, default=20.0, metavar="S", help="give up joining after S seconds")
    p.add_argument("--comm", required=True, metavar="ID", help="comm id (a unique prefix is enough)")
    p.add_argument("--key", required=True, metavar="K", help="state key, e.g. value")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--save", metavar="FILE", help="with --notebook: also save the whole history to FILE")
    p.add_argument("--slow-hop-ms", type=float, default=Thresholds.slow_hop_ms, metavar="N",
                   help=f"a hop slower than N ms is a finding (default {Thresholds.slow_hop_ms:g})")
    p.add_argument("--flood-per-s", type=float, default=Thresholds.flood_per_s, metavar="N",
                   help=f"more writes per second than N is flooding (default {Thresholds.flood_per_s:g})")
    check.add_kernel_option(p)
    p.set_defaults(func=run, no_blobs=True)


def resolve_comm(store: KeyHistory, comm: str) -> str:
    comms = store.comms()
    if comm in comms:
        return comm
    hits = [c for c in comms if c.startswith(comm)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise HistoryUsage(f"no history for comm {comm!r} ({len(comms)} comm(s) recorded"
                           + (f", e.g. {', '.join(comms[:3])}" if comms else "") + ")")
    raise HistoryUsage(f"comm prefix {comm!r} is ambiguous ({len(hits)} comms)")


def history_json(store: KeyHistory, comm_id: str, key: str, thresholds: Thresholds | None = None) -> dict[str, Any]:
    import msgspec

    stats = store.stats(comm_id, key)
    lat = latency_block(store, comm_id=comm_id)
    return {
        "comm_id": comm_id, "key": key,
        "entries": [msgspec.to_builtins(e) for e in store.series(comm_id, key)],
        "dropped": stats.dropped,
        "blame": store.blame(comm_id, key),
        "findings": [f.to_json() for f in detect(store, thresholds, comm_id=comm_id, key=key)],
        "latency": lat["comms"].get(comm_id, {}),
    }


def _value(v: Any, n: int = 32) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= n else text[: n - 1] + "…"


def print_table(store: KeyHistory, comm_id: str, key: str, thresholds: Thresholds | None = None,
                out: TextIO | None = None) -> None:
    out = out or sys.stdout
    rows = store.series(comm_id, key)
    stats = store.stats(comm_id, key)
    t0 = rows[0].t if rows else 0.0
    out.write(f"comm {comm_id} key {key!r}: {len(rows)} value(s)"
              + (f", {stats.dropped} older dropped (history full)" if stats.dropped else "") + "\n")
    cols = ("+s", "time", "source", "value", "writer", "peer", "carrier", "event")
    table = [cols] + [_row(e, t0) for e in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    for r in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
    for f in detect(store, thresholds, comm_id=comm_id, key=key):
        out.write(f"{f.kind} [{f.severity}] {f.source}: {f.detail}\n")
    hops = latency_block(store, comm_id=comm_id)["comms"].get(comm_id, {})
    for name, h in hops.items():
        out.write(f"latency {name}: n={h['n']} p50={h['p50_ms']:.1f} ms p95={h['p95_ms']:.1f} ms "
                  f"max={h['max_ms']:.1f} ms\n")


def _row(e: Entry, t0: float) -> tuple[str, ...]:
    wall = datetime.fromtimestamp(e.wall, UTC).strftime("%H:%M:%S.%f")[:-3]
    return (f"{e.t - t0:.3f}", wall, e.source, _value(e.value), e.writer or "-", e.peer or "-",
            e.carrier or "-", str(e.event_seq) if e.event_seq is not None else "-")


def show(store: KeyHistory, comm: str, key: str, as_json: bool, thresholds: Thresholds | None = None,
         out: TextIO | None = None) -> int:
    """Print one key's history; the command's body once the store is loaded or recorded."""
    out = out or sys.stdout
    comm_id = resolve_comm(store, comm)
    if key not in store.keys(comm_id):
        raise HistoryUsage(f"comm {comm_id} has no history for key {key!r} (keys: "
                           f"{', '.join(store.keys(comm_id)[:12]) or 'none'})")
    if as_json:
        out.write(json.dumps(history_json(store, comm_id, key, thresholds), indent=2, default=str) + "\n")
    else:
        print_table(store, comm_id, key, thresholds, out)
    return EXIT_OK


# Readers of other files that hold a key history, tried before a saved history: each returns the
# store or None when the file is not its kind. The recorder's reader replays a recording through
# `SessionCore` with `SessionConfig.history` set and returns `core.history.history`.
FILE_READERS: list[Callable[[str], KeyHistory | None]] = []


def read_file(path: str) -> KeyHistory:
    """FILE of `history`: a recording (through `FILE_READERS`) or a saved key history. Raises
    ValueError with a one-line reason."""
    for reader in FILE_READERS:
        store = reader(path)
        if store is not None:
            return store
    return KeyHistory.load(path)


async def record_live(session: Any, duration: float, join_timeout: float) -> KeyHistory:
    """Watch a room for `duration` seconds after the join and return what the views said (the
    session core keeps the history: `SessionConfig.history`)."""
    from .session import unless_ended

    assert session.history is not None, "cli.make_session always declares the history option"
    async with session.running() as task:
        await unless_ended(session.wait_for(lambda s: s.connection == "live", join_timeout), task,
                           "the connection ended before the room was joined")
        print(f"history: watching room {session.config.notebook_id} for {duration:g} s "
              f"(the history starts at the join: earlier values are unknown)", file=sys.stderr, flush=True)
        await unless_ended(asyncio.sleep(duration), task, "the connection ended during the watch")
    return session.history.history


def run(args: argparse.Namespace) -> int:
    from . import cli

    th = Thresholds(slow_hop_ms=args.slow_hop_ms, flood_per_s=args.flood_per_s)
    if bool(args.file) == bool(args.notebook):
        return cli.fail(HistoryUsage("history needs either FILE or --notebook ID (not both)"))
    if args.file:
        try:
            store = read_file(args.file)
            return show(store, args.comm, args.key, args.json, th)
        except ValueError as exc:
            return cli.fail(HistoryUsage(str(exc)))
        except InspectorError as exc:
            return cli.fail(exc)

    async def go() -> int:
        session = cli.make_session(args)
        store = await record_live(session, args.duration, args.timeout)
        if args.save:
            store.save(args.save)
        return show(store, args.comm, args.key, args.json, th)

    return cli._guarded(go)
