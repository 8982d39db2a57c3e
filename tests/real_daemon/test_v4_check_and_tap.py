"""`check` on the real runtimed 2.9.0, and the kernel's IOPub found from the room's runtime state."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from waiting import wait_until

from inspector.divergence import DivergenceOptions
from inspector.session import PeerSession, SessionConfig
from inspector.v4.divergence import find_connection_file, runtime_cache_dir


async def until(pred, timeout: float, what: str):
    return await wait_until(pred, what, timeout, poll=0.05)


def slider_of(snap):
    (c,) = [c for c in snap.comms if c.model_name == "IntSliderModel"]
    return c


async def run_check(socket_path: str, notebook_id: str, seconds: float, *extra: str, during=None):
    """Run `runtimed-inspector check` as a user would; `during()` runs once it has joined the room."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inspector", "check", "--socket", socket_path, "--notebook", notebook_id,
        "--for", str(seconds), *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        head = b""
        if during is not None:
            # check announces on stderr when it has joined (and its kernel tap subscribed)
            head = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert head.startswith(b"check: watching"), head
            await during()
        out, err = await asyncio.wait_for(proc.communicate(), seconds + 40)
        err = head + err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(), err.decode()


async def test_check_passes_on_a_healthy_room(real_socket, widget_room):
    rc, out, err = await run_check(real_socket, widget_room.notebook_id, 1.0, "--json")
    assert rc == 0, (out, err)
    result = json.loads(out)
    assert result["ok"] is True and result["diverged"] == []
    assert {"topology", "state", "echo"} <= set(result["sources"])


async def test_check_fails_on_the_send_comm_divergence_with_the_kernel_tap(real_socket, widget_room):
    nb = widget_room.notebook_id
    s = PeerSession(SessionConfig(real_socket, nb, divergence=DivergenceOptions()))
    async with s.running():
        await s.wait_settled(0.3, 30)
        slider = slider_of(s.snapshot())
    old = slider.state["value"]
    new = 4 if old != 4 else 6

    async def send():
        await widget_room.acall(op="send_comm", comm_id=slider.comm_id, state={"value": new})

    try:
        rc, out, err = await run_check(real_socket, nb, 2.0, "--json", "--kernel-connection", "auto", during=send)
        assert rc == 1, (out, err)
        result = json.loads(out)
        assert "kernel" in result["sources"] and result["kernel_tap"]["received"] > 0, result
        (d,) = [d for d in result["diverged"] if d["comm_id"] == slider.comm_id]
        assert d["kind"] == "state_mismatch" and d["moved"] == "kernel" and d["model_name"] == "IntSliderModel"
        (k,) = d["keys"]
        assert (k["key"], k["doc"], k["kernel"], k["feed"]) == ("value", old, new, new)
    finally:
        await widget_room.acall(op="run", source=f"s.value = {old}")  # kernel and document agree again


async def test_kernel_connection_found_from_the_runtime_state(real_socket, widget_room):
    """runtime agent id -> runtime-agents manifest -> pgid -> kernel process -> `-f` connection file."""
    s = PeerSession(SessionConfig(real_socket, widget_room.notebook_id, divergence=DivergenceOptions(kernel_connection="auto")))
    async with s.running():
        await s.wait_settled(0.3, 30)
        agent = s.profile.room.runtime.kernel["runtime_agent_id"]
        path = find_connection_file(runtime_cache_dir(s), agent)
        assert path is not None and path.endswith(".json")
        conn = json.loads(open(path).read())
        assert conn["transport"] == "ipc" and conn["key"]
        await until(lambda: s.divergence.tap is not None and s.divergence.tap.state == "live", 10, "the tap")
        assert s.divergence.tap.connection.path == path
        # a kernel-side change reaches the tap and agrees with the document once it is written
        await widget_room.acall(op="run", source="s.value = 1")
        await until(lambda: s.divergence.views.kernel.reported, 10, "the kernel's update on IOPub")
        await until(lambda: slider_of(s.snapshot()).state["value"] == 1, 20, "value 1 in the document")
        await until(lambda: not s.snapshot().divergence, 10, "no divergence")
        assert "kernel" in s.snapshot().sources
