"""The headless CLI as a user runs it: a real process, JSON on stdout, one-line errors and
documented exit codes on stderr, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from scripted_daemon import ScriptedDaemon, build_doc
from test_core_session import CELLS, LAYOUT, SLIDER

from inspector import errors


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inspector", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "RUNTIMED_INSPECTOR_LOG_DIR": tempfile.gettempdir()})


@contextlib.contextmanager
def daemon_thread(**kw: Any) -> Iterator[ScriptedDaemon]:
    """A scripted daemon on its own loop in a thread, so the CLI can run as a real process."""
    d = tempfile.mkdtemp(prefix="rti-", dir="/tmp")
    path = os.path.join(d, "rt.sock")
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            stop = asyncio.Event()
            holder["stop"], holder["loop"] = stop, asyncio.get_running_loop()
            doc = kw.pop("doc", None) or build_doc(CELLS, schema=3, comms={"sl": SLIDER, "lay": LAYOUT})
            async with ScriptedDaemon(path, doc, **kw) as daemon:
                holder["daemon"] = daemon
                ready.set()
                await stop.wait()

        asyncio.run(main())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        yield holder["daemon"]
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        t.join(10)


def test_rooms_and_snapshot_json() -> None:
    comm_sync = [{"comm_id": "lay", "target_name": "jupyter.widget", "state": LAYOUT["state"]},
                 {"comm_id": "sl", "target_name": "jupyter.widget", "state": SLIDER["state"],
                  "model_module": "@jupyter-widgets/controls", "model_name": "IntSliderModel"}]
    with daemon_thread(comm_sync=comm_sync) as d:
        rooms = run_cli("rooms", "--socket", d.path, "--json")
        assert rooms.returncode == 0, rooms.stderr
        data = json.loads(rooms.stdout)
        assert data["daemon"]["protocol_version"] == 2 and data["rooms"][0]["notebook_id"] == "nb-1"
        table = run_cli("rooms", "--socket", d.path)
        assert "nb-1" in table.stdout and "protocol 2" in table.stdout

        res = run_cli("snapshot", "--socket", d.path, "--notebook", "nb-1", "--settle-ms", "200")
        assert res.returncode == 0, res.stderr
        snap = json.loads(res.stdout)  # exactly one JSON object
        assert snap["daemon"]["protocol"] == "v2" and snap["notebook_id"] == "nb-1" and snap["schema_version"] == 3
        assert [c["id"] for c in snap["cells"]] == ["c-a", "c-b", "c-tie1", "c-tie2"]
        cell = snap["cells"][1]
        assert set(cell) >= {"id", "cell_type", "position", "source", "execution_count", "outputs", "metadata"}
        assert cell["execution_count"] == 7 and set(cell["outputs"][0]) >= {"ref", "manifest", "error"}
        assert [c["comm_id"] for c in snap["comms"]] == ["lay", "sl"]
        assert set(snap["comms"][1]) >= {"comm_id", "seq", "target_name", "model_module", "model_name", "state",
                                         "state_error", "outputs"}
        assert snap["feed"]["received_comm_sync"] is True
        assert [c["comm_id"] for c in snap["feed"]["comms"]] == ["lay", "sl"]
        assert set(snap["feed"]["comms"][0]) >= {"comm_id", "target_name", "model_module", "model_name", "state"}
        assert "status" in snap["kernel"] and all(len(h) == 64 for h in snap["heads"])


def test_watch_prints_one_json_object_per_event() -> None:
    with daemon_thread() as d:
        res = run_cli("watch", "--socket", d.path, "--notebook", "nb-1", "--for", "1.0")
        assert res.returncode == 0, res.stderr
        lines = [json.loads(line) for line in res.stdout.splitlines()]
        kinds = [e["kind"] for e in lines]
        assert "connection" in kinds and "doc_changed" in kinds and "frame" not in kinds
        changed = next(e for e in lines if e["kind"] == "doc_changed")
        assert any(p.startswith("cells/") for p in changed["data"]["paths"]) or changed["data"]["full_read"]
        states = [e["data"]["state"] for e in lines if e["kind"] == "connection"]
        assert states[:3] == ["connecting", "syncing", "live"]


@pytest.mark.parametrize("case", ["missing", "not_socket", "refused", "other_user"])
def test_socket_errors_are_one_line_with_exit_codes(case: str, tmp_path: Any) -> None:
    path = str(tmp_path / "rt.sock")
    expected = errors.EXIT_NO_SOCKET
    if case == "not_socket":
        open(path, "w").close()
    elif case == "refused":
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.close()  # bound, never listening: ECONNREFUSED (a stale socket)
    elif case == "other_user":
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.listen()
        os.chown(path, 4242, 4242)
        expected = errors.EXIT_PERMISSION
    res = run_cli("snapshot", "--socket", path, "--notebook", "x")
    assert res.returncode == expected, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("runtimed-inspector: ")


def test_daemon_errors_exit_codes() -> None:
    with daemon_thread() as d:
        res = run_cli("snapshot", "--socket", d.path, "--notebook", "nope")
        assert res.returncode == errors.EXIT_UNKNOWN_NOTEBOOK and "no room 'nope'" in res.stderr
    with daemon_thread(refuse_v2_notebook=True,
                       pool_pong={"type": "pong", "protocol_version": 7, "daemon_version": "9.9.9+x"}) as d:
        res = run_cli("snapshot", "--socket", d.path, "--notebook", "nb-1")
        assert res.returncode == errors.EXIT_PROTOCOL_VERSION
        assert "protocol 7" in res.stderr and "Traceback" not in res.stderr

    async def oversized(daemon: ScriptedDaemon, peer: Any) -> None:
        await daemon.send_oversized_length()

    with daemon_thread(after_join=oversized) as d:
        res = run_cli("snapshot", "--socket", d.path, "--notebook", "nb-1")
        assert res.returncode == errors.EXIT_BAD_FRAME and "oversized" in res.stderr


def test_help_has_examples_and_version() -> None:
    for cmd in ("rooms", "snapshot", "watch", "check", "testbed", "demo", "gui"):
        res = run_cli(cmd, "--help")
        assert res.returncode == 0 and "examples:" in res.stdout
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("runtimed-inspector ")
    res = run_cli("snapshot")
    assert res.returncode == errors.EXIT_USAGE


def test_unknown_command_and_window_without_display() -> None:
    res = run_cli("bogus")
    assert res.returncode == errors.EXIT_USAGE and "invalid choice: 'bogus'" in res.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    res = subprocess.run([sys.executable, "-m", "inspector", "gui"], capture_output=True, text=True, timeout=30,
                         env=env)
    assert res.returncode == errors.EXIT_USAGE and "no display" in res.stderr and "Traceback" not in res.stderr


# --------------------------------------------------------------------------- socket ownership

FOREIGN_SERVER = r"""
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])          # bound as root: the socket file is root's, as a stat would want
os.setuid(int(sys.argv[2]))  # then served by another user: only the connection itself tells
s.listen(8)
print("ready", flush=True)
held = []
while True:
    c, _ = s.accept()
    held.append(c)
