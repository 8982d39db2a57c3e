"""`check`, `watch` and `snapshot` report divergence against the testbed daemon (real kernel)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from typing import Any

import pytest

from inspector import cli
from inspector.testbed.daemon import TestbedThread

pytestmark = pytest.mark.kernel

SLIDER = "import ipywidgets as w\ns = w.IntSlider(value=1)"


def test_check_watch_and_snapshot_report_a_stale_doc(capsys: Any) -> None:
    d = tempfile.mkdtemp(prefix="rti-chk-", dir="/tmp")
    sock = os.path.join(d, "rt.sock")
    try:
        with TestbedThread(sock, faults=["doc-drop-update:IntSliderModel"], auto_launch=False,
                           write_daemon_json=False) as tbt:
            tb = tbt.testbed
            assert tb is not None
            nid = tbt.call(tb.create_room)
            tbt.call(tb.launch_kernel, nid)
            tbt.call(tb.wait_kernel, nid)
            tbt.call(tb.run_cell, nid, SLIDER)
            slider = tbt.call(lambda: [r.comm_id for r in tb.comm_state(nid) if r.model_name == "IntSliderModel"][0])
            conn = tbt.call(lambda: tb.room(nid).kernel.km.connection_file)
            base = ["--socket", sock, "--notebook", nid]

            # Nothing diverged yet: exit 0.
            assert cli.main(["check", *base, "--for", "0.5"]) == 0
            capsys.readouterr()

            # The kernel moves the slider while check watches; the doc misses it: exit 1 with a summary.
            result: dict[str, int] = {}
            th = threading.Thread(target=lambda: result.setdefault(
                "code", cli.main(["check", *base, "--for", "2", "--kernel-connection", conn])))
            th.start()
            tbt.call(tb.run_cell, nid, "s.value = 7")
            th.join(60)
            out = capsys.readouterr()
            assert result["code"] == 1
            lines = [ln for ln in out.out.splitlines() if not ln.startswith(("note:", "unknown:"))]
            assert len(lines) == 1
            # the tap attached after the widgets were opened: the kernel's side of them is unknown, and said
            assert any(ln.startswith("unknown: kernel view unknown for ") and "opened before it attached" in ln
                       for ln in out.out.splitlines())
            assert lines[0].startswith(f"{slider}  IntSliderModel  state_mismatch  [error]  keys value: doc 1, feed 7")
            assert "1 divergence(s)" in out.err and "kernel" in out.err

            # watch prints the transition as a divergence event
            code = cli.main(["watch", *base, "--for", "1.5"])
            assert code == 0
            events = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
            div = [e for e in events if e["kind"] == "divergence"]
            assert any("state_mismatch" in e["data"]["after"] and e["target"] == f"comms/{slider}" for e in div)

            # snapshot carries divergence and sources
            assert cli.main(["snapshot", *base, "--kernel-connection", conn, "--settle-ms", "400"]) == 0
            snap = json.loads(capsys.readouterr().out)
            assert set(snap["sources"]) == {"doc", "feed", "kernel"}
            entry = [x for x in snap["divergence"] if x["comm_id"] == slider]
            assert entry and entry[0]["kind"] in ("state_mismatch", "pending")
            assert entry[0]["keys"][0]["key"] == "value" and entry[0]["keys"][0]["doc"] == 1
    finally:
        shutil.rmtree(d, ignore_errors=True)
