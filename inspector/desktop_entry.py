"""`runtimed-inspector install-desktop`: the desktop entry and icons, for this installation.

The shipped `.desktop` file says `Exec=runtimed-inspector gui`, which only works when the script
is on the desktop session's PATH; a `.venv` install is not. Installing writes a copy whose
`Exec`/`TryExec` name the absolute path of this installation's script, plus the icons, under
`$XDG_DATA_HOME` (`~/.local/share`), where desktops look for per-user applications.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import APP_ID, APP_NAME
from .errors import EXIT_USAGE

_PACKAGE_ICONS = Path(__file__).parent / "ui" / "resources"  # NxN.png, shipped in the wheel
_SOURCE_RESOURCES = Path(__file__).resolve().parents[1] / "resources"  # a checkout (editable install)

DESKTOP_TEMPLATE = """[Desktop Entry]
Type=Application
Version=1.4
Name=Runtimed Inspector
GenericName=Notebook Sync Inspector
Comment=Watch a live runtimed notebook room: document replica, widget comm feed and divergence
Icon={app_id}
Exec={exec_} gui
TryExec={try_exec}
Terminal=false
StartupNotify=true
Categories=Development;Debugger;
Keywords=jupyter;notebook;runtimed;nteract;automerge;ipywidgets;widgets;comm;sync;
"""


def data_home(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    value = env.get("XDG_DATA_HOME", "")
    # the spec: a relative or empty XDG_DATA_HOME is ignored
    return Path(value) if value and os.path.isabs(value) else Path.home() / ".local" / "share"


def script_path() -> Path:
    """The absolute path of this installation's `runtimed-inspector` script."""
    candidates = [Path(sys.executable).parent / APP_NAME]
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == APP_NAME:
        candidates.insert(0, argv0)
    found = shutil.which(APP_NAME)
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c.absolute()
    raise FileNotFoundError(f"no {APP_NAME} script next to {sys.executable} or on PATH: "
                            "install the package (pip install -e '.[gui]') first")


def _quote(path: Path) -> str:
    """An Exec argument as the Desktop Entry spec quotes it (double quotes when needed)."""
    text = str(path)
    if not any(c in text for c in ' \t\n"\'\\><~|&;$*?#()`'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$")
    return f'"{escaped}"'


def desktop_entry_text(script: Path) -> str:
    # TryExec is a plain path (no quoting); `%` must be doubled in Exec
    return DESKTOP_TEMPLATE.format(app_id=APP_ID, exec_=_quote(script).replace("%", "%%"), try_exec=script)


def _icons() -> list[tuple[str, Path]]:
    """(size dir, file) for each icon: the checkout's hicolor set, else the package's PNGs."""
    hicolor = _SOURCE_RESOURCES / "icons" / "hicolor"
    if hicolor.is_dir():
        return sorted((p.parent.parent.name, p) for p in hicolor.glob(f"*/apps/{APP_ID}.*"))
    return sorted((p.stem, p) for p in _PACKAGE_ICONS.glob("*x*.png"))


def install(home: Path | None = None, script: Path | None = None) -> list[Path]:
    """Write the desktop entry (and icons) for `script`; return the files written."""
    home = data_home() if home is None else home
    script = script_path() if script is None else script
    written = []
    apps = home / "applications"
    apps.mkdir(parents=True, exist_ok=True)
    entry = apps / f"{APP_ID}.desktop"
    tmp = entry.with_suffix(".tmp")
    tmp.write_text(desktop_entry_text(script), encoding="utf-8")
    os.replace(tmp, entry)
    written.append(entry)
    for size, src in _icons():
        dest = home / "icons" / "hicolor" / size / "apps" / f"{APP_ID}{src.suffix}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        written.append(dest)
    for tool in (["update-desktop-database", str(apps)], ["gtk-update-icon-cache", "-q", "-t", str(home / "icons" / "hicolor")]):
        if shutil.which(tool[0]):
            subprocess.run(tool, capture_output=True, timeout=30, check=False)  # caches only: best effort
    return written


def uninstall(home: Path | None = None) -> list[Path]:
    home = data_home() if home is None else home
    removed = []
    for path in [home / "applications" / f"{APP_ID}.desktop",
                 *(home / "icons" / "hicolor").glob(f"*/apps/{APP_ID}.*")]:
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "install-desktop", help="add the app to the desktop's application menu (this installation)",
        description="Write the desktop entry and icons under $XDG_DATA_HOME (~/.local/share), with the "
                    "absolute path of this installation's script, so the menu entry works from a .venv.",
        epilog="examples:\n  .venv/bin/runtimed-inspector install-desktop\n"
               "  runtimed-inspector install-desktop --uninstall",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-home", metavar="DIR", help="install under DIR instead of $XDG_DATA_HOME")
    p.add_argument("--uninstall", action="store_true", help="remove what install-desktop wrote")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    home = Path(args.data_home).expanduser().absolute() if args.data_home else None
    try:
        if args.uninstall:
            removed = uninstall(home)
            print(f"removed {len(removed)} file(s)" + (f" from {removed[0].parents[1]}" if removed else ""))
            return 0
        written = install(home)
    except (OSError, FileNotFoundError) as exc:
        print(f"runtimed-inspector: cannot install the desktop entry: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"desktop entry: {written[0]}\n  Exec={desktop_entry_text(script_path()).split('Exec=')[1].splitlines()[0]}"
          f"\n  {len(written) - 1} icon file(s)")
    return 0
