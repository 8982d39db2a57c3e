"""A latency histogram per hop (the `latency` block's buckets), with p50/p95/max in the legend."""

from __future__ import annotations

from typing import Any

import pyqtgraph as pg

HOP_COLOURS = ("#1a5fb4", "#0f7b6c", "#b35900", "#7b3fb5", "#b3261e", "#3b6e22", "#5f6368", "#c58af9")


def bucket_labels(edges_ms: list[float]) -> list[str]:
    labels = [f"≤{e:g}" for e in edges_ms]
    labels.append(f">{edges_ms[-1]:g}")
    return labels


class LatencyPlot(pg.PlotWidget):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent, background="w")
        self.setMinimumHeight(160)
        self.plotItem.showGrid(y=True, alpha=0.2)
        self.plotItem.setLabel("bottom", "latency bucket (ms)")
        self.plotItem.setLabel("left", "values")
        self.plotItem.addLegend(offset=(8, 8))
        self.bars: dict[str, pg.BarGraphItem] = {}

    def set_block(self, hops: dict[str, dict[str, Any]]) -> None:
        """`hops` is a latency block's `hops` (or one comm's entry)."""
        for item in self.bars.values():
            self.plotItem.removeItem(item)
        self.bars.clear()
        self.plotItem.legend.clear()
        names = [h for h, f in hops.items() if f.get("n")]
        if not names:
            self.plotItem.setTitle("no hop carried a matched value yet")
            return
        self.plotItem.setTitle(None)
        width = 0.8 / len(names)
        edges: list[float] = []
        for i, name in enumerate(names):
            fig = hops[name]
            hist = fig["histogram"]
            edges = hist["edges_ms"]
            xs = [b - 0.4 + width * (i + 0.5) for b in range(len(hist["counts"]))]
            colour = HOP_COLOURS[i % len(HOP_COLOURS)]
            label = (f"{name}  n={fig['n']}  p50 {fig['p50_ms']:.0f} ms  p95 {fig['p95_ms']:.0f} ms  "
                     f"max {fig['max_ms']:.0f} ms")
            bar = pg.BarGraphItem(x=xs, height=hist["counts"], width=width * 0.9, brush=colour,
                                  pen=pg.mkPen(None), name=label)
            self.plotItem.addItem(bar)
            self.bars[name] = bar
        self.plotItem.getAxis("bottom").setTicks([list(enumerate(bucket_labels(edges)))])
