"""Colours and small painted icons that follow the system palette (light or dark)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontDatabase,
    QGuiApplication,
    QIcon,
    QPainter,
    QPen,
    QPixmap,
)


@dataclass(frozen=True)
class Theme:
    dark: bool
    diverged_fg: QColor
    diverged_bg: QColor
    pending_fg: QColor
    pending_bg: QColor
    info_fg: QColor
    changed_bg: QColor
    muted_fg: QColor
    ok_fg: QColor
    json_key: QColor
    json_string: QColor
    json_number: QColor
    json_keyword: QColor
    json_punct: QColor


def is_dark() -> bool:
    app = QGuiApplication.instance()
    if app is None:
        return False
    hints = QGuiApplication.styleHints()
    scheme = getattr(hints, "colorScheme", None)
    if scheme is not None:
        value = scheme()
        if value == Qt.ColorScheme.Dark:
            return True
        if value == Qt.ColorScheme.Light:
            return False
    # Fall back to the palette: a dark window background means a dark appearance.
    return QGuiApplication.palette().window().color().lightness() < 128


_current: Theme | None = None


def theme() -> Theme:
    """The theme for the current appearance. Item models ask on every paint of every row, so
    the answer is kept until the colour scheme or the application palette changes."""
    global _current
    if _current is not None:
        return _current
    found = _theme(is_dark())
    if _watch_appearance():
        _current = found
    return found


def _forget(*_: object) -> None:
    global _current
    _current = None


_watching = False


def _watch_appearance() -> bool:
    """Drop the kept theme when the appearance changes; False when that cannot be observed."""
    global _watching
    if _watching:
        return True
    app = QGuiApplication.instance()
    if app is None:
        return False
    hints = QGuiApplication.styleHints()
    if hasattr(hints, "colorSchemeChanged"):
        hints.colorSchemeChanged.connect(_forget)
    if not hasattr(app, "paletteChanged"):
        return False
    app.paletteChanged.connect(_forget)
    app.destroyed.connect(_on_app_gone)
    _watching = True
    return True


def _on_app_gone(*_: object) -> None:
    global _watching
    _watching = False
    _forget()


@lru_cache(maxsize=2)
def _theme(dark: bool) -> Theme:
    if dark:
        return Theme(
            dark=True,
            diverged_fg=QColor("#ff8a80"), diverged_bg=QColor("#4a1f22"),
            pending_fg=QColor("#ffd479"), pending_bg=QColor("#3b3420"),
            info_fg=QColor("#8ab4f8"), changed_bg=QColor("#1f4a78"),
            muted_fg=QColor("#9aa0a6"), ok_fg=QColor("#81c995"),
            json_key=QColor("#8ab4f8"), json_string=QColor("#a5d6a7"),
            json_number=QColor("#f6b26b"), json_keyword=QColor("#c58af9"),
            json_punct=QColor("#9aa0a6"),
        )
    return Theme(
        dark=False,
        diverged_fg=QColor("#b3261e"), diverged_bg=QColor("#fde8e7"),
        pending_fg=QColor("#8a5a00"), pending_bg=QColor("#fff5d6"),
        info_fg=QColor("#1a5fb4"), changed_bg=QColor("#bfdcff"),
        muted_fg=QColor("#6b7075"), ok_fg=QColor("#1e7b34"),
        json_key=QColor("#1a5fb4"), json_string=QColor("#2e7d32"),
        json_number=QColor("#b35900"), json_keyword=QColor("#8e24aa"),
        json_punct=QColor("#6b7075"),
    )


def mono_font() -> QFont:
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    font.setStyleHint(QFont.StyleHint.Monospace)
    return font


def _canvas(size: int = 16) -> tuple[QPixmap, QPainter]:
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    return pm, p


@lru_cache(maxsize=64)
def _status_icon(kind: str, dark: bool) -> QIcon:
    t = _theme(dark)
    pm, p = _canvas()
    if kind == "diverged":
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QBrush(t.diverged_fg))
        # a warning triangle
        p.drawPolygon([QPointF(8, 1.5), QPointF(15, 14.5), QPointF(1, 14.5)])
        p.setPen(QPen(QColor("white"), 1.8))
        p.drawLine(QPointF(8, 6), QPointF(8, 10))
        p.drawPoint(QPointF(8, 12.4))
    elif kind == "pending":
        p.setPen(QPen(t.pending_fg, 1.6))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawEllipse(QRectF(2.5, 2.5, 11, 11))
        p.drawLine(QPointF(8, 8), QPointF(8, 4.8))
        p.drawLine(QPointF(8, 8), QPointF(10.5, 9.5))
    elif kind == "info":
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QBrush(t.info_fg))
        p.drawEllipse(QRectF(2, 2, 12, 12))
        p.setPen(QPen(QColor("white"), 1.8))
        p.drawLine(QPointF(8, 7), QPointF(8, 11.5))
        p.drawPoint(QPointF(8, 4.8))
    p.end()
    return QIcon(pm)


def status_icon(kind: str) -> QIcon:
    return _status_icon(kind, theme().dark)


_BADGE_COLOURS = {
    "code": "#3574f0", "markdown": "#7b61ff", "raw": "#8d8d8d", "comm": "#0f9d8a", "output": "#c27c0e",
    "group": "#5f6368", "key": "#9aa0a6", "doc": "#a142f4", "kernel": "#e8710a",
}


@lru_cache(maxsize=64)
def badge_icon(kind: str, letter: str) -> QIcon:
    pm, p = _canvas()
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(QColor(_BADGE_COLOURS.get(kind, "#5f6368"))))
    p.drawRoundedRect(QRectF(1, 1, 14, 14), 3.5, 3.5)
    font = QFont()
    font.setPixelSize(10)
    font.setBold(True)
    p.setFont(font)
    p.setPen(QColor("white"))
    p.drawText(QRectF(1, 1, 14, 14), Qt.AlignmentFlag.AlignCenter, letter)
    p.end()
    return QIcon(pm)


@lru_cache(maxsize=16)
def state_dot(colour: str) -> QIcon:
    pm, p = _canvas(12)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(QColor(colour)))
    p.drawEllipse(QRectF(1.5, 1.5, 9, 9))
    p.end()
    return QIcon(pm)


def blend(a: QColor, b: QColor, t: float) -> QColor:
    """Mix colour a into b: t=1 gives a, t=0 gives b."""
    t = max(0.0, min(1.0, t))
    return QColor(
        round(a.red() * t + b.red() * (1 - t)),
        round(a.green() * t + b.green() * (1 - t)),
        round(a.blue() * t + b.blue() * (1 - t)),
    )
