"""One comm key over time, one series per source: steps for numbers, bands for strings and
booleans, divergence intervals shaded behind.

Made for a storm: entries are appended to per-source buffers as they come and the curves are
redrawn on a timer (at most `redraw_hz` times a second), with pyqtgraph's view clipping and
auto downsampling, so 60 updates a second cost a few redraws, not 60 full ones.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor

from ..key_history import Entry

SOURCE_COLOURS = {"kernel": "#b3261e", "doc": "#1a5fb4", "state": "#1a5fb4", "topology": "#7b3fb5",
                  "feed": "#0f7b6c", "echo": "#0f7b6c"}
SOURCE_ORDER = ("kernel", "state", "doc", "topology", "echo", "feed")
DIVERGENCE_BRUSH = (179, 38, 30, 40)


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def value_colour(v: Any) -> QColor:
    """A stable colour per value, so one value is one colour in every band."""
    if v is True:
        return QColor("#3b6e22")
    if v is False:
        return QColor("#9aa0a6")
    h = zlib.crc32(repr(v).encode()) % 360
    return QColor.fromHsv(h, 120, 220)


class _Series:
    def __init__(self) -> None:
        self.t: list[float] = []
        self.v: list[Any] = []
        self.curve: pg.PlotDataItem | None = None
        self.bands: pg.BarGraphItem | None = None


class KeyPlot(pg.PlotWidget):
    def __init__(self, parent: Any = None, redraw_hz: float = 20.0) -> None:
        super().__init__(parent, background="w")
        self.setMinimumHeight(160)
        self.plotItem.showGrid(x=True, y=True, alpha=0.2)
        self.plotItem.setLabel("bottom", "time", units="s")
        self.plotItem.addLegend(offset=(8, 8))
        self.plotItem.setClipToView(True)
        self.plotItem.setDownsampling(auto=True, mode="peak")
        self.t0: float | None = None
        self.series: dict[str, _Series] = {}
        self.mode: str | None = None  # "steps" | "bands", decided by the first value
        self.regions: list[pg.LinearRegionItem] = []
        self.redraws = 0
        self._dirty = False
        self._timer = QTimer(self)
        self._timer.setInterval(int(1000 / redraw_hz))
        self._timer.timeout.connect(self.redraw)

    # -- input ------------------------------------------------------------------------------

    def clear_key(self) -> None:
        for s in self.series.values():
            for item in (s.curve, s.bands):
                if item is not None:
                    self.plotItem.removeItem(item)
        self.series.clear()
        self.plotItem.legend.clear()
        self.set_divergences([])
        self.t0 = None
        self.mode = None
        self._timer.stop()

    def append(self, entries: Iterable[Entry]) -> None:
        """New entries (arrival order); drawn at the next redraw tick."""
        for e in entries:
            if self.t0 is None:
                self.t0 = e.t
            if self.mode is None:
                self.mode = "steps" if _numeric(e.value) else "bands"
            s = self.series.get(e.source)
            if s is None:
                s = self.series[e.source] = _Series()
            s.t.append(e.t - self.t0)
            s.v.append(e.value)
            self._dirty = True
        if self._dirty and not self._timer.isActive():
            self._timer.start()

    def set_divergences(self, intervals: Iterable[tuple[float, float | None]]) -> None:
        """Shade (start, end) intervals in monotonic seconds; end None = still diverged."""
        for r in self.regions:
            self.plotItem.removeItem(r)
        self.regions = []
        for start, end in intervals:
            t0 = self.t0 if self.t0 is not None else start
            right = (end if end is not None else max((s.t[-1] + t0 for s in self.series.values() if s.t),
                                                      default=start)) - t0
            region = pg.LinearRegionItem((start - t0, right), movable=False, brush=pg.mkBrush(*DIVERGENCE_BRUSH),
                                         pen=pg.mkPen(None))
            region.setZValue(-10)
            self.plotItem.addItem(region)
            self.regions.append(region)

    # -- drawing ----------------------------------------------------------------------------

    def redraw(self) -> None:
        if not self._dirty:
            self._timer.stop()
            return
        self._dirty = False
        self.redraws += 1
        if self.mode == "steps":
            self._draw_steps()
        else:
            self._draw_bands()

    def _lane_order(self) -> list[str]:
        return sorted(self.series, key=lambda s: (SOURCE_ORDER.index(s) if s in SOURCE_ORDER else 99, s))

    def _draw_steps(self) -> None:
        for name in self._lane_order():
            s = self.series[name]
            xs = np.fromiter(s.t, float, len(s.t))
            ys = np.fromiter((float(v) if _numeric(v) else np.nan for v in s.v), float, len(s.v))
            if s.curve is None:
                colour = SOURCE_COLOURS.get(name, "#5f6368")
                s.curve = self.plotItem.plot(name=name, pen=pg.mkPen(colour, width=2), stepMode=None,
                                             connect="finite")
            # a step holds each value until the next one: duplicate x to draw the risers
            if len(xs) > 1:
                sx = np.repeat(xs, 2)[1:]
                sy = np.repeat(ys, 2)[:-1]
            else:
                sx, sy = xs, ys
            s.curve.setData(sx, sy)

    def _draw_bands(self) -> None:
        lanes = self._lane_order()
        end = max((s.t[-1] for s in self.series.values() if s.t), default=0.0)
        span = max(end, 1e-3)
        for lane, name in enumerate(lanes):
            s = self.series[name]
            xs = np.asarray(s.t, float)
            widths = np.diff(np.append(xs, end + span * 0.02))
            brushes = [pg.mkBrush(value_colour(v)) for v in s.v]
            if s.bands is not None:
                self.plotItem.removeItem(s.bands)
            s.bands = pg.BarGraphItem(x0=xs, width=widths, y0=lane - 0.4, height=0.8, brushes=brushes,
                                      pen=pg.mkPen(None), name=name)
            self.plotItem.addItem(s.bands)
        self.plotItem.getAxis("left").setTicks([[(i, n) for i, n in enumerate(lanes)]])

    def point_count(self) -> int:
        return sum(len(s.t) for s in self.series.values())
