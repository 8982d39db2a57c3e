"""Two real daemons on one machine, started from two state dirs by the project's own tooling:
each keeps its kernels' IPC sockets in a directory of its own, so stopping or starting one
never breaks the other's kernels (runtimed sweeps its IPC dir on start)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .conftest import REPO, TOOLS, RoomDriver

pytestmark = pytest.mark.timeout(240)


def daemon_env(state: Path) -> dict[str, str]:
    out = subprocess.run(["bash", "-c", '. "$1/daemon.env" && env -0', "_", str(state)],
                         check=True, capture_output=True, text=True).stdout
    return dict(kv.split("=", 1) for kv in out.split("\0") if "=" in kv)


def start(state: Path) -> dict[str, str]:
    prefix = os.environ["RTD_PREFIX"]
    subprocess.run([str(TOOLS / "start.sh"), str(state), "--uv-cache", f"{prefix}/uv-cache"],
                   check=True, capture_output=True, text=True, timeout=200)
    return daemon_env(state)


def stop(state: Path) -> None:
    subprocess.run([str(TOOLS / "stop.sh"), str(state)], check=True, capture_output=True, timeout=60)


def kernel_sockets(ipc_dir: str) -> set[str]:
    try:
        return {n for n in os.listdir(ipc_dir) if n.startswith("kernel-") and "-ipc-" in n}
    except FileNotFoundError:
        return set()


def pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_stopping_or_starting_one_daemon_leaves_the_others_kernel_running() -> None:
    (REPO / "build").mkdir(exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="two.", dir=REPO / "build"))
    a_dir, b_dir = base / "a", base / "b"
    drivers: list[RoomDriver] = []
    try:
        a, b = start(a_dir), start(b_dir)
        assert a["RTD_IPC_DIR"] != b["RTD_IPC_DIR"]
        room_a, room_b = RoomDriver(a["RUNTIMED_SOCKET_PATH"]), RoomDriver(b["RUNTIMED_SOCKET_PATH"])
        drivers += [room_a, room_b]
        for room in (room_a, room_b):
            room.call(op="create")
            assert room.call(op="run", source="41 + 1")["success"]
        socks_a, socks_b = kernel_sockets(a["RTD_IPC_DIR"]), kernel_sockets(b["RTD_IPC_DIR"])
        assert len(socks_a) == 5 and len(socks_b) == 5 and not socks_a & socks_b

        stop(b_dir)
        assert not pid_alive(int(b["RTD_PID"]))
        assert kernel_sockets(a["RTD_IPC_DIR"]) == socks_a
        res = room_a.call(op="run", source="import os; 'after b stopped', os.getpid()")
        assert res["success"], res

        # a daemon's start deletes every kernel socket file in its IPC dir: b's start must not reach a's
        start(b_dir)
        assert kernel_sockets(a["RTD_IPC_DIR"]) == socks_a
        res = room_a.call(op="run", source="'after b started again'")
        assert res["success"], res
    finally:
        for room in drivers:
            room.close()
        stop(b_dir)
        stop(a_dir)
        shutil.rmtree(base, ignore_errors=True)
