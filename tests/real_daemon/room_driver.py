"""Drives a room of the real runtimed with the wheel's own Python client (run it with pyrt.sh).

Reads JSON commands on stdin, one per line, and answers each with one JSON line on stdout:

    {"op": "create"}                               -> {"ok": true, "notebook_id": ...}
    {"op": "open", "path": "x.ipynb"}              -> {"ok": true, "notebook_id": ..., "cells": n}
    {"op": "run", "source": "..."}                  -> {"ok": true, "success": ..., "outputs": [...]}
    {"op": "run", "cell_id": "..."}                 -> runs an existing cell (e.g. one of an opened file)
    {"op": "cells", "n": 1000}                      -> {"ok": true}   (adds n markdown cells)
    {"op": "send_comm", "comm_id": ..., "state": {}} -> {"ok": true, "response": {...}}
    {"op": "save", "path": "/abs/x.ipynb"}          -> {"ok": true, "path": ...}   (save_notebook, as a client)
    {"op": "stop_runtime"}                          -> {"ok": true}   (shuts the kernel down, stays joined)
    {"op": "quit"}                                  -> shuts the kernel down, disconnects

While it runs, the room has a peer, so the daemon keeps it and its kernel alive.
`send_comm` goes through a separate raw `notebook_sync` connection (the wheel has no call for
it): a `comm_msg` update the kernel applies and echoes while the CommsDoc keeps its value.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import sys
import uuid

import runtimed


def _raw_send_comm(sock_path: str, notebook_id: str, comm_id: str, state: dict) -> dict:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(sock_path)

    def send(payload: bytes) -> None:
        s.sendall(struct.pack(">I", len(payload)) + payload)

    def recv() -> bytes:
        def exact(n: int) -> bytes:
            b = bytearray()
            while len(b) < n:
                c = s.recv(n - len(b))
                if not c:
                    raise EOFError("daemon closed the connection")
                b += c
            return bytes(b)
        (n,) = struct.unpack(">I", exact(4))
        return exact(n)

    s.sendall(bytes([0xC0, 0xDE, 0x01, 0xAC, 4]))
    send(json.dumps({"channel": "notebook_sync", "notebook_id": notebook_id, "protocol": "v4",
                     "operator": "test-driver"}).encode())
    recv()  # bootstrap
    rid = f"drv-{uuid.uuid4()}"
    msg = {"header": {"msg_id": str(uuid.uuid4()), "msg_type": "comm_msg", "session": str(uuid.uuid4()),
                      "username": "driver", "date": "2026-01-01T00:00:00Z", "version": "5.3"},
           "parent_header": {}, "metadata": {},
           "content": {"comm_id": comm_id, "data": {"method": "update", "state": state, "buffer_paths": []}},
           "buffers": []}
    send(bytes([0x01]) + json.dumps({"id": rid, "action": "send_comm", "message": msg}).encode())
    try:
        while True:
            p = recv()
            if p[0] == 0x02:
                resp = json.loads(p[1:])
                if resp.get("id") == rid:
                    return resp
    finally:
        s.close()


async def main() -> None:
    sock = os.environ["RUNTIMED_SOCKET_PATH"]
    client = runtimed.Client(socket_path=sock, peer_label="inspector-test-driver")
    nb = None

    def answer(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj, default=str) + "\n")
        sys.stdout.flush()

    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            break
        cmd = json.loads(line)
        op = cmd.get("op")
        try:
            if op == "create":
                nb = await client.create_notebook(runtime="python", working_dir=cmd.get("workdir"))
                answer({"ok": True, "notebook_id": nb.notebook_id})
            elif op == "open":
                # a file-backed room: the daemon loads every cell in one go (far faster than
                # creating them one request at a time)
                nb = await client.open_notebook(cmd["path"])
                answer({"ok": True, "notebook_id": nb.notebook_id, "cells": len(nb.cells.ids)})
            elif op == "run":
                cell = nb.cells.get_by_id(cmd["cell_id"]) if "cell_id" in cmd else await nb.cells.create(cmd["source"])
                res = await cell.run(timeout_secs=cmd.get("timeout", 120))
                answer({"ok": True, "success": res.success, "cell_id": cell.id,
                        "outputs": [str(o) for o in res.outputs], "stderr": res.stderr})
            elif op == "cells":
                for i in range(int(cmd["n"])):
                    await nb.cells.create(f"cell {i}", cell_type="markdown")
                answer({"ok": True})
            elif op == "send_comm":
                resp = await asyncio.to_thread(_raw_send_comm, sock, nb.notebook_id, cmd["comm_id"], cmd["state"])
                answer({"ok": True, "response": resp})
            elif op == "save":
                answer({"ok": True, "path": await nb.save_as(cmd["path"])})
            elif op == "restart":
                await nb.restart()
                answer({"ok": True})
            elif op == "stop_runtime":
                await nb.stop_runtime()
                answer({"ok": True})
            elif op == "quit":
                if nb is not None:
                    try:
                        await nb.stop_runtime()
                    finally:
                        await nb.disconnect()
                answer({"ok": True})
                return
            else:
                answer({"ok": False, "error": f"unknown op {op!r}"})
        except Exception as exc:  # report to the test, keep serving
            answer({"ok": False, "error": repr(exc)})


if __name__ == "__main__":
    asyncio.run(main())
