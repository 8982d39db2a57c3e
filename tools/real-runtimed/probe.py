#!/usr/bin/env python3
"""Ask a runtimed (protocol v4) over its `pool` channel; standard library only.

    probe.py --socket PATH                    ping and list_rooms
    probe.py --socket PATH --info             get_daemon_info as JSON
    probe.py --socket PATH --wait-ready [--min-uv N] [--timeout S]
                                              until ping answers and >= N uv pool envs are
                                              ready (exit 0), else exit 1 saying what is missing

A pool connection joins no room and launches nothing.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time

PREAMBLE = bytes([0xC0, 0xDE, 0x01, 0xAC, 4])  # magic, then the protocol version


class ProbeError(Exception):
    pass


def request(path: str, *kinds: str, timeout: float = 5.0) -> list[dict]:
    """One pool connection, one reply per request kind, in order."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
            s.sendall(PREAMBLE + frame({"channel": "pool"}))
            replies = []
            for kind in kinds:
                s.sendall(frame({"type": kind}))
                (n,) = struct.unpack(">I", read(s, 4))
                replies.append(json.loads(read(s, n)))
            return replies
        except (OSError, ValueError) as exc:
            raise ProbeError(f"{path}: {exc}") from None


def frame(obj: dict) -> bytes:
    data = json.dumps(obj).encode()
    return struct.pack(">I", len(data)) + data


def read(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ProbeError("the daemon closed the connection without a reply")
        buf += chunk
    return buf


def wait_ready(path: str, min_uv: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            pong, status = request(path, "ping", "status", timeout=3.0)
            uv = status.get("state", {}).get("uv", {})
            last = f"ping {pong.get('type')}, uv pool {json.dumps(uv, sort_keys=True)}"
            if pong.get("type") == "pong" and int(uv.get("available", 0)) >= min_uv:
                print(f"ready: daemon {pong.get('daemon_version')}, {last}", flush=True)
                return 0
        except ProbeError as exc:
            last = str(exc)
        time.sleep(0.5)
    print(f"probe.py: not ready after {timeout:.0f} s: {last}", file=sys.stderr)
    return 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--info", action="store_true")
    ap.add_argument("--wait-ready", action="store_true")
    ap.add_argument("--min-uv", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=240.0)
    a = ap.parse_args()
    try:
        if a.wait_ready:
            return wait_ready(a.socket, a.min_uv, a.timeout)
        if a.info:
            print(json.dumps(request(a.socket, "get_daemon_info")[0], indent=1))
            return 0
        pong, rooms = request(a.socket, "ping", "list_rooms")
        print(f"ping: {json.dumps(pong)}")
        print(f"list_rooms: {len(rooms.get('rooms', []))} room(s)")
        return 0
    except ProbeError as exc:
        print(f"probe.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
