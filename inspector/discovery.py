"""Finding runtimed sockets (wire-protocol §1, runtimed-v4 §1) and checking who owns them."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import NoSocket, PermissionDenied

NAMESPACES = ("runt", "runt-nightly")


def cache_dir() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg)
    home = os.environ.get("HOME")
    return Path(home) / ".cache" if home else Path("/tmp")


def _dev_hash() -> str | None:
    path = os.environ.get("RUNTIMED_WORKSPACE_PATH")
    if path is None:
        import subprocess  # only for a dev worktree: the common paths pay nothing for it

        try:
            out = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                                 timeout=2, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        path = out.stdout.strip() if out.returncode == 0 else ""
        if not path or not os.path.exists(path):
            return None
    return hashlib.sha256(path.encode()).digest()[:6].hex()


@dataclass(frozen=True)
class Candidate:
    path: str
    origin: str  # env | stable | nightly | worktree | argument
    exists: bool
    info: dict | None = None  # daemon.json beside the socket, when present

    @property
    def label(self) -> str:
        version = (self.info or {}).get("version")
        return f"{self.path} ({self.origin}{', ' + version if version else ''})"


def _daemon_json(sock: Path) -> dict | None:
    try:
        data = json.loads((sock.parent / "daemon.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def candidates() -> list[Candidate]:
    """Every place a daemon of this user may listen, most specific first."""
    env = os.environ.get("RUNTIMED_SOCKET_PATH", "").strip()
    if env:
        p = Path(env)
        return [Candidate(str(p), "env", p.exists(), _daemon_json(p))]
    base = cache_dir()
    out: list[Candidate] = []
    seen: set[str] = set()

    def add(p: Path, origin: str) -> None:
        if str(p) not in seen:
            seen.add(str(p))
            out.append(Candidate(str(p), origin, p.exists(), _daemon_json(p)))

    if os.environ.get("RUNTIMED_DEV") == "1" or "RUNTIMED_WORKSPACE_PATH" in os.environ:
        h = _dev_hash()
        if h:
            for ns in NAMESPACES:
                add(base / ns / "worktrees" / h / "runtimed.sock", "worktree")
    add(base / "runt" / "runtimed.sock", "stable")
    add(base / "runt-nightly" / "runtimed.sock", "nightly")
    for ns in NAMESPACES:
        for p in sorted((base / ns / "worktrees").glob("*/runtimed.sock")):
            add(p, "worktree")
    return out


def default_socket() -> str:
    """The first existing candidate, else the stable default path."""
    cands = candidates()
    for c in cands:
        if c.exists:
            return c.path
    return cands[0].path


def check_socket(path: str, allow_other_user: bool = False) -> None:
    """Refuse a path that is missing or not a socket, or whose directory another user controls.

    This is only the early, friendly check: who serves the socket is decided on the connected
    socket itself (`check_peer`), since the path can be swapped between this stat and connect."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NoSocket(f"no socket at {path}: the daemon is not running there "
                       "(use --socket or RUNTIMED_SOCKET_PATH)") from None
    except PermissionError:
        raise PermissionDenied(f"permission denied reading {path}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise NoSocket(f"{path} exists but is not a Unix socket")
    if allow_other_user or not hasattr(os, "getuid"):
        return
    if st.st_uid != os.getuid():
        raise PermissionDenied(f"{path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}); "
                               "pass --allow-other-user to connect anyway")
    check_directory(os.path.dirname(os.path.abspath(path)))


def check_directory(directory: str) -> None:
    """The socket's directory must not let another user replace the socket: owned by you or
    root, and not writable by others unless sticky (as /tmp, where only the owner may rename)."""
    try:
        st = os.stat(directory)
    except OSError as exc:
        raise PermissionDenied(f"cannot check the socket's directory {directory}: {exc.strerror or exc}") from None
    if st.st_uid not in (os.getuid(), 0):
        raise PermissionDenied(f"the socket's directory {directory} belongs to uid {st.st_uid}, not to you "
                               f"(uid {os.getuid()}): its owner can replace the socket; "
                               "pass --allow-other-user to connect anyway")
    writable_by_others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable_by_others and not st.st_mode & stat.S_ISVTX:
        raise PermissionDenied(f"the socket's directory {directory} is writable by other users "
                               f"(mode {stat.S_IMODE(st.st_mode):04o}, not sticky): anyone can replace the socket; "
                               "pass --allow-other-user to connect anyway")


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process serving a connected Unix socket (SO_PEERCRED); None where the
    platform has no such option (the path's owner was checked before connecting there)."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def check_peer(sock: socket.socket, path: str, allow_other_user: bool = False) -> None:
    """Refuse a connected socket served by another user's process."""
    if allow_other_user or not hasattr(os, "getuid"):
        return
    uid = peer_uid(sock)
    if uid is not None and uid != os.getuid():
        raise PermissionDenied(f"the process serving {path} runs as uid {uid}, not as you (uid {os.getuid()}); "
                               "pass --allow-other-user to connect anyway")
