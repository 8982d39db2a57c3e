"""The kernel IOPub tap against a publisher we bind ourselves (tcp and ipc), with a connection
file we write: genuine messages rebuild the comm table, forged ones are rejected and counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import zmq
import zmq.asyncio
from jupyter_client.session import Session

from inspector.kernel_tap import KernelTap, TapError, read_connection_file

KEY = str(uuid.uuid4())


@pytest.fixture(params=["tcp", "ipc"])
def endpoint(request: Any) -> Any:
    d = tempfile.mkdtemp(prefix="rti-tap-", dir="/tmp")
    ctx = zmq.asyncio.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    if request.param == "tcp":
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        info = {"transport": "tcp", "ip": "127.0.0.1", "iopub_port": port}
    else:
        ip = os.path.join(d, "kernel-ipc")
        pub.bind(f"ipc://{ip}-2")
        info = {"transport": "ipc", "ip": ip, "iopub_port": 2}
    info.update({"shell_port": 1, "stdin_port": 3, "control_port": 4, "hb_port": 5, "key": KEY,
                 "signature_scheme": "hmac-sha256", "kernel_name": "python3"})
    path = os.path.join(d, "kernel.json")
    with open(path, "w") as fh:
        json.dump(info, fh)
    yield path, pub
    pub.close(0)
    ctx.term()


@contextlib.asynccontextmanager
async def running(tap: KernelTap) -> AsyncIterator[KernelTap]:
    task = asyncio.create_task(tap.run())
    try:
        yield tap
    finally:
        tap.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(pred: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def publish_until_received(pub: Any, session: Session, tap: KernelTap) -> None:
    """SUB sockets miss what was published before they joined: publish status until one lands."""
    deadline = asyncio.get_running_loop().time() + 10
    while tap.received == 0:
        assert asyncio.get_running_loop().time() < deadline
        session.send(pub, "status", {"execution_state": "idle"})
        await asyncio.sleep(0.02)


def open_msg(cid: str, value: int) -> dict[str, Any]:
    return {"comm_id": cid, "target_name": "jupyter.widget",
            "data": {"state": {"_model_name": "IntSliderModel", "value": value}, "buffer_paths": []}}


async def test_genuine_messages_rebuild_comms_and_forged_ones_are_rejected(endpoint: Any) -> None:
    path, pub = endpoint
    good = Session(key=KEY.encode(), signature_scheme="hmac-sha256")
    forger = Session(key=b"not-the-key", signature_scheme="hmac-sha256")
    unsigned = Session(key=b"", signature_scheme="hmac-sha256")
    seen: list[tuple[str, Any]] = []
    async with running(KernelTap(path, listener=lambda w, p: seen.append((w, p)))) as tap:
        await publish_until_received(pub, good, tap)
        good.send(pub, "comm_open", open_msg("real", 1))
        good.send(pub, "comm_msg", {"comm_id": "real", "data": {"method": "update", "state": {"value": 5}}})
        forger.send(pub, "comm_open", open_msg("forged", 666))
        forger.send(pub, "comm_msg", {"comm_id": "real", "data": {"method": "update", "state": {"value": 666}}})
        unsigned.send(pub, "comm_open", open_msg("unsigned", 7))
        await pub.send_multipart([b"garbage"])
        good.send(pub, "comm_msg", {"comm_id": "real", "data": {"method": "update", "state": {"max": 10}}})
        await until(lambda: tap.table.comms.get("real") is not None and "max" in tap.table.comms["real"].state)
        await until(lambda: tap.rejected >= 4)
        assert list(tap.table.comms) == ["real"]
        assert tap.table.comms["real"].state["value"] == 5
        assert tap.rejected == 4
        assert tap.reject_reasons == {"invalid signature": 2, "unsigned message": 1, "not a Jupyter message": 1}
        assert ("rejected", "invalid signature") in seen and ("comm", "real") in seen


async def test_shutdown_reply_marks_a_requested_shutdown(endpoint: Any) -> None:
    path, pub = endpoint
    good = Session(key=KEY.encode(), signature_scheme="hmac-sha256")
    async with running(KernelTap(path)) as tap:
        await publish_until_received(pub, good, tap)
        good.send(pub, "shutdown_reply", {"status": "ok", "restart": False})
        await until(lambda: tap.state == "shutdown")
        assert tap.shutdown_requested


async def test_ipc_endpoint_disappearing_means_the_kernel_died(tmp_path: Any) -> None:
    ctx = zmq.asyncio.Context()
    pub = ctx.socket(zmq.PUB)
    ip = str(tmp_path / "k")
    pub.bind(f"ipc://{ip}-2")
    path = tmp_path / "kernel.json"
    path.write_text(json.dumps({"transport": "ipc", "ip": ip, "iopub_port": 2, "key": KEY,
                                "signature_scheme": "hmac-sha256"}))
    deaths: list[Any] = []
    try:
        async with running(KernelTap(str(path), poll_s=0.05,
                                     listener=lambda w, p: deaths.append(p) if w == "dead" else None)) as tap:
            await until(lambda: tap.state == "live")
            pub.close(0)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{ip}-2")
            await until(lambda: tap.state == "dead")
            assert deaths and "disappeared" in deaths[0]
    finally:
        ctx.term()


def test_connection_file_without_key_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"transport": "tcp", "ip": "127.0.0.1", "iopub_port": 5555, "key": ""}))
    with pytest.raises(TapError, match="no signing key"):
        read_connection_file(path)
    with pytest.raises(TapError, match="cannot read"):
        read_connection_file(tmp_path / "missing.json")
    path.write_text(json.dumps({"transport": "udp", "ip": "x", "iopub_port": 1, "key": "k"}))
    with pytest.raises(TapError, match="unsupported transport"):
        read_connection_file(path)


def test_stop_after_the_loop_stopped_closes_the_socket_at_once(endpoint: Any) -> None:
    """A tap left running when its loop stops (a window's loop between two runs, a CLI loop
    that ended) must not keep its socket: an open socket makes zmq's context term hang."""
    path, _pub = endpoint
    loop = asyncio.new_event_loop()
    try:
        tap = KernelTap(path)
        task = loop.create_task(tap.run())
        loop.run_until_complete(asyncio.sleep(0.05))
        assert tap.state == "live" and tap._sock is not None
        sock = tap._sock
        tap.stop()  # no loop runs now
        assert sock.closed
        loop.run_until_complete(asyncio.wait({task}, timeout=5))
        assert task.done() and not task.cancelled() and tap.state == "stopped"
    finally:
        loop.close()


