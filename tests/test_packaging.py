"""The desktop bundle builds from this checkout, starts offscreen and renders its window.

Building takes a minute or more and installs into its own venv, so it only runs on request:
    RUNTIMED_INSPECTOR_BUILD_BUNDLE=1 pytest tests/test_packaging.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import inspector

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "build" / "dist" / "runtimed-inspector"
EXE = BUNDLE / "runtimed-inspector"

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("RUNTIMED_INSPECTOR_BUILD_BUNDLE") != "1",
        reason="set RUNTIMED_INSPECTOR_BUILD_BUNDLE=1 to build and smoke-test the PyInstaller bundle",
    ),
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="the build and smoke scripts are bash/Linux"
    ),
]


@pytest.fixture(scope="module")
def bundle() -> Path:
    result = subprocess.run(
        ["bash", str(ROOT / "packaging" / "build.sh")], capture_output=True, text=True, timeout=1500
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert f"bundle: {BUNDLE}" in result.stdout
    assert EXE.is_file() and os.access(EXE, os.X_OK)
    return BUNDLE


@pytest.mark.timeout(1800)
def test_bundle_builds_and_passes_the_offscreen_smoke_test(bundle: Path) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "packaging" / "smoke.sh"), str(bundle)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"runtimed-inspector {inspector.__version__}" in result.stdout
    assert "smoke: OK" in result.stdout
    # Desktop integration files travel inside the bundle.
    internal = bundle / "_internal"
    assert (internal / "resources" / f"{inspector.APP_ID}.desktop").is_file()
    assert (internal / "inspector" / "testbed" / "samples").is_dir()


@pytest.mark.timeout(1800)
def test_bundle_is_its_own_kernel_with_ipywidgets(bundle: Path) -> None:
    """The demo starts kernels as `<executable> -m ipykernel_launcher`; in the bundle that is the bundle."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.kernel_spec.argv[0] = str(EXE)
    km.start_kernel(env={**os.environ, "RUNTIMED_INSPECTOR_LOG_DIR": str(ROOT / "build" / "smoke-logs")})
    kc = km.client()
    try:
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        seen: list[dict] = []
        reply = kc.execute_interactive(
            "import sys, ipywidgets as w\ns = w.IntSlider(value=7)\nprint(sys.executable, s.value)",
            output_hook=seen.append,
            timeout=120,
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        text = "".join(m["content"].get("text", "") for m in seen if m["msg_type"] == "stream")
        assert text.split() == [str(EXE), "7"]
        models = [m["content"]["data"]["state"]["_model_name"] for m in seen if m["msg_type"] == "comm_open"]
        assert "IntSliderModel" in models
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
