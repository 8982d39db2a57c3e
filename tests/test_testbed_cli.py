"""The testbed as a process (`python -m inspector.testbed`): the sample notebook runs, faults
are printed, SIGTERM stops kernels and removes the socket; rooms are evicted after keep-alive."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
from testbed_peer import RawPeer

from inspector.protocol.framing import encode_frame, preamble, read_frame
from inspector.testbed import Testbed

pytestmark = pytest.mark.kernel

SAMPLE = Path(__file__).resolve().parent.parent / "inspector" / "testbed" / "samples" / "widgets-demo.ipynb"


async def _pool(sock: str, req: dict) -> dict:
    reader, writer = await asyncio.open_unix_connection(sock)
    writer.write(preamble(2) + encode_frame(b'{"channel":"pool"}') + encode_frame(json.dumps(req).encode()))
    await writer.drain()
    resp = json.loads(await asyncio.wait_for(read_frame(reader), 30))
    writer.close()
    return resp


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_process_runs_the_sample_and_stops_cleanly_on_sigterm() -> None:
    d = tempfile.mkdtemp(prefix="tbc", dir="/tmp")
    sock = os.path.join(d, "rt.sock")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inspector.testbed", "--socket", sock, "--notebook", str(SAMPLE),
        "--fault", "doc-drop-update:IntSliderModel", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        lines = []
        while not any("listening" in line for line in lines):
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "the testbed exited before listening"
            lines.append(line)
        lines.append((await asyncio.wait_for(proc.stdout.readline(), 10)).decode())
        lines.append((await asyncio.wait_for(proc.stdout.readline(), 10)).decode())
        lines.append((await asyncio.wait_for(proc.stdout.readline(), 10)).decode())
        head = "".join(lines)
        assert "fault active: doc-drop-update:IntSliderModel" in head
        assert f"room: {SAMPLE.resolve()}" in head
        info = json.loads(Path(d, "daemon.json").read_text())
        assert info["endpoint"] == sock and info["pid"] == proc.pid

        peer = RawPeer(sock)
        await peer.connect({"channel": "notebook_sync", "notebook_id": str(SAMPLE.resolve())})
        rooms = await _pool(sock, {"type": "list_rooms"})  # waits for the auto-launch
        assert rooms["rooms"][0]["has_kernel"] is True
        resp = await peer.request({"action": "run_all_cells"})
        assert resp == {"result": "all_cells_queued", "count": 5}
        await peer.pump_until(lambda: sum(b["event"] == "execution_done" for b in peer.broadcasts) == 5, 60)
        await peer.pump_quiet(0.3)
        comms = {cid: c for cid, c in peer.root()["comms"].items()}
        models = sorted(c["model_name"] for c in comms.values())
        assert "LinkModel" in models and "VBoxModel" in models and models.count("IntSliderModel") == 2
        # the fault: slider `a` was changed from the kernel, the doc kept the old value
        feed_updates = [b for b in peer.broadcasts if b["event"] == "comm"
                        and b["content"].get("data", {}).get("state", {}).get("value") == 60]
        assert len(feed_updates) == 1
        slider_a = comms[feed_updates[0]["content"]["comm_id"]]
        assert json.loads(slider_a["state"])["value"] == 20
        (out,) = [c for c in comms.values() if c["model_name"] == "OutputModel"]
        assert len(out["outputs"]) == 1
        # the image output is a manifest served by the blob server
        cells = sorted(peer.cells().values(), key=lambda c: c["position"])
        (png_ref,) = cells[4]["outputs"]
        with urllib.request.urlopen(f"http://127.0.0.1:{info['blob_port']}/blob/{png_ref}", timeout=5) as r:
            manifest = json.loads(r.read())
        assert manifest["output_type"] == "display_data" and "image/png" in manifest["data"]
        await peer.close()

        kernels = [p for p in _children(proc.pid) if _alive(p)]
        assert kernels, "no kernel process found"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert not os.path.exists(sock) and not Path(d, "daemon.json").exists()
        for _ in range(100):
            if not any(_alive(p) for p in kernels):
                break
            await asyncio.sleep(0.05)
        assert not any(_alive(p) for p in kernels), "kernel outlived the testbed"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        shutil.rmtree(d, ignore_errors=True)


async def test_room_is_evicted_after_keep_alive() -> None:
    d = tempfile.mkdtemp(prefix="tbe", dir="/tmp")
    try:
        async with Testbed(os.path.join(d, "rt.sock"), keep_alive=0.5) as tb:
            nid = tb.create_room(["x = 1"])
            peer = RawPeer(tb.socket_path)
            await peer.connect({"channel": "notebook_sync", "notebook_id": nid})
            await tb.wait_kernel(nid)
            kernel = tb.room(nid).kernel
            assert kernel is not None and _alive(kernel.pid)
            pid = kernel.pid
            # a rejoin within keep-alive keeps the room and its kernel
            await peer.close()
            again = RawPeer(tb.socket_path)
            await again.connect({"channel": "notebook_sync", "notebook_id": nid})
            await asyncio.sleep(0)  # let the join cancel the pending eviction
            await again.pump_quiet(0.8)
            assert nid in tb.rooms and tb.room(nid).kernel is kernel
            await again.close()
            await tb.wait_until(lambda: nid not in tb.rooms, 10)
            await tb.wait_until(lambda: not _alive(pid), 10)
    finally:
        shutil.rmtree(d, ignore_errors=True)
