"""One comm key over time, one series per source: steps for numbers, bands for strings and
booleans, divergence intervals shaded behind.

Made for a storm: entries are appended to per-source buffers as they come and the curves are
redrawn on a timer (at most `redraw_hz` times a second), with pyqtgraph's view clipping and
auto downsampling, so 60 updates a second cost a few redraws, not 60 full ones.
"""

from __future__ import annotations

import bisect
import operator
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
_T, _VALUE, _SOURCE = operator.attrgetter("t"), operator.attrgetter("value"), operator.attrgetter("source")
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


def step_envelope(xs: np.ndarray, ys: np.ndarray, lo: float, hi: float, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Points drawing the step function (each value held until the next) over [lo, hi], at most
    about five per pixel column: in a crowded column the value before, the first, the lowest,
    the highest and the last, so no spike disappears."""
    n = len(xs)
    if n == 0:
        return xs, ys
    i0 = max(0, int(np.searchsorted(xs, lo, "left")) - 1)
    i1 = min(n, int(np.searchsorted(xs, hi, "right")) + 1)
    x, y = xs[i0:i1], ys[i0:i1]
    if len(x) <= 4 * columns:
        if len(x) < 2:
            return x, y
        return np.repeat(x, 2)[1:], np.repeat(y, 2)[:-1]  # duplicate x to draw the risers
    edges = np.linspace(x[0], x[-1], columns + 1)
    starts = np.unique(np.searchsorted(x, edges[:-1], "left"))
    starts = starts[starts < len(x)]
    ends = np.append(starts[1:], len(x)) - 1
    firsts, lasts = y[starts], y[ends]
    with np.errstate(all="ignore"):
        mins = np.fmin.reduceat(y, starts)
        maxs = np.fmax.reduceat(y, starts)
    before = np.concatenate(([firsts[0]], lasts[:-1]))
    px = np.repeat(x[starts], 5)
    py = np.column_stack((before, firsts, mins, maxs, lasts)).ravel()
    return px, py


MIXED = object()  # a pixel column where the value changed more than once: zoom in to tell them apart
MIXED_COLOUR = "#5f6368"


def band_segments(runs_t: list[float], runs_v: list[Any], lo: float, hi: float, end: float,
                  columns: int) -> list[tuple[float, float, Any]]:
    """(start, width, value) bars for one band lane over [lo, hi]: one bar per run while runs are
    wider than a pixel column; a column holding several changes becomes one MIXED bar."""
    n = len(runs_t)
    if n == 0:
        return []
    i0 = max(0, bisect.bisect_left(runs_t, lo) - 1)
    i1 = min(n, bisect.bisect_right(runs_t, hi))
    starts = runs_t[i0:i1] + [end]
    if i1 - i0 <= 2 * columns:
        return [(starts[k], starts[k + 1] - starts[k], runs_v[i0 + k]) for k in range(i1 - i0)]
    left, right = starts[0], starts[-1]
    step = (right - left) / columns
    out: list[tuple[float, float, Any]] = []
    k = 0
    m = i1 - i0
    for c in range(columns):
        c0, c1 = left + c * step, left + (c + 1) * step
        j = bisect.bisect_left(starts, c1, k, m)
        changes = j - k  # runs starting in this column
        if changes > 1:
            out.append((c0, step, MIXED))
        elif changes == 1:
            out.append((starts[k], c1 - starts[k], runs_v[i0 + k]))
        elif out:
            x, _w, v = out[-1]
            out[-1] = (x, c1 - x, v)  # the run goes on
        k = j
    return out


class _Series:
    """One source's points: numbers in growing numpy buffers, other values as runs (a band
    segment starts only where the value changes)."""

    def __init__(self) -> None:
        self.n = 0
        self.t = np.empty(1024)
        self.y = np.empty(1024)
        self.runs_t: list[float] = []
        self.runs_v: list[Any] = []
        self.last_t = 0.0
        self.curve: pg.PlotDataItem | None = None
        self.bands: pg.BarGraphItem | None = None
        self.drawn_runs = -1

    def extend(self, ts: np.ndarray, ys: np.ndarray | None, vs: list[Any]) -> None:
        """`ys` holds the numbers (steps); without it `vs` become band runs."""
        k = len(ts)
        if self.n + k > len(self.t):
            cap = max(2 * len(self.t), self.n + k)
            self.t = np.resize(self.t, cap)
            self.y = np.resize(self.y, cap)
        self.t[self.n:self.n + k] = ts
        self.last_t = float(ts[-1])
        if ys is not None:
            self.y[self.n:self.n + k] = ys
        else:
            for t, v in zip(ts.tolist(), vs, strict=True):
                if not self.runs_v or self.runs_v[-1] != v or type(self.runs_v[-1]) is not type(v):
                    self.runs_t.append(t)
                    self.runs_v.append(v)
        self.n += k


class KeyPlot(pg.PlotWidget):
    def __init__(self, parent: Any = None, redraw_hz: float = 10.0) -> None:
        super().__init__(parent, background="w")
        self.setMinimumHeight(160)
        # no grid: with alpha it is redrawn over the whole plot area on every repaint, the
        # largest cost of a redraw in a storm
        self.plotItem.setLabel("bottom", "time", units="s")
        # decimated here (`step_envelope`) rather than by pyqtgraph: its per-redraw checks over the
        # full arrays cost more than the whole redraw
        self.plotItem.vb.sigXRangeChanged.connect(self._on_range)
        self._brushes: dict[Any, Any] = {}
        self._drawing = False
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
        self.set_divergences([])
        self.t0 = None
        self.mode = None
        self._timer.stop()

    def append(self, entries: Iterable[Entry], schedule: bool = True) -> None:
        """New entries (arrival order); drawn at the next redraw tick (`schedule=False`: the
        caller calls `redraw` itself)."""
        entries = entries if isinstance(entries, list) else list(entries)
        if not entries:
            return
        if self.t0 is None:
            self.t0 = entries[0].t
        if self.mode is None:
            self.mode = "steps" if _numeric(entries[0].value) else "bands"
        # column-wise, in C where possible: a 100,000-value key is appended in one call
        ts = np.fromiter(map(_T, entries), float, len(entries)) - self.t0
        vs = list(map(_VALUE, entries))
        ys = None
        if self.mode == "steps":
            try:
                ys = np.array(vs, dtype=float)
            except (TypeError, ValueError):
                ys = np.array([float(v) if _numeric(v) else np.nan for v in vs])
        srcs = list(map(_SOURCE, entries))
        names = set(srcs)
        picks = {names.pop(): None} if len(names) == 1 else {n: np.array(srcs) == n for n in names}
        for source, mask in picks.items():
            s = self.series.get(source)
            if s is None:
                s = self.series[source] = _Series()
            if mask is None:
                s.extend(ts, ys, vs)
            else:
                s.extend(ts[mask], None if ys is None else ys[mask],
                         [v for v, m in zip(vs, mask.tolist(), strict=True) if m] if ys is None else [])
            self._dirty = True
        if schedule and self._dirty and not self._timer.isActive():
            self._timer.start()

    def set_divergences(self, intervals: Iterable[tuple[float, float | None]]) -> None:
        """Shade (start, end) intervals in monotonic seconds; end None = still diverged."""
        for r in self.regions:
            self.plotItem.removeItem(r)
        self.regions = []
        for start, end in intervals:
            t0 = self.t0 if self.t0 is not None else start
            right = (end if end is not None else max((s.last_t + t0 for s in self.series.values() if s.n),
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

    def _on_range(self, *_: Any) -> None:
        # a zoom or pan (not auto-range following new data, which draws the whole range anyway):
        # decimate for the new range
        if not self._drawing and self.mode is not None and not self.plotItem.vb.autoRangeEnabled()[0]:
            self._dirty = True
            if not self._timer.isActive():
                self._timer.start()

    def _draw_steps(self) -> None:
        vb = self.plotItem.vb
        if vb.autoRangeEnabled()[0]:
            lo, hi = -np.inf, np.inf
        else:
            lo, hi = vb.viewRange()[0]
        columns = max(100, int(vb.width()) or 1000)
        self._drawing = True
        try:
            for name in self._lane_order():
                s = self.series[name]
                if s.curve is None:
                    colour = SOURCE_COLOURS.get(name, "#5f6368")
                    s.curve = self.plotItem.plot(name=name, pen=pg.mkPen(colour, width=1))
                sx, sy = step_envelope(s.t[:s.n], s.y[:s.n], lo, hi, columns)
                s.curve.setData(sx, sy, connect="finite" if np.isnan(sy).any() else "all")
        finally:
            self._drawing = False

    def _visible(self) -> tuple[float, float, int]:
        vb = self.plotItem.vb
        lo, hi = (-np.inf, np.inf) if vb.autoRangeEnabled()[0] else vb.viewRange()[0]
        return lo, hi, max(100, int(vb.width()) or 1000)

    def _draw_bands(self) -> None:
        lanes = self._lane_order()
        end = max((s.last_t for s in self.series.values() if s.n), default=0.0)
        span = max(end, 1e-3)
        lo, hi, columns = self._visible()
        self._drawing = True
        try:
            for lane, name in enumerate(lanes):
                s = self.series[name]
                segs = band_segments(s.runs_t, s.runs_v, lo, hi, end + span * 0.02, columns)
                brushes = [self._brush(v) for _x, _w, v in segs]
                if s.bands is not None:
                    self.plotItem.removeItem(s.bands)
                s.bands = pg.BarGraphItem(x0=[x for x, _w, _v in segs], width=[w for _x, w, _v in segs],
                                          y0=lane - 0.4, height=0.8, brushes=brushes, pen=pg.mkPen(None), name=name)
                self.plotItem.addItem(s.bands)
            self.plotItem.getAxis("left").setTicks([[(i, n) for i, n in enumerate(lanes)]])
        finally:
            self._drawing = False

    def _brush(self, v: Any) -> Any:
        key = MIXED if v is MIXED else (type(v).__name__, repr(v))
        b = self._brushes.get(key)
        if b is None:
            b = self._brushes[key] = pg.mkBrush(MIXED_COLOUR if v is MIXED else value_colour(v))
        return b

    def legend_html(self) -> str:
        """The sources and their colours, for a label beside the plot (cheaper than a legend
        item, which is repainted with the curves)."""
        return " ".join(f"<span style='color:{SOURCE_COLOURS.get(n, '#5f6368')}'>■ {n}</span>"
                        for n in self._lane_order())

    def point_count(self) -> int:
        return sum(s.n for s in self.series.values())
