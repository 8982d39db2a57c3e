"""What a CLI call costs before it does anything: start-up of `--version` and of the
missing-socket error, next to `python -c 'import automerge'` (the target: at most 2x), and the
JSON printing of a large snapshot (msgspec, as the CLI prints it, against json.dumps).

    python bench/bench_cli.py [--runs 15] [--cells 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def wall(cmd: list[str], runs: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of the child: CPU time is what the
    command costs, wall time also holds what other processes on a loaded machine took."""
    times, cpus = [], []
    env = {**os.environ, "RUNTIMED_INSPECTOR_LOG_DIR": os.environ.get("TMPDIR", "/tmp")}
    subprocess.run(cmd, capture_output=True, env=env, check=False)  # warm the page cache
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env, check=False)
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(times), statistics.median(cpus)


def json_printing(n_cells: int) -> tuple[float, float, int]:
    import msgspec

    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    from scripted_daemon import build_doc

    from inspector.document import ALL, NotebookReader

    cells = [{"id": f"cell-{i:05d}", "position": f"{0x80 + i // 256:02X}{i % 256:02X}",
              "source": f"value_{i} = compute({i})", "execution_count": str(i)} for i in range(n_cells)]
    reader = NotebookReader()
    reader.refresh(build_doc(cells, schema=3), {ALL})
    snapshot = {"cells": [msgspec.to_builtins(c) for c in reader.ordered_cells()], "comms": []}
    t0 = time.perf_counter()
    a = json.dumps(snapshot, indent=2, default=str)
    t_json = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = msgspec.json.format(msgspec.json.encode(snapshot, enc_hook=str), indent=2).decode()
    t_msgspec = time.perf_counter() - t0
    assert json.loads(a) == json.loads(b)
    return t_json, t_msgspec, len(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--cells", type=int, default=10_000)
    args = ap.parse_args()
    py = sys.executable
    script = os.path.join(os.path.dirname(py), "runtimed-inspector")
    cli = [script] if os.path.exists(script) else [py, "-m", "inspector"]
    missing = "/nonexistent/runtimed.sock"
    floor = wall([py, "-c", "import automerge"], args.runs)
    rows = [
        ("python -c 'import automerge'", floor),
        ("--version", wall([*cli, "--version"], args.runs)),
        ("snapshot, missing socket", wall([*cli, "snapshot", "--socket", missing, "--notebook", "x"], args.runs)),
        ("rooms, missing socket", wall([*cli, "rooms", "--socket", missing], args.runs)),
        ("snapshot --help", wall([*cli, "snapshot", "--help"], args.runs)),
    ]
    print(f"start-up, median of {args.runs} runs ({' '.join(os.path.basename(c) for c in cli)}); "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  {'':<32} {'wall':>9} {'ratio':>6} {'cpu':>9} {'ratio':>6}")
    for name, (t, cpu) in rows:
        print(f"  {name:<32} {t * 1e3:6.1f} ms {t / floor[0]:5.2f}x {cpu * 1e3:6.1f} ms {cpu / floor[1]:5.2f}x")
    t_json, t_msgspec, size = json_printing(args.cells)
    print(f"printing a {args.cells}-cell snapshot ({size / 1e6:.1f} MB, indent 2): json.dumps {t_json * 1e3:.0f} ms, "
          f"msgspec {t_msgspec * 1e3:.0f} ms ({t_json / t_msgspec:.1f}x faster)")


if __name__ == "__main__":
    main()
