"""Integrity in the CLI, against the testbed daemon (real kernel): `snapshot` prints the
integrity block, `check` prints each finding as one warning line and fails only with
`--strict`, and `--saved` compares a notebook file (a bad one is a one-line error, exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from inspector import cli
from inspector.errors import EXIT_USAGE
from inspector.testbed.daemon import TestbedThread

pytestmark = pytest.mark.kernel

FIX = Path(__file__).resolve().parent / "fixtures" / "real-runtimed-2.9.0"
CLOSED_CHILD = ("import ipywidgets as w\nc = w.Button(description='gone')\nbox = w.VBox([c, w.Label('kept')])\n"
                "display(box)\nc.close()")


def test_snapshot_and_check_report_integrity_findings_as_warnings(capsys: Any, tmp_path: Path) -> None:
    d = tempfile.mkdtemp(prefix="rti-int-", dir="/tmp")
    sock = os.path.join(d, "rt.sock")
    try:
        with TestbedThread(sock, auto_launch=False, write_daemon_json=False) as tbt:
            tb = tbt.testbed
            assert tb is not None
            nid = tbt.call(tb.create_room)
            tbt.call(tb.launch_kernel, nid)
            tbt.call(tb.wait_kernel, nid)
            tbt.call(tb.run_cell, nid, CLOSED_CHILD)
            base = ["--socket", sock, "--notebook", nid]

            # snapshot: the block is there, the closed child is an unresolved reference
            assert cli.main(["snapshot", *base, "--settle-ms", "300"]) == 0
            snap = json.loads(capsys.readouterr().out)
            integrity = snap["integrity"]
            assert set(integrity) >= {"references", "liveness", "buffers", "pointers", "saved"}
            box = next(c["comm_id"] for c in snap["comms"] if c["model_name"] == "VBoxModel")
            refs = [r for r in integrity["references"]["references"] if r["holder"] == box]
            assert sorted(r["target_status"] for r in refs if r["path"].startswith("state/children")) == \
                ["missing", "ok"]
            assert {c["liveness"] for c in integrity["liveness"]["comms"]} == {"live-bound"}

            # check: the closed child is one warning line (the divergence engine's own
            # `dangling_ref` verdict on the same box is its business, not asserted here)
            cli.main(["check", *base, "--for", "2.5"])
            out = capsys.readouterr()
            warn = [ln for ln in out.out.splitlines() if ln.startswith("warning: integrity: ")]
            assert len(warn) == 1 and box in warn[0] and "not in the room" in warn[0], out.out
            assert "1 integrity warning(s)" in out.err

            # --saved: a notebook file compared with the room (this one is another room's)
            saved = str(FIX / "widget-demo.saved.ipynb")
            assert cli.main(["snapshot", *base, "--saved", saved, "--settle-ms", "300"]) == 0
            block = json.loads(capsys.readouterr().out)["integrity"]["saved"]
            assert block["source"] == saved
            assert {c["status"] for c in block["comms"]} == {"missing_in_room", "missing_in_saved"}

            # a room with nothing wrong but a saved file unlike it: a warning, exit 0; --strict: exit 1
            healthy = tbt.call(tb.create_room)
            tbt.call(tb.launch_kernel, healthy)
            tbt.call(tb.wait_kernel, healthy)
            tbt.call(tb.run_cell, healthy, "import ipywidgets as w\ns = w.IntSlider(value=1)\ndisplay(s)")
            other = ["--socket", sock, "--notebook", healthy, "--saved", saved]
            assert cli.main(["check", *other, "--for", "0.5"]) == 0
            out = capsys.readouterr()
            assert [ln for ln in out.out.splitlines() if not ln.startswith("warning: integrity: ")] == []
            assert any("differ from the room" in ln for ln in out.out.splitlines()), out.out
            assert "no divergence, " in out.err and "integrity warning(s)" in out.err
            assert cli.main(["check", *other, "--for", "0.5", "--strict", "--json"]) == 1
            result = json.loads(capsys.readouterr().out)
            assert result["ok"] is False and result["diverged"] == []
            assert any("differ from the room" in w for w in result["integrity"]["warnings"])
            assert result["integrity"]["report"]["saved"]["source"] == saved

            # a file that is not a notebook: one line, exit 2, no traceback, no connection made
            bad = tmp_path / "bad.ipynb"
            bad.write_text("not json")
            for cmd in (["snapshot", *base, "--saved", str(bad)], ["check", *base, "--saved", str(tmp_path / "no.ipynb")]):
                assert cli.main(cmd) == EXIT_USAGE
                err = capsys.readouterr().err.strip().splitlines()
                assert len(err) == 1 and err[0].startswith("runtimed-inspector: ") and "Traceback" not in err[0]
                assert "saved notebook" in err[0]
    finally:
        shutil.rmtree(d, ignore_errors=True)
