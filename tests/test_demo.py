"""`runtimed-inspector demo`: the headless scenario as a real process (the snapshot holds the
sample's widgets, the Output widget's captured output and the image), the fallback to headless
without a display, the window with the fault menu (a fault plus a nudge shows a divergence), and
nothing left behind afterwards (no socket, no temp dir, no kernel process)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from waiting import qt_loop, until

from inspector.demo import has_display

ROOT = Path(__file__).resolve().parent.parent
NO_DISPLAY = ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")


@pytest.fixture
def tmp_path() -> Any:
    """A short private TMPDIR: the demo's socket path must stay under the sun_path limit."""
    d = Path(tempfile.mkdtemp(prefix="rtid", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NO_DISPLAY}
    env["TMPDIR"] = str(tmp)  # the demo's private directory is made in here
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _demo(tmp: Path, *args: str, timeout: float = 150, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inspector", "demo", *args], env=_env(tmp, **env),
                          capture_output=True, text=True, timeout=timeout, cwd=tmp)


def _processes_in(tmp: Path) -> list[str]:
    """Processes whose working directory is inside `tmp` (the demo's kernel runs in its dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(tmp) + os.sep):
            found.append(f"{entry}: {cmd}")
    return found


def _assert_nothing_left(tmp: Path) -> None:
    assert [p.name for p in tmp.iterdir() if p.name.startswith("runtimed-inspector-demo-")] == []
    assert _processes_in(tmp) == []


def _by_model(snap: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for c in snap["comms"]:
        out.setdefault(c["model_name"], []).append(c)
    return out


def test_has_display() -> None:
    assert not has_display({}, "linux")
    assert has_display({"DISPLAY": ":0"}, "linux")
    assert has_display({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert has_display({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert has_display({}, "darwin")


@pytest.mark.kernel
def test_headless_demo_prints_the_settled_sample_and_leaves_nothing(tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--headless")
    assert proc.returncode == 0, proc.stderr
    snap = json.loads(proc.stdout)  # exactly one JSON object
    comms = _by_model(snap)
    assert {"IntSliderModel", "VBoxModel", "OutputModel", "LinkModel", "LabelModel"} <= set(comms)
    sliders = {c["state"]["description"]: c["state"]["value"] for c in comms["IntSliderModel"]}
    assert sliders == {"a": 60, "b": 20}  # the last cell moved a from the kernel
    (out,) = comms["OutputModel"]
    (captured,) = out["outputs"]
    assert captured["manifest"]["output_type"] == "stream"
    assert "captured by the Output widget" in json.dumps(captured["manifest"])
    code = [c for c in snap["cells"] if c["cell_type"] == "code"]
    assert code and all(c["execution_count"] is not None for c in code)
    kinds = [o["manifest"]["output_type"] for c in code for o in c["outputs"]]
    assert {"execute_result", "stream", "display_data"} <= set(kinds)
    assert any("image/png" in (o["manifest"].get("data") or {}) for c in code for o in c["outputs"])
    # doc, feed and the kernel's own view agree on every widget
    assert set(snap["sources"]) == {"doc", "feed", "kernel"}
    assert snap["divergence"] == []
    _assert_nothing_left(tmp_path)


@pytest.mark.kernel
def test_without_a_display_the_demo_runs_headless_and_a_fault_shows(tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--fault", "doc-drop-update:IntSliderModel")
    assert proc.returncode == 0, proc.stderr
    assert "no display" in proc.stderr and "headless" in proc.stderr
    snap = json.loads(proc.stdout)
    (d,) = snap["divergence"]
    assert (d["model_name"], d["kind"], d["status"]) == ("IntSliderModel", "state_mismatch", "diverged")
    (k,) = d["keys"]
    assert (k["key"], k["doc"], k["feed"], k["kernel"]) == ("value", 20, 60, 60)
    _assert_nothing_left(tmp_path)


def test_bad_fault_is_a_usage_error(tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--headless", "--fault", "no-such-fault", timeout=60)
    assert proc.returncode == 2
    assert "unknown fault" in proc.stderr and proc.stdout == ""


# --------------------------------------------------------------------------- the window


@pytest.mark.gui
@pytest.mark.kernel
def test_window_demo_screenshot_process_cleans_up(tmp_path: Path) -> None:
    pytest.importorskip("PySide6")
    shot = tmp_path / "shot.png"
    proc = _demo(tmp_path, "--screenshot", str(shot), "--quit-after", "6", QT_QPA_PLATFORM="offscreen")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert shot.stat().st_size > 10_000
    _assert_nothing_left(tmp_path)


@pytest.mark.kernel
@pytest.mark.parametrize("window", [False, True], ids=["headless", "window"])
def test_sigterm_while_running_stops_kernel_and_removes_everything(tmp_path: Path, window: bool) -> None:
    if window:
        pytest.importorskip("PySide6")
        args, extra = [], {"QT_QPA_PLATFORM": "offscreen"}
    else:  # a settle window that never ends: the demo is still running when the signal comes
        args, extra = ["--headless", "--settle-ms", "600000", "--timeout", "600"], {}
    proc = subprocess.Popen([sys.executable, "-m", "inspector", "demo", *args], env=_env(tmp_path, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not _processes_in(tmp_path):  # the kernel runs in the demo's directory
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the demo's kernel did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (0 if window else 130), err
    assert "Traceback" not in err and "did not start" not in err, err
    assert out == ""
    _assert_nothing_left(tmp_path)


@pytest.fixture
def loop(qapp):
    pytest.importorskip("qasync")
    yield from qt_loop(qapp)


def _comm_rows(win: Any) -> dict[str, tuple[str, str]]:
    """comm id -> (name column, info column) of the tree's comm rows."""
    m = win.model
    comms = m.index_for_path("comms")
    return {m.index(r, 3, comms).data(): (m.index(r, 0, comms).data(), m.index(r, 2, comms).data())
            for r in range(m.rowCount(comms))}


@pytest.mark.gui
@pytest.mark.kernel
def test_window_fault_toggle_and_nudge_show_divergence_then_quit_cleans_up(qtbot, loop, tmp_path: Path) -> None:
    pytest.importorskip("PySide6")
    from inspector.demo import DemoScenario
    from inspector.ui.demo_panel import DemoPanel, start_testbed
    from inspector.ui.main_window import InspectorWindow
    from inspector.ui.recent import RecentConnections

    scenario = DemoScenario()
    bed = start_testbed(scenario)
    assert os.stat(scenario.dir).st_mode & 0o777 == 0o700
    win = InspectorWindow(recent=RecentConnections(tmp_path / "recent.json"))
    win.session_options = argparse.Namespace(quiet_ms=250, clear_ms=2000)
    qtbot.addWidget(win)
    win.show()
    panel = DemoPanel(win, bed, scenario)
    win.add_demo_panel(panel)
    try:
        panel.start()
        until(loop, lambda: panel.ready or panel.error, 90, "the demo notebook to run")
        assert panel.error is None
        # the tree refresh is coalesced: wait for the rows, don't assume they are already there
        until(loop, lambda: {"IntSliderModel", "VBoxModel", "OutputModel"}
              <= {name.split()[1] for name, _info in _comm_rows(win).values()}, 20, "the widgets in the tree")
        assert win.state == "live"
        sid = panel.slider_id()
        # the tour shows slider a, in sync in doc, feed and kernel
        assert win.model.node(win.proxy.mapToSource(win.tree.currentIndex())).path == f"comms/{sid}"
        until(loop, lambda: _comm_rows(win)[sid][1] == "in sync", 10, "slider a in sync")  # the last cell moved it
        assert "no faults" in panel.status.text()
        assert not win.menuBar().isHidden() and panel.menu.menuAction() in win.menuBar().actions()

        panel.fault_actions["doc-drop-update"].setChecked(True)
        until(loop, lambda: bed.testbed.faults == ["doc-drop-update"], 10, "the fault to be on")
        assert "doc-drop-update" in panel.status.text()
        win.select_path("cells")
        panel.act_nudge.trigger()
        until(loop, lambda: _comm_rows(win)[sid][1].startswith("diverged"), 20, "slider a to diverge")
        # the window takes the user to the comm that diverged; the detail pane compares doc and feed
        assert win.model.node(win.proxy.mapToSource(win.tree.currentIndex())).path == f"comms/{sid}"
        compare = win.detail.compare
        row = next(r for r in range(compare.rowCount()) if compare.item(r, 0).text().startswith("value"))
        doc_v, feed_v = int(compare.item(row, 1).text()), int(compare.item(row, 2).text())
        assert doc_v == 60 and feed_v == (60 + 13) % 101

        # the fault off again: the next nudge reaches the doc and the views agree again
        panel.clear_faults()
        until(loop, lambda: bed.testbed.faults == [], 10, "the faults to be off")
        panel.act_nudge.trigger()
        until(loop, lambda: _comm_rows(win)[sid][1] == "in sync", 20, "slider a back in sync")
        kernel_pid = bed.testbed.room(panel.notebook_id).kernel.pid
    finally:
        loop.run_until_complete(win.shutdown())
        bed.stop()
        scenario.remove_dir()
    assert not os.path.exists(scenario.socket_path) and not os.path.exists(scenario.dir)
    assert not _pid_alive(kernel_pid)


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_private_dir_is_0700_and_moves_to_tmp_under_a_long_tmpdir(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    from inspector.demo import DemoScenario

    long_dir = tmp_path / ("x" * 90)
    long_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long_dir))
    scenario = DemoScenario()
    try:
        scenario.make_dir()
        assert os.stat(scenario.dir).st_mode & 0o777 == 0o700
        assert os.path.dirname(scenario.dir) == "/tmp" and len(scenario.socket_path) < 100
        assert Path(scenario.notebook_path).read_bytes() == (ROOT / "inspector/testbed/samples/widgets-demo.ipynb").read_bytes()
    finally:
        scenario.remove_dir()
    assert not os.path.exists(scenario.dir)
