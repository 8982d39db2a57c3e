"""Frozen-bundle entry point: the same command line as the `runtimed-inspector` script.

The bundle is also its own kernel interpreter: the testbed starts kernels as
`<sys.executable> -m ipykernel_launcher -f <connection file>`, and in the bundle
sys.executable is this program, so that form is routed to the bundled ipykernel.
That is what lets `runtimed-inspector demo` work on a machine with no Python.
"""

from __future__ import annotations

import multiprocessing
import sys

KERNEL_LAUNCHER = ["-m", "ipykernel_launcher"]
CORE_PROCESS = ["-m", "inspector.core_process"]  # the window's session core (inspector/core_process.py)


def _run_kernel(args: list[str]) -> int:
    from ipykernel import kernelapp

    sys.argv = [sys.argv[0], *args]
    kernelapp.launch_new_instance()
    return 0


def _run() -> int:
    if sys.argv[1:3] == KERNEL_LAUNCHER:
        return _run_kernel(sys.argv[3:])
    if sys.argv[1:3] == CORE_PROCESS:
        from inspector.core_process import child_main

        return child_main(sys.argv[3:])
    from inspector.cli import main

    return main()


if __name__ == "__main__":
    # A no-op unless something starts processes with spawn/forkserver from the bundle.
    multiprocessing.freeze_support()
    sys.exit(_run())
