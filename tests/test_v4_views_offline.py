"""The v4 comm views and their inputs without a daemon: the kernel's view over the captured room,
`--kernel-connection auto` finding the kernel's connection file, and the blob source (a real
HTTP server on loopback and a blob store on disk)."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_v4_session_replay import JOINED_AT, ROOM, SLIDER, FileDriver, interactive_status, join

from inspector.divergence import DivergenceOptions, SettleConfig
from inspector.pool import DaemonProbe
from inspector.session_core import SessionConfig, SessionCore
from inspector.v4.divergence import find_connection_file, runtime_cache_dir
from inspector.v4.manifests import BlobSource, output_view

AGENT = "runtime-agent:f439c045"  # the captured room's kernel


def joined(kernel_connection: str | None, socket_path: str = "replay.sock") -> tuple[SessionCore, FileDriver]:
    core = SessionCore(SessionConfig(socket_path, ROOM, resolve_blobs=False,
                                     divergence=DivergenceOptions(SettleConfig(), kernel_connection)))
    drv, _rest = join(core)
    drv.feed(interactive_status(), JOINED_AT)
    return core, drv


def verdicts(core: SessionCore) -> set[tuple[str, str]]:
    return {(d.comm_id, d.kind) for d in core.snapshot().divergence if d.status != "pending"}


def test_the_kernels_own_view_is_compared_with_the_state(tmp_path: Path) -> None:
    conn = tmp_path / "kernel.json"
    core, drv = joined(str(conn))
    assert core.divergence is not None and core.divergence.tap_path == str(conn)
    assert core.snapshot().sources == ("topology", "state", "echo", "kernel")
    t = JOINED_AT + 0.1
    # the kernel says 9 while the CommsDoc keeps 7: the kernel moved
    core.kernel_comm("comm_msg", {"comm_id": SLIDER, "data": {"method": "update", "state": {"value": 9}}}, [], t)
    drv.until(t + 1.0)
    [d] = core.snapshot().divergence
    assert (d.kind, d.status, d.keys[0].values) == ("state_mismatch", "diverged", {"state": 7, "kernel": 9})
    assert d.moved == "kernel"
    views = core.divergence.key_views(SLIDER, t + 1.0)
    assert views.sources == ("topology", "state", "echo", "kernel") and views.values["kernel"]["value"][0] == 9
    # a comm the kernel opened that the daemon never wrote: missing in the documents
    t += 1.5
    core.kernel_comm("comm_open", {"comm_id": "k" * 32, "target_name": "jupyter.widget",
                                   "data": {"state": {"_model_name": "IntSliderModel", "value": 1}}}, [], t)
    drv.until(t + 2.5)  # membership waits 2 s of quiet
    assert ("k" * 32, "missing_in_doc") in verdicts(core)
    # the kernel closed it again: nothing left to compare
    core.kernel_comm("comm_close", {"comm_id": "k" * 32}, [], t + 2.6)
    core.kernel_comm("comm_msg", {"data": {}}, [], t + 2.6)  # no comm id: ignored
    drv.until(t + 4.5)
    assert ("k" * 32, "missing_in_doc") not in verdicts(core)
    # the kernel answered a shutdown request, yet the CommsDoc still holds the slider (D3)
    core.kernel_event("shutdown", {}, t + 4.6)
    drv.until(t + 9.0)
    assert verdicts(core) == {(SLIDER, "stale_after_kernel_exit")}
    events = [e.summary for e in core.log.events() if "kernel tap" in e.summary]
    assert events == ["kernel tap: the kernel answered a shutdown request"]
    core.kernel_event("dead", "IOPub endpoint gone", t + 9.1)
    assert core.log.events()[-1].summary == "kernel tap: kernel dead (IOPub endpoint gone)"
    core.kernel_event("rejected", "bad signature", t + 9.2)
    assert "rejected an IOPub message (bad signature)" in core.log.events()[-1].summary


def test_a_given_kernel_file_is_tapped_from_the_start_of_each_connection(tmp_path: Path) -> None:
    path = str(tmp_path / "k.json")
    core = SessionCore(SessionConfig("replay.sock", ROOM, resolve_blobs=False,
                                     divergence=DivergenceOptions(kernel_connection=path)))
    core.begin(4, t=0.0)
    assert core.divergence is not None and core.divergence.tap_path == path  # before the join
    first = core.divergence
    core.end("disconnected", "reconnecting in 1 s", 1.0)
    core.begin(4, t=2.0)  # the next connection brings its own binding, tapping the same file
    assert first.tap_path is None and core.divergence is not first and core.divergence.tap_path == path


@pytest.fixture()
def runt_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "runt" / "runtime-agents").mkdir(parents=True)
    return tmp_path / "runt"


def test_kernel_connection_auto_follows_the_rooms_runtime_agent(runt_cache: Path) -> None:
    conn = runt_cache / "kernel-f439.json"
    conn.write_text("{}")
    (runt_cache / "runtime-agents" / (AGENT.replace(":", "_") + ".json")).write_text(
        json.dumps({"connection_file": str(conn)}))
    core, _drv = joined("auto")
    assert core.divergence is not None and core.divergence.tap_path == str(conn)


def test_kernel_connection_auto_says_when_it_finds_no_file(runt_cache: Path) -> None:
    core, _drv = joined("auto")
    assert core.divergence is not None and core.divergence.tap_path is None
    notes = [e.summary for e in core.log.events() if "no connection file" in e.summary]
    assert notes == [f"kernel tap: no connection file found for {AGENT} (runtime-agents manifest, /proc)"]


def test_find_connection_file_through_the_agents_process_group(tmp_path: Path) -> None:
    """The manifest names the agent's process group; its child kernel was started with `-f`."""
    cache = tmp_path / "runt"
    (cache / "runtime-agents").mkdir(parents=True)
    conn = tmp_path / "kernel-abc.json"
    conn.write_text("{}")
    (cache / "runtime-agents" / "runtime-agent_abc.json").write_text(json.dumps({"pgid": 4242}))
    proc = tmp_path / "proc"
    for pid, ppid, argv in ((4243, 4242, [b"python", b"-m", b"ipykernel_launcher", b"-f", str(conn).encode()]),
                            (5000, 1, [b"bash"]), (5001, 4242, [b"python", b"-f", b"/missing.json"])):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "stat").write_text(f"{pid} (python) S {ppid} {ppid} {ppid} 0 -1")
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
    (proc / "self").mkdir()
    assert find_connection_file(cache, "runtime-agent:abc", proc) == str(conn)
    assert find_connection_file(cache, "runtime-agent:other", proc) is None
    (cache / "runtime-agents" / "runtime-agent_bad.json").write_text("[1]")
    assert find_connection_file(cache, "runtime-agent:bad", proc) is None
    (cache / "runtime-agents" / "runtime-agent_nopg.json").write_text("{}")
    assert find_connection_file(cache, "runtime-agent:nopg", proc) is None
    assert find_connection_file(cache, "runtime-agent:abc", tmp_path / "no-proc") is None


