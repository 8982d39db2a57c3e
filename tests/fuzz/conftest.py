"""Fuzzing budget and the tally printed at the end of the run.

CI runs a fixed, derandomized number of examples per target (the whole suite well under
60 s). A longer, random run is opt-in:

    INSPECTOR_FUZZ_EXAMPLES=200000 python -m pytest -q tests/fuzz

Every input goes through `feed()`, which lets only the project's own errors out (anything else
fails the test with the input that caused it) and counts inputs per target for the summary.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings

from inspector.errors import InspectorError

LONG = int(os.environ.get("INSPECTOR_FUZZ_EXAMPLES", "0") or 0)
settings.register_profile("ci", max_examples=400, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=max(LONG, 1), deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("long" if LONG else "ci")

TALLY: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0, 0])  # inputs, seconds, project errors, others
SLOW_INPUT_S = 2.0  # one input taking more CPU time than this is a hang (CPU: a loaded machine is no hang)


def feed(target: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call `fn(*args)`; return its result or the project error it raised; fail on anything else."""
    row = TALLY[target]
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        result = fn(*args)
    except InspectorError as exc:
        result = exc
        row[2] += 1
    except BaseException as exc:  # noqa: B036 - a Rust panic is a BaseException: count it, then fail
        row[3] += 1
        raise AssertionError(f"{target}: {type(exc).__module__}.{type(exc).__name__} escaped: {exc}") from exc
    finally:
        row[0] += 1
        row[1] += time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    assert cpu < SLOW_INPUT_S, f"{target}: one input took {cpu:.2f} s of CPU"
    return result


def count_project_error(target: str) -> None:
    """For targets that handle the project's errors themselves (the sync path goes on after one)."""
    TALLY[target][2] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY:
        return
    tr = terminalreporter
    tr.section("fuzz")
    total_n = total_s = others = 0.0
    for target, (n, secs, project, foreign) in sorted(TALLY.items()):
        tr.write_line(f"{target:<28} {int(n):>8} inputs {n / secs if secs else 0:>10.0f}/s  "
                      f"project errors {int(project):>7}  other exceptions {int(foreign)}")
        total_n += n
        total_s += secs
        others += foreign
    tr.write_line(f"{'all':<28} {int(total_n):>8} inputs {total_n / total_s if total_s else 0:>10.0f}/s  "
                  f"other exceptions {int(others)}")
