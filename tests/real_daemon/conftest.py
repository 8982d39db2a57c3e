"""Fixtures for tests against the real runtimed 2.9.0 (`RUNTIMED_REAL_SOCKET`, set by `.ci/real_daemon.sh`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools" / "real-runtimed"  # the project's own install/start/stop of runtimed 2.9.0
DRIVER = Path(__file__).with_name("room_driver.py")


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="RUNTIMED_REAL_SOCKET is not set (no real runtimed 2.9.0 running)")
    for item in items:
        if "real_daemon" in str(item.fspath):
            item.add_marker(pytest.mark.real_daemon)
            if not os.environ.get("RUNTIMED_REAL_SOCKET"):
                item.add_marker(skip)


class RoomDriver:
    """A room held open by the wheel's own client in a subprocess (pyrt.sh loads the bindings)."""

    def __init__(self, socket_path: str) -> None:
        env = dict(os.environ, RUNTIMED_SOCKET_PATH=socket_path)
        self.proc = subprocess.Popen([str(TOOLS / "pyrt.sh"), str(DRIVER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.notebook_id: str | None = None

    def call(self, **cmd) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"room driver exited (rc={self.proc.poll()}) on {cmd['op']}")
        out = json.loads(line)
        if not out.get("ok"):
            raise RuntimeError(f"room driver {cmd['op']}: {out.get('error')}")
        return out

    async def acall(self, **cmd) -> dict:
        return await asyncio.to_thread(self.call, **cmd)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call(op="quit")
            except (RuntimeError, OSError, ValueError):
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def real_socket() -> str:
    return os.environ["RUNTIMED_REAL_SOCKET"]


@pytest.fixture(scope="module")
def widget_room(real_socket):
    """A room whose kernel made an IntSlider `s` and an Output widget `out` (with a capture)."""
    drv = RoomDriver(real_socket)
    try:
        drv.notebook_id = drv.call(op="create")["notebook_id"]
        res = drv.call(op="run", source="import ipywidgets as w\ns = w.IntSlider(value=3, min=0, max=10, "
                                        "description='n')\nout = w.Output()\ndisplay(s, out)")
        assert res["success"], res
        res = drv.call(op="run", source="with out:\n    print('captured')\n1 + 1")
        assert res["success"], res
        yield drv
    finally:
        drv.close()


@pytest.fixture(scope="module")
def inactive_room(real_socket) -> str:
    """A room whose kernel was shut down and whose last peer left: `list_rooms` says inactive."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rtd_probe", TOOLS / "probe.py")
    assert spec is not None and spec.loader is not None
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    drv = RoomDriver(real_socket)
    try:
        nb = drv.call(op="create")["notebook_id"]
        assert drv.call(op="run", source="1")["success"]
    finally:
        drv.close()  # shuts the kernel down and disconnects
    for _ in range(120):
        rooms = probe.request(real_socket, "list_rooms")[0].get("rooms", [])
        if any(r.get("notebook_id") == nb and r.get("state") == "inactive" for r in rooms):
            return nb
        time.sleep(0.5)
    raise AssertionError(f"room {nb} did not become inactive within 60 s")
