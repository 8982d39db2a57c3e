"""Render the application icon SVG into the hicolor PNG sizes.

Run from anywhere:  python packaging/render_icons.py
The PNGs are committed, so this only needs re-running after the SVG changes.
Uses Qt's own SVG renderer (offscreen) so the result matches what the app draws.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QRectF, Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector import APP_ID  # noqa: E402

SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
HICOLOR = ROOT / "resources" / "icons" / "hicolor"
SVG = HICOLOR / "scalable" / "apps" / f"{APP_ID}.svg"
# Hand-tuned 16-pixel-grid variant for the sizes where the full drawing blurs.
SMALL_SVG = ROOT / "resources" / "icons" / "small" / f"{APP_ID}.svg"
SMALL_SIZES = (16, 24)
# Window icons shipped inside the package (a non-editable install has no resources/ folder).
PACKAGE_ICONS = ROOT / "inspector" / "ui" / "resources"
PACKAGE_SIZES = (16, 32, 48, 64, 128, 256)


def render(svg: Path, size: int, out: Path) -> None:
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"cannot parse {svg}")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Straight (non-premultiplied) alpha is what PNG stores.
    if not image.convertToFormat(QImage.Format.Format_ARGB32).save(str(out), "PNG"):
        raise SystemExit(f"cannot write {out}")


def main() -> int:
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 (keeps Qt alive)
    for size in SIZES:
        out = HICOLOR / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
        render(SMALL_SVG if size in SMALL_SIZES else SVG, size, out)
        print(f"{out.relative_to(ROOT)}  {size}x{size}  {out.stat().st_size} bytes")
        if size in PACKAGE_SIZES:
            PACKAGE_ICONS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out, PACKAGE_ICONS / f"{size}x{size}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