"""


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to serve as another uid")
def test_a_socket_served_by_another_uid_is_refused_on_the_connection(tmp_path: Any) -> None:
    path = str(tmp_path / "rt.sock")
    server = subprocess.Popen([sys.executable, "-c", FOREIGN_SERVER, path, "65534"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        assert os.stat(path).st_uid == os.getuid()  # the path check alone would accept it
        res = run_cli("rooms", "--socket", path)
        assert res.returncode == errors.EXIT_PERMISSION, res.stderr
        assert "runs as uid 65534" in res.stderr and res.stderr.count("\n") == 1

        from inspector.connection import open_channel
        from inspector.protocol import messages as m

        async def attach(allow: bool) -> None:
            _, writer = await open_channel(path, 2, m.Pool(), allow_other_user=allow, timeout=5)
            writer.close()

        with pytest.raises(errors.PermissionDenied, match="runs as uid 65534"):
            asyncio.run(attach(False))
        asyncio.run(attach(True))  # --allow-other-user: the user asked for it
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize("mode,refused", [(0o777, True), (0o1777, False), (0o700, False)])
def test_a_socket_in_a_directory_others_can_write_is_refused(tmp_path: Any, mode: int, refused: bool) -> None:
    import socket

    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, mode)
    path = str(d / "rt.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen()
    try:
        res = run_cli("rooms", "--socket", path, "--json", timeout=20)
        if refused:
            assert res.returncode == errors.EXIT_PERMISSION and "writable by other users" in res.stderr
        else:  # accepted, then nothing answers the ping: not the directory's fault
            assert res.returncode != errors.EXIT_PERMISSION, res.stderr
    finally:
        s.close()


# --------------------------------------------------------------------------- what the CLI pays for


def test_version_and_verbosity_after_the_command_and_negative_durations() -> None:
    res = run_cli("rooms", "--version")
    assert res.returncode == 0 and res.stdout.startswith("runtimed-inspector ")
    for cmd in ("snapshot", "watch"):  # the lazily built parser still shows the engine's options
        assert "--kernel-connection" in run_cli(cmd, "--help").stdout
    for args in (("rooms", "-v"), ("rooms", "-vv"), ("snapshot", "--notebook", "x", "-v")):
        res = run_cli(*args, "--socket", "/nonexistent/rt.sock")
        assert res.returncode == errors.EXIT_NO_SOCKET, (args, res.stderr)
        assert "no socket at /nonexistent/rt.sock" in res.stderr
    for args in (("snapshot", "--notebook", "x", "--timeout", "-1"), ("snapshot", "--notebook", "x", "--indent", "-2"),
                 ("watch", "--notebook", "x", "--for", "-0.5"), ("check", "--notebook", "x", "--for", "-3"),
                 ("snapshot", "--notebook", "x", "--timeout", "nan")):
        res = run_cli(*args, "--socket", "/nonexistent/rt.sock")
        assert res.returncode == errors.EXIT_USAGE and "must not be negative" in res.stderr, (args, res.stderr)


def test_version_and_a_missing_socket_load_no_session_modules() -> None:
    probe = ("import sys, runpy; sys.argv = ['runtimed-inspector', *sys.argv[1:]]\n"
             "from inspector import cli\ncode = cli.main(sys.argv[1:])\n"
             "heavy = sorted(m for m in ('automerge', 'inspector.session', 'inspector.divergence', 'jupyter_client',"
             " 'inspector.check', 'asyncio') if m in sys.modules)\nprint('loaded', heavy, file=sys.stderr)\n"
             "sys.exit(code)")
    for args in (["--version"], ["snapshot", "--socket", "/nonexistent/rt.sock", "--notebook", "x"],
                 ["rooms", "--socket", "/nonexistent/rt.sock"]):
        res = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=30)
        assert "loaded []" in res.stderr, (args, res.stderr)


def test_rooms_exits_6_on_a_daemon_of_protocol_3() -> None:
    with daemon_thread(pool_pong={"type": "pong", "protocol_version": 3, "daemon_version": "1.3.0"}) as d:
        for extra in ((), ("--json",)):
            res = run_cli("rooms", "--socket", d.path, *extra)
            assert res.returncode == errors.EXIT_PROTOCOL_VERSION, res.stderr
            assert "protocol 3 (1.3.0)" in res.stderr and res.stderr.count("\n") == 1


def test_watch_ending_during_connect_does_not_blame_the_daemon() -> None:
    # the daemon accepts the notebook connection but sends its handshake reply only after 3 s
    with daemon_thread(handshake_delay=3.0) as d:
        res = run_cli("watch", "--socket", d.path, "--notebook", "nb-1", "--for", "0.5")
        # never live within --for: exit 10 saying so (not 0 as if all was well), and no blame
        assert res.returncode == 10, res.stderr
        assert "never live in 0.5 s" in res.stderr and "refused protocol" not in res.stdout + res.stderr
def test_snapshot_of_a_room_that_never_completes_exits_10_naming_what_is_missing() -> None:
    """The daemon advertises its heads but never sends the changes: no partial room, no exit 0."""
    with daemon_thread(stall_sync=True) as d:
        started = time.monotonic()
        res = run_cli("snapshot", "--socket", d.path, "--notebook", "nb-1", "--timeout", "2")
        took = time.monotonic() - started
    assert res.returncode == 10, res.stderr
    assert res.stdout == ""
    line = res.stderr.strip().splitlines()[-1]
    assert line == ("runtimed-inspector: the room was not complete within 2 s: still waiting for "
                    "the notebook document (not at the daemon heads yet)")
    assert took < 8


def test_kernel_connection_auto_on_a_v2_daemon_is_one_line_not_silence() -> None:
    with daemon_thread() as d:
        res = run_cli("snapshot", "--socket", d.path, "--notebook", "nb-1", "--settle-ms", "100",
                      "--kernel-connection", "auto")
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "--kernel-connection auto is ignored" in ln]
    assert len(lines) == 1 and "this daemon speaks v2" in lines[0]
    assert json.loads(res.stdout)["sources"] == ["doc"]  # no comm_sync from this daemon: no feed view yet


def test_snapshot_of_a_join_that_lost_a_change_asks_again_and_prints_the_whole_room() -> None:
    """The join's message arrives without one change (the daemon counts it sent, so it never
    sends it again there): the held-back change is re-requested by a rejoin, not printed short."""
    from fuzz.test_hostile_daemon import losing, two_slider_moves

    ref: list[ScriptedDaemon] = []
    with daemon_thread(sync_filter=losing(ref, {0})) as d:
        ref.append(d)
        asyncio.run(two_slider_moves(d))  # before anyone joins: the daemon's loop has no peer to wake
        res = run_cli("snapshot", "--socket", d.path, "--notebook", "nb-1", "--settle-ms", "200", "--events")
        assert res.returncode == 0, res.stderr
        snap = json.loads(res.stdout)
        assert next(c for c in snap["comms"] if c["comm_id"] == "sl")["state"]["value"] == 52
        said = [e["summary"] for e in snap["events"]]
        assert any("unapplied change" in s for s in said) and any("re-requesting 1 change(s)" in s for s in said)
        assert len(d.peers) == 2