def test_runtime_cache_dir_from_the_daemon_then_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    core = SessionCore(SessionConfig(str(tmp_path / "runt-nightly" / "runtimed.sock"), ROOM))
    assert runtime_cache_dir(core) == tmp_path / "runt-nightly"
    core.probe = DaemonProbe(path="x", protocol_version=4, daemon_version="2.9.0",
                             info={"execution_store_dir": str(tmp_path / "cache" / "runt" / "executions") + "/"})
    assert runtime_cache_dir(core) == tmp_path / "cache" / "runt"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    core = SessionCore(SessionConfig(str(tmp_path / "elsewhere.sock"), ROOM))
    assert runtime_cache_dir(core) == tmp_path / "xdg" / "runt"


# -- blobs ------------------------------------------------------------------------------------


@pytest.fixture()
def blob_server() -> Iterator[tuple[int, dict[str, bytes]]]:
    blobs: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            digest = self.path.rsplit("/", 1)[-1]
            if digest not in blobs:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(blobs[digest])))
            self.end_headers()
            self.wfile.write(blobs[digest])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], blobs
    finally:
        server.shutdown()
        server.server_close()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_blob_source_reads_the_server_then_the_store(blob_server: tuple[int, dict[str, bytes]],
                                                     tmp_path: Path) -> None:
    port, blobs = blob_server
    served, stored = b"hello from the server", b'{"a": 1}'
    blobs[_digest(served)] = served
    store = tmp_path / "blobs"
    d = _digest(stored)
    (store / d[:2]).mkdir(parents=True)
    (store / d[:2] / d[2:]).write_bytes(stored)
    (store / d[:2] / (d[2:] + ".meta")).write_text(json.dumps({"media_type": "application/json"}))
    src = BlobSource(port=port, store_dir=str(store))
    assert src.get(_digest(served)) == (served, "text/plain", None)
    blobs.clear()
    assert src.get(_digest(served)) == (served, "text/plain", None)  # immutable: cached
    assert src.get(d) == (stored, "application/json", None)  # 404 from the server, then the disk
    data, mt, err = src.get(_digest(b"nowhere"))
    assert data is None and "answered 404" in err and "not in the blob store" in err
    assert src.get("xyz")[2] == "malformed blob hash 'xyz'"


def test_blob_source_remembers_a_server_that_is_down(tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    src = BlobSource(port=port, timeout=0.5)
    err1 = src.get(_digest(b"a"))[2]
    err2 = src.get(_digest(b"b"))[2]
    assert "unreachable" in err1 and err2 == err1  # one attempt, then the cached failure
    assert BlobSource().get(_digest(b"a"))[2] == "blob server port unknown"


def test_output_manifest_content_resolved_through_the_blob_source(blob_server: tuple[int, dict[str, bytes]]) -> None:
    port, blobs = blob_server
    text, png = b"a long stream text", b"\x89PNG fake image bytes"
    blobs[_digest(text)] = text
    blobs[_digest(png)] = png
    src = BlobSource(port=port)
    manifest = {"output_id": "o1", "output_type": "display_data",
                "data": {"text/plain": {"inline": "7"}, "application/json": {"inline": '{"x": 1}'},
                         "text/html": {"blob": _digest(text), "size": len(text)},
                         "image/png": {"blob": _digest(png), "size": len(png)},
                         "application/bad+json": {"inline": "{nope"}}}
    view = output_view(manifest, src.get)
    assert view.ref == "o1"
    shown = view.resolved or {}
    assert view.output_type == "display_data"
    assert shown["text/plain"] == "7" and shown["application/json"] == {"x": 1}
    assert shown["text/html"] == "a long stream text"
    assert shown["image/png"]["media_type"] == "text/plain" and shown["image/png"]["size"] == len(png)
    assert "inline JSON does not parse" in (view.error or "")
    unresolved = output_view({"data": {"text/plain": {"blob": _digest(b"x"), "size": 1}}}, None, "o2")
    assert unresolved.ref == "o2" and "no blob source" in (unresolved.error or "")
    assert "not a Map" in (output_view([1], None).error or "")
