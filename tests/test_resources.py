"""Desktop integration files: validators pass, ids agree, every icon size is really there."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import inspector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "packaging"))
import check_png  # noqa: E402  (stdlib-only; shared with packaging/smoke.sh)

ROOT = Path(__file__).resolve().parent.parent
RESOURCES = ROOT / "resources"
APP_ID = inspector.APP_ID
DESKTOP = RESOURCES / f"{APP_ID}.desktop"
METAINFO = RESOURCES / f"{APP_ID}.metainfo.xml"
HICOLOR = RESOURCES / "icons" / "hicolor"
SVG = HICOLOR / "scalable" / "apps" / f"{APP_ID}.svg"
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def _run_validator(argv: list[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed (apt-get install desktop-file-utils appstream)")
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive in desktop files
    parser.read(DESKTOP, encoding="utf-8")
    return parser["Desktop Entry"]


def _console_script() -> str:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        scripts = tomllib.load(fh)["project"]["scripts"]
    (name,) = [n for n, target in scripts.items() if target == "inspector.cli:main"]
    return name


def test_desktop_file_passes_desktop_file_validate() -> None:
    result = _run_validator(["desktop-file-validate", str(DESKTOP)])
    # desktop-file-validate prints hints on stdout even on success; errors make it exit non-zero.
    assert result.returncode == 0, result.stdout + result.stderr
    assert not any(k in result.stdout for k in (": error:", ": warning:")), result.stdout


def test_metainfo_passes_appstreamcli_validate() -> None:
    result = _run_validator(["appstreamcli", "validate", "--no-net", str(METAINFO)])
    assert result.returncode == 0, result.stdout + result.stderr
    # Warnings fail flathub/distro checks even though appstreamcli exits 0 for some of them.
    assert not any(line.startswith(("E:", "W:")) for line in result.stdout.splitlines()), result.stdout


def test_ids_agree_across_desktop_file_metainfo_icon_and_package() -> None:
    entry = _desktop_entry()
    script = _console_script()
    assert entry["Icon"] == APP_ID
    assert entry["Exec"].split() == [script, "gui"]
    assert entry["Type"] == "Application"
    # Without a main category the launcher only lists the app under "Other".
    assert "Development" in entry["Categories"].split(";")

    component = ET.parse(METAINFO).getroot()
    assert component.get("type") == "desktop-application"
    assert component.findtext("id") == APP_ID
    launchable = component.find("launchable")
    assert launchable is not None and launchable.get("type") == "desktop-id"
    assert launchable.text == DESKTOP.name
    assert [b.text for b in component.iterfind("provides/binary")] == [script]
    assert component.find("content_rating") is not None
    assert SVG.is_file()


def test_metainfo_release_matches_package_version_and_screenshots_live_in_docs() -> None:
    component = ET.parse(METAINFO).getroot()
    versions = [r.get("version") for r in component.iterfind("releases/release")]
    # Releases are newest first; shipping a version without its release entry is a packaging bug.
    assert versions and versions[0] == inspector.__version__
    images = [i.text or "" for i in component.iterfind("screenshots/screenshot/image")]
    assert images, "metainfo lists no screenshots"
    for url in images:
        assert url.startswith("https://"), url
        assert "/docs/screenshots/" in url and url.endswith(".png"), url
        # The URLs point at files of this repository; a renamed screenshot must not leave a dead link.
        in_repo = ROOT / "docs" / "screenshots" / url.rsplit("/", 1)[1]
        assert in_repo.is_file(), f"{url} names {in_repo.relative_to(ROOT)}, which does not exist"


def _decode_png_rgba(path: Path) -> tuple[int, int, list[bytes]]:
    """The packaging smoke test's stdlib PNG decoder, asked for 8-bit RGBA."""
    width, height, bpp, rows = check_png.decode(path)
    assert bpp == 4, f"{path}: expected RGBA, got {bpp} channel(s)"
    return width, height, rows


@pytest.mark.parametrize("size", PNG_SIZES)
def test_png_icon_exists_at_its_size_and_is_a_real_drawing(size: int) -> None:
    path = HICOLOR / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
    assert path.is_file(), f"missing {path.relative_to(ROOT)}; run python packaging/render_icons.py"
    width, height, rows = _decode_png_rgba(path)
    assert (width, height) == (size, size)

    def alpha(x: int, y: int) -> int:
        return rows[y][x * 4 + 3]

    # Rounded tile: the corners stay transparent, the middle is opaque.
    assert alpha(0, 0) == 0 and alpha(size - 1, size - 1) == 0
    assert alpha(size // 2, size // 2) == 255
    # More than a flat fill: the tile, both sync arcs and the handle give many distinct colours.
    colours = {row[i : i + 3] for row in rows for i in range(0, len(row), 4) if row[i + 3] == 255}
    assert len(colours) >= 8, f"{size}px icon looks blank ({len(colours)} colours)"


def test_svg_icon_is_square_and_parses() -> None:
    root = ET.parse(SVG).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    _, _, w, h = (float(v) for v in root.get("viewBox", "").split())
    assert w == h


# -- the desktop entry for this installation (README installs into .venv, not onto PATH) ----------

def test_install_desktop_writes_an_entry_that_runs_this_installations_script(tmp_path: Path) -> None:
    import argparse

    from inspector import desktop_entry

    script = desktop_entry.script_path()
    assert script.is_absolute() and script.name == _console_script()
    home = tmp_path / "share"
    code = desktop_entry.run(argparse.Namespace(data_home=str(home), uninstall=False))
    assert code == 0
    entry_path = home / "applications" / DESKTOP.name
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read(entry_path, encoding="utf-8")
    entry = parser["Desktop Entry"]
    # the absolute path, so the menu entry works without the venv on the session's PATH
    assert entry["Exec"].split() == [str(script), "gui"] and entry["TryExec"] == str(script)
    assert entry["Icon"] == APP_ID
    shipped = _desktop_entry()
    assert {k: v for k, v in entry.items() if k not in ("Exec", "TryExec")} == {
        k: v for k, v in shipped.items() if k not in ("Exec", "TryExec")}
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and inspector.__version__ in result.stdout
    for size in PNG_SIZES:
        assert (home / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png").is_file()
    assert (home / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg").is_file()
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", str(entry_path)], capture_output=True, text=True)
        assert check.returncode == 0 and ": error:" not in check.stdout, check.stdout
    # and it goes away again
    assert desktop_entry.run(argparse.Namespace(data_home=str(home), uninstall=True)) == 0
    assert not entry_path.exists() and not list((home / "icons").rglob(f"{APP_ID}.*"))


def test_desktop_entry_quotes_a_path_with_spaces_as_the_spec_says() -> None:
    from inspector import desktop_entry

    text = desktop_entry.desktop_entry_text(Path("/home/ada/my envs/.venv/bin/runtimed-inspector"))
    assert 'Exec="/home/ada/my envs/.venv/bin/runtimed-inspector" gui' in text
    assert "TryExec=/home/ada/my envs/.venv/bin/runtimed-inspector\n" in text
