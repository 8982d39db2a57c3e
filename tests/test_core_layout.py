"""The core stays Qt-free: only inspector/ui may import Qt, and the import contract covers every
core module (so a new module cannot slip past it)."""

from __future__ import annotations

import ast
import pathlib
import tomllib

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


def test_import_contract_lists_every_core_module() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = cfg["tool"]["importlinter"]["contracts"][0]
    listed = set(contract["source_modules"])
    core = set()
    for path in PKG.iterdir():
        name = path.stem if path.suffix == ".py" else path.name
        if name.startswith("__") or name == "ui" or (path.is_dir() and not (path / "__init__.py").exists()):
            continue
        if path.suffix == ".py" or path.is_dir():
            core.add(f"inspector.{name}")
    assert core - listed == set(), "add these modules to the import-linter contract in pyproject.toml"
    assert {"PySide6", "qasync", "inspector.ui"} <= set(contract["forbidden_modules"])
