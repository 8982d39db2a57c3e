"""The core stays Qt-free: only inspector/ui may import Qt, and the import contract covers every
core module (so a new module cannot slip past it)."""

from __future__ import annotations

import ast
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = ROOT / "inspector"
QT = ("PySide6", "qasync", "shiboken6")


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level and node.module and node.module.startswith("ui"):
            names.add("inspector.ui")
    return names


def test_no_qt_outside_the_ui_package() -> None:
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "ui":
            continue
        bad = {n for n in _imports(path) if n.split(".")[0] in QT or n.startswith("inspector.ui")}
        if bad:
            offenders.append(f"{rel}: {sorted(bad)}")
    assert offenders == []


def _lint(tmp_path: pathlib.Path, edits: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on a copy of the package with `edits` (path -> source) applied."""
    shutil.copytree(PKG, tmp_path / "inspector", ignore=shutil.ignore_patterns("__pycache__", "resources", "samples"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for rel, text in edits.items():
        (tmp_path / rel).write_text(text)
    exe = pathlib.Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run([str(exe), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_contracts_hold_on_the_package(tmp_path: pathlib.Path) -> None:
    res = _lint(tmp_path, {})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 kept, 0 broken" in res.stdout


def test_a_new_core_module_importing_qt_breaks_a_contract(tmp_path: pathlib.Path) -> None:
    """Stated by package: a module nobody listed is covered the day it is added."""
    res = _lint(tmp_path, {"inspector/v4/plots.py": "import PySide6.QtCore\n"})
    assert res.returncode != 0
    assert "Illegal imports of protected package PySide6: - inspector.v4.plots -> PySide6" in " ".join(res.stdout.split())


def test_a_lower_layer_importing_a_higher_one_breaks_the_layers(tmp_path: pathlib.Path) -> None:
    snapshot = (PKG / "snapshot.py").read_text() + "\nfrom .session_core import SessionCore  # noqa\n"
    res = _lint(tmp_path, {"inspector/snapshot.py": snapshot, "inspector/stray.py": "X = 1\n"})
    assert res.returncode != 0
    out = " ".join(res.stdout.split())
    assert "inspector.snapshot is not allowed to import inspector.session_core" in out
    assert "stray" in out  # exhaustive: a module in no layer is reported too
