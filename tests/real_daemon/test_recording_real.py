"""The flight recorder on the real runtimed 2.9.0: `check --record FILE` while a peer sends
`send_comm` to the slider (the kernel applies and echoes it, the CommsDoc keeps the old value),
then `check FILE` offline gives the same kinds, comms and keys, and `export` decodes in tshark."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from inspector.divergence import DivergenceOptions
from inspector.session import PeerSession, SessionConfig

from .test_v4_check_and_tap import run_check, slider_of


def verdict(result: dict) -> set:
    return {(d["comm_id"], d["kind"], frozenset(k["key"] for k in d["keys"])) for d in result["diverged"]}


async def test_check_file_gives_the_live_send_comm_verdict(real_socket, widget_room, tmp_path):
    nb = widget_room.notebook_id
    s = PeerSession(SessionConfig(real_socket, nb, divergence=DivergenceOptions()))
    async with s.running():
        await s.wait_settled(0.3, 30)
        slider = slider_of(s.snapshot())
    old = slider.state["value"]
    new = 4 if old != 4 else 6
    path = str(tmp_path / "send_comm.rtirec")

    async def send():
        await widget_room.acall(op="send_comm", comm_id=slider.comm_id, state={"value": new})

    try:
        rc, out, err = await run_check(real_socket, nb, 2.0, "--json", "--kernel-connection", "auto",
                                       "--record", path, during=send)
        assert rc == 1, (out, err)
        live = json.loads(out)
        assert (slider.comm_id, "state_mismatch", frozenset({"value"})) in verdict(live)
        off = subprocess.run([sys.executable, "-m", "inspector", "check", path, "--json"], capture_output=True,
                             text=True, timeout=120, env=dict(os.environ, PYTHONPATH=os.getcwd()))
        assert off.returncode == 1, off.stderr
        offline = json.loads(off.stdout)
        assert verdict(offline) == verdict(live)
        (d,) = [d for d in offline["diverged"] if d["comm_id"] == slider.comm_id]
        (k,) = d["keys"]
        assert (k["key"], k["doc"], k["feed"]) == ("value", old, new)
        assert set(offline["sources"]) == set(live["sources"])
        if shutil.which("tshark") is None:
            pytest.skip("tshark (Debian package) not installed")
        pcap = str(tmp_path / "s.pcapng")
        exp = subprocess.run([sys.executable, "-m", "inspector", "export", path, "--format", "pcapng", "-o", pcap],
                             capture_output=True, text=True, timeout=120)
        assert exp.returncode == 0, exp.stderr
        lua = os.path.join(os.path.dirname(__file__), "..", "..", "resources", "wireshark", "runtimed.lua")
        ts = subprocess.run(["tshark", "-X", f"lua_script:{lua}", "-r", pcap, "-T", "fields", "-e",
                             "frame.protocols"], capture_output=True, text=True, timeout=120)
        assert ts.returncode == 0, ts.stderr
        rows = ts.stdout.splitlines()
        assert rows and all("runtimed" in r for r in rows)
    finally:
        await widget_room.acall(op="run", source=f"s.value = {old}")  # kernel and document agree again
