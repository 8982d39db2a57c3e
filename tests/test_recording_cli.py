"""The recorder's commands against the testbed daemon (real kernel and widgets): `check --record`
live, then `check FILE`, `snapshot FILE --at`, `watch FILE`, `diff`, `report --redact`, `export`
offline; `record` killed with SIGKILL still opens; a bad file is one line and exit code 12."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest

from inspector import cli
from inspector.recording import RecordingReader
from inspector.testbed.daemon import TestbedThread

pytestmark = pytest.mark.kernel

SOURCE_SECRET = "SOURCE_SECRET_5501"
SETUP = f"# {SOURCE_SECRET}\nimport ipywidgets as w\ns = w.IntSlider(value=1)\nt = w.Text(value='classified-271')"


@pytest.fixture(scope="module")
def room() -> Iterator[dict[str, Any]]:
    d = tempfile.mkdtemp(prefix="rti-rcli-", dir="/tmp")
    sock = os.path.join(d, "rt.sock")
    try:
        with TestbedThread(sock, faults=["doc-drop-update:IntSliderModel"], auto_launch=False,
                           write_daemon_json=False) as tbt:
            tb = tbt.testbed
            assert tb is not None
            nid = tbt.call(tb.create_room)
            tbt.call(tb.launch_kernel, nid)
            tbt.call(tb.wait_kernel, nid)
            tbt.call(tb.run_cell, nid, SETUP)
            slider = tbt.call(lambda: [r.comm_id for r in tb.comm_state(nid) if r.model_name == "IntSliderModel"][0])
            yield {"tbt": tbt, "tb": tb, "nid": nid, "sock": sock, "dir": d, "slider": slider}
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def live_check(room: dict[str, Any]) -> dict[str, Any]:
    """`check --record FILE` while the kernel moves the slider (the doc misses it: exit 1)."""
    path = os.path.join(room["dir"], "check.rtirec")
    result: dict[str, Any] = {}

    def run() -> None:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            result["code"] = cli.main(["check", "--socket", room["sock"], "--notebook", room["nid"], "--for", "2",
                                       "--json", "--record", path])
        result["out"] = out.getvalue()

    th = threading.Thread(target=run)
    th.start()
    time.sleep(0.8)  # the join; the update must come while the check watches
    room["tbt"].call(room["tb"].run_cell, room["nid"], "s.value = 7")
    th.join(60)
    assert result["code"] == 1
    return {"path": path, "json": json.loads(result["out"])}


def kinds(report: dict[str, Any]) -> set[tuple[str, str, frozenset[str]]]:
    return {(d["comm_id"], d["kind"], frozenset(k["key"] for k in d["keys"]))
            for d in report["diverged"] + report["info"]}


def test_check_file_gives_the_live_verdict(live_check: dict[str, Any], room: dict[str, Any], capsys: Any) -> None:
    capsys.readouterr()
    assert cli.main(["check", live_check["path"], "--json"]) == 1
    offline = json.loads(capsys.readouterr().out)
    assert kinds(offline) == kinds(live_check["json"])
    assert (room["slider"], "state_mismatch", frozenset({"value"})) in kinds(offline)
    assert offline["sources"] == live_check["json"]["sources"]


def test_snapshot_at_and_watch_file(live_check: dict[str, Any], room: dict[str, Any], capsys: Any) -> None:
    capsys.readouterr()
    assert cli.main(["watch", live_check["path"]]) == 0
    events = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    div = [e for e in events if e["kind"] == "divergence"
           and any(d["status"] != "pending" for d in e["data"]["divergences"])]
    assert div and room["slider"] in div[0]["target"]
    # before the divergence was reported, the snapshot has none settled; at it, the slider diverges
    assert cli.main(["snapshot", live_check["path"], "--at", str(div[0]["seq"] - 1)]) == 0
    before = json.loads(capsys.readouterr().out)
    assert not [d for d in before["divergence"] if d["status"] != "pending"]
    assert cli.main(["snapshot", live_check["path"], "--at", str(div[0]["seq"])]) == 0
    at = json.loads(capsys.readouterr().out)
    assert [d["comm_id"] for d in at["divergence"] if d["kind"] == "state_mismatch"] == [room["slider"]]
    # a time works too: 0 s after the start is before the join (no cells)
    assert cli.main(["snapshot", live_check["path"], "--at", "0s"]) == 0
    assert json.loads(capsys.readouterr().out)["cells"] == []


def test_diff_names_the_changed_key_and_its_writer(live_check: dict[str, Any], room: dict[str, Any],
                                                   capsys: Any) -> None:
    capsys.readouterr()
    assert cli.main(["watch", live_check["path"]]) == 0
    events = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    live = next(e["seq"] for e in events if e["kind"] == "connection" and e["data"]["state"] == "live")
    assert cli.main(["diff", live_check["path"], "--from", str(live), "--to", str(events[-1]["seq"])]) == 0
    diff = json.loads(capsys.readouterr().out)
    added = [c for c in diff["cells"].values() if c["change"] == "added"]
    assert any(c["fields"]["source"]["to"] == "s.value = 7" for c in added)
    assert all(c["writers"] for c in added)  # the daemon wrote the cell the testbed ran
    assert diff["from"]["heads"] != diff["to"]["heads"]
    assert diff["changes"] and all(ch["writer"] for ch in diff["changes"])


def test_redacted_report_holds_no_source_text(live_check: dict[str, Any], tmp_path: Any) -> None:
    out = str(tmp_path / "bug.zip")
    assert cli.main(["report", live_check["path"], "-o", out, "--redact"]) == 0
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        blob = b"".join(z.read(n) for n in names)
    assert {"recording.rtirec", "snapshot.json", "summary.txt", "versions.json", "manifest.json"} <= names
    assert SOURCE_SECRET.encode() not in blob and b"classified-271" not in blob
    assert b"state_mismatch" in blob  # the summary of what diverged stays
    plain = str(tmp_path / "plain.zip")
    assert cli.main(["report", live_check["path"], "-o", plain]) == 0
    with zipfile.ZipFile(plain) as z:
        assert SOURCE_SECRET.encode() in z.read("recording.rtirec") + z.read("snapshot.json")


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark (Debian package) not installed")
def test_export_decodes_in_tshark_with_comments(live_check: dict[str, Any], tmp_path: Any) -> None:
    out = str(tmp_path / "s.pcapng")
    assert cli.main(["export", live_check["path"], "--format", "pcapng", "-o", out]) == 0
    lua = os.path.join(os.path.dirname(__file__), "..", "resources", "wireshark", "runtimed.lua")
    proc = subprocess.run(["tshark", "-X", f"lua_script:{lua}", "-r", out, "-T", "fields", "-e", "frame.protocols",
                           "-e", "frame.comment"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [ln.split("\t") for ln in proc.stdout.splitlines()]
    frames = sum(1 for r in RecordingReader(live_check["path"]) if type(r).__name__ == "Frame")
    assert len(rows) == frames
    assert all("runtimed" in r[0] for r in rows)
    assert any("state_mismatch" in (r[1] if len(r) > 1 else "") for r in rows)


def test_record_killed_with_sigkill_opens(room: dict[str, Any], tmp_path: Any) -> None:
    out = str(tmp_path / "killed.rtirec")
    proc = subprocess.Popen([sys.executable, "-m", "inspector", "record", "--socket", room["sock"], "--notebook",
                             room["nid"], "-o", out], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # printed once the room is joined
        assert "recording room" in line, line
        room["tbt"].call(room["tb"].run_cell, room["nid"], "s.value = 3")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    code = subprocess.run([sys.executable, "-m", "inspector", "snapshot", out], capture_output=True, text=True,
                          timeout=120)
    assert code.returncode == 0, code.stderr
    snap = json.loads(code.stdout)
    assert SOURCE_SECRET in json.dumps(snap["cells"])  # the joined room is in the file


def test_bad_files_are_one_line_and_exit_12(tmp_path: Any, capsys: Any) -> None:
    junk = tmp_path / "junk.rtirec"
    junk.write_bytes(b"not a recording at all")
    for argv in (["check", str(junk)], ["snapshot", str(tmp_path / "missing.rtirec")], ["watch", str(tmp_path)],
                 ["diff", str(junk), "--from", "1", "--to", "2"], ["export", str(junk), "--format", "pcapng",
                                                                    "-o", str(tmp_path / "x.pcapng")]):
        capsys.readouterr()
        assert cli.main(argv) == 12, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("runtimed-inspector: "), err
    assert cli.main(["snapshot"]) == 2


def test_history_of_a_key_from_a_recording(live_check: dict[str, Any], room: dict[str, Any], capsys: Any) -> None:
    """`history FILE`: the recording replayed through the core gives the key's story per view."""
    capsys.readouterr()
    assert cli.main(["history", live_check["path"], "--comm", room["slider"], "--key", "value", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    by_source: dict[str, list[Any]] = {}
    for row in out["entries"]:
        by_source.setdefault(row["source"], []).append(row["value"])
    assert by_source["feed"][-1] == 7  # the broadcast carried the kernel's move
    assert 7 not in by_source.get("doc", [])  # the fault kept it out of the document
    assert out["blame"]["moved_last"] == "feed" and out["blame"]["last"]["doc"]["writer"] == "runtimed"
