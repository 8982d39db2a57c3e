"""Fetching a blob over HTTP from the daemon's blob port, on real sockets: a server that is
not there, one that never answers, one that answers, and a loop that stops mid-fetch (the
window closing) leave a clear error and no coroutine behind."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import time
import warnings

import pytest

from inspector.blobs import BlobError, http_get_blob

DIGEST = "ab" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_closed_port_is_unreachable() -> None:
    with pytest.raises(BlobError, match="unreachable"):
        await http_get_blob(free_port(), DIGEST, timeout=2.0)


async def test_a_server_that_never_answers_times_out_on_time() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        t0 = time.monotonic()
        with pytest.raises(BlobError, match="TimeoutError"):
            await http_get_blob(port, DIGEST, timeout=0.3)
        assert time.monotonic() - t0 < 2.0
    finally:
        server.close()


async def test_an_answer_is_read_whole() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        blob = await http_get_blob(server.sockets[0].getsockname()[1], DIGEST)
        assert (blob.data, blob.content_type) == (b"hello", "text/plain")
    finally:
        server.close()


def test_a_loop_closed_mid_fetch_leaves_nothing_unawaited_or_unraisable() -> None:
    """The app quits while a fetch waits on the server: no coroutine left never awaited, no
    exception printed from a finalizer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    listener.setblocking(False)
    loop = asyncio.new_event_loop()
    task = loop.create_task(http_get_blob(port, DIGEST, timeout=30))

    async def request_read() -> socket.socket:
        conn, _ = await loop.sock_accept(listener)
        got = b""
        while b"\r\n\r\n" not in got:
            got += await loop.sock_recv(conn, 4096)
        return conn

    # the server has the whole request: the fetch now waits for the answer
    conn = loop.run_until_complete(asyncio.wait_for(request_read(), 10))
    assert not task.done()
    unraisable: list[str] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: unraisable.append(f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loop.close()  # stopped with the fetch pending
            del task
            gc.collect()
    finally:
        sys.unraisablehook = old_hook
        conn.close()
        listener.close()
    assert not [w for w in caught if "never awaited" in str(w.message)], [str(w.message) for w in caught]
    assert unraisable == []
