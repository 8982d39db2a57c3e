"""Opening a Unix-socket connection to a daemon with the preamble and handshake, mapping OS
errors to the inspector's specific errors."""

from __future__ import annotations

import asyncio
import errno
import socket

from .discovery import check_peer, check_socket
from .errors import Closed, NoSocket, PermissionDenied, Timeout
from .protocol import messages as m
from .protocol.framing import CONTROL_FRAME_MAX, encode_frame, preamble

STREAM_LIMIT = 1 << 20


async def open_channel(path: str, version: int, handshake: m.Handshake, *, allow_other_user: bool = False,
                       timeout: float = 5.0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, send the preamble and handshake; return the stream pair."""
    check_socket(path, allow_other_user)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await _connect(sock, path, timeout)
        # Who answers is judged on the connection itself: the path may have been swapped since the stat.
        check_peer(sock, path, allow_other_user)
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=STREAM_LIMIT)
    except BaseException:
        sock.close()
        raise
    try:
        writer.write(preamble(version) + encode_frame(m.encode(handshake), CONTROL_FRAME_MAX))
        await writer.drain()
    except (ConnectionError, BrokenPipeError) as exc:
        writer.close()
        raise Closed(f"the daemon closed the connection during the handshake: {exc}") from None
    return reader, writer


async def _connect(sock: socket.socket, path: str, timeout: float) -> None:
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, path), timeout)
    except TimeoutError:
        raise Timeout(f"connecting to {path} timed out after {timeout:.0f} s") from None
    except ConnectionRefusedError:
        raise NoSocket(f"nothing is listening on {path} (a stale socket left by a daemon that exited?)") from None
    except PermissionError:
        raise PermissionDenied(f"permission denied connecting to {path}") from None
    except FileNotFoundError:
        raise NoSocket(f"no socket at {path}") from None
    except OSError as exc:
        if exc.errno == errno.EACCES:
            raise PermissionDenied(f"permission denied connecting to {path}") from None
        raise NoSocket(f"cannot connect to {path}: {exc.strerror or exc}") from None


async def close_writer(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
        async with asyncio.timeout(1.0):  # not wait_for(coroutine): see blobs.http_get_blob
            await writer.wait_closed()
    except (OSError, TimeoutError, ConnectionError):
        pass
