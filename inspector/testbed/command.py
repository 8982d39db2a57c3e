"""`runtimed-inspector testbed`: run the testbed daemon from the command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
from typing import Any

from .faults import FaultError, FaultSet, list_faults_text

log = logging.getLogger("inspector.testbed")


def default_socket_path() -> str:
    return os.path.join(tempfile.gettempdir(), f"runtimed-testbed-{os.getuid()}", "runtimed.sock")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "testbed",
        help="run a runtimed-compatible daemon (protocol v2) with a real kernel and fault injection",
        description="Run the testbed daemon: protocol v2 on a Unix socket, a real ipykernel, the #808 "
                    "comms dual-write, and optional faults that make divergence reproducible.",
        epilog="examples:\n"
               "  runtimed-inspector testbed --socket /tmp/tb/rt.sock --notebook demo.ipynb\n"
               "  runtimed-inspector testbed --fault doc-drop-update:IntSliderModel --fault feed-drop-close:every=2\n"
               "  runtimed-inspector testbed --list-faults",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure_parser(p)
    p.set_defaults(func=run)
    return p


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", metavar="PATH", default=None,
                   help=f"Unix socket to listen on (default {default_socket_path()})")
    p.add_argument("--notebook", metavar="FILE", action="append", default=[],
                   help="open an .ipynb (file-backed room) or a saved .automerge document; repeatable")
    p.add_argument("--fault", metavar="NAME[:SELECTOR]", action="append", default=[],
                   help="inject a fault, e.g. doc-drop-update:IntSliderModel or doc-skip-open:every=3; repeatable")
    p.add_argument("--list-faults", action="store_true", help="list the faults and exit")
    p.add_argument("--keep-alive", type=float, default=30.0, metavar="SECONDS",
                   help="evict a room (and stop its kernel) this long after its last peer left (default 30)")
    p.add_argument("--no-auto-launch", action="store_true",
                   help="do not start a kernel when the first peer joins (launch_kernel still works)")
    p.add_argument("--blob-dir", metavar="DIR", default=None, help="blob store directory (default: a temp dir)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    if args.list_faults:
        print(list_faults_text())
        return 0
    try:
        faults = FaultSet(args.fault)
    except FaultError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in args.notebook:
        if not os.path.exists(path):
            print(f"error: no such notebook: {path}", file=sys.stderr)
            return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    socket_path = args.socket or default_socket_path()
    os.makedirs(os.path.dirname(os.path.abspath(socket_path)), exist_ok=True)
    try:
        return asyncio.run(_serve(socket_path, args, list(faults)))
    except KeyboardInterrupt:
        return 130


async def _serve(socket_path: str, args: argparse.Namespace, faults: list[Any]) -> int:
    from .daemon import Testbed

    tb = Testbed(socket_path, notebooks=args.notebook, faults=faults, keep_alive=args.keep_alive,
                 auto_launch=not args.no_auto_launch, blob_dir=args.blob_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await tb.start()
    print(f"testbed daemon listening on {tb.socket_path}", flush=True)
    print(f"blob server: http://127.0.0.1:{tb.blob_port}/blob/<hash>", flush=True)
    for nid in tb.rooms:
        print(f"room: {nid}", flush=True)
    if tb.faults:
        for line in tb.fault_set.describe():
            print(f"fault active: {line}", flush=True)
    else:
        print("faults: none", flush=True)
    try:
        await stop.wait()
    finally:
        print("shutting down: stopping kernels", flush=True)
        await tb.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runtimed-inspector testbed")
    configure_parser(parser)
    return run(parser.parse_args(argv))