def test_stop_from_another_thread_ends_the_tap_on_its_own_loop(endpoint: Any) -> None:
    path, _pub = endpoint
    import threading

    tap = KernelTap(path)
    started = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(tap.run())
        while tap.state != "live":
            await asyncio.sleep(0.01)
        started.set()
        await asyncio.wait_for(task, 10)

    th = threading.Thread(target=lambda: asyncio.run(main()))
    th.start()
    assert started.wait(10)
    sock = tap._sock
    tap.stop()
    th.join(10)
    assert not th.is_alive() and sock is not None and sock.closed and tap.state == "stopped"


async def test_close_waits_until_the_socket_is_closed(endpoint: Any) -> None:
    path, _pub = endpoint
    tap = KernelTap(path)
    task = asyncio.create_task(tap.run())
    await until(lambda: tap.state == "live")
    sock = tap._sock
    await tap.close()
    assert task.done() and sock is not None and sock.closed and tap._sock is None


def test_a_tap_abandoned_on_a_closed_loop_does_not_hang_the_garbage_collector(endpoint: Any) -> None:
    """A tap task left pending when its loop closes is collected later. Its socket must be
    closed by then: zmq's context term() at collection waited forever on an open one."""
    import gc
    import threading

    path, _pub = endpoint
    loop = asyncio.new_event_loop()
    tap = KernelTap(path)
    task = loop.create_task(tap.run())
    loop.run_until_complete(asyncio.sleep(0.05))
    assert tap.state == "live"
    loop.close()  # the task is still pending
    del tap, task, loop
    collected = threading.Event()
    threading.Thread(target=lambda: (gc.collect(), collected.set()), daemon=True).start()
    assert collected.wait(10), "garbage collection hung"
