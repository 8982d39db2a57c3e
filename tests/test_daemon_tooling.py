"""The project's runtimed tooling (tools/real-runtimed) without a daemon: stop.sh only ever
stops the process it started (a pid reused by another process is left alone), and start.sh
refuses clearly when there is nothing to start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "real-runtimed"


def start_ticks(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]


def record(state: Path, pid: int, ticks: str) -> None:
    state.mkdir(exist_ok=True)
    (state / "daemon.pid.env").write_text(f"export RTD_PID={pid}\nexport RTD_PID_START={ticks}\n")


def stop(state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TOOLS / "stop.sh"), str(state)], capture_output=True, text=True, timeout=30)


def test_stop_leaves_a_process_that_reused_the_pid_alone(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record(tmp_path, other.pid, str(int(start_ticks(other.pid)) - 1))  # "our" daemon started earlier
        res = stop(tmp_path)
        assert res.returncode == 0, res.stderr
        assert "another process" in res.stdout
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_stop_stops_the_recorded_process_and_its_children(tmp_path: Path) -> None:
    # a stand-in daemon (a session leader, as start.sh makes it) with a child, as kernels are
    daemon = subprocess.Popen(["setsid", sys.executable, "-c",
                               "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
                               "'import time; time.sleep(60)']); print('up', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None and daemon.stdout.readline() == "up\n"
        children = [int(p) for p in Path(f"/proc/{daemon.pid}/task/{daemon.pid}/children").read_text().split()]
        assert len(children) == 1
        record(tmp_path, daemon.pid, start_ticks(daemon.pid))
        res = stop(tmp_path)
        assert res.returncode == 0, res.stderr
        assert f"daemon {daemon.pid} stopped" in res.stdout
        assert daemon.wait(10) is not None
        assert not Path(f"/proc/{children[0]}").exists() or "Z" in Path(f"/proc/{children[0]}/stat").read_text()
        assert not (tmp_path / "daemon.pid.env").exists()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def test_stop_with_nothing_started_is_a_no_op(tmp_path: Path) -> None:
    res = stop(tmp_path)
    assert res.returncode == 0 and "nothing started" in res.stdout


def test_start_without_an_install_says_so_in_one_line(tmp_path: Path) -> None:
    res = subprocess.run([str(TOOLS / "start.sh"), str(tmp_path / "state"), "--prefix", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [f"start.sh: no install in {tmp_path / 'none'}; run setup.sh first"]
