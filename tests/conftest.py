import faulthandler
import os
import sys

import pytest

# Qt tests render offscreen; set before any Qt import.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.dirname(__file__))

# After the summary only the interpreter's exit is left, which pytest-timeout does not cover: a
# socket left open there once made zmq's Context.term() wait forever. If the process is still
# alive this long after pytest is done, print every thread's stack and exit non-zero.
EXIT_GRACE_S = float(os.environ.get("TEST_EXIT_GRACE_S", "60"))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if EXIT_GRACE_S > 0:
        faulthandler.dump_traceback_later(EXIT_GRACE_S, exit=True, file=sys.__stderr__)
