"""Findings read from key histories: a value going back, the same value rewritten, a key
written too often, a hop too slow. Each finding carries the history rows that show it.

These are facts about how values travelled, not disagreements between views: they are
warnings (see docs/history.md), and a view agreeing in the end does not erase them.
"""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .hop_latency import HOPS, MAX_GAP_S, Hop, HopMatcher, Sample
from .key_history import Entry, KeyHistory, value_key

VALUE_REGRESSION = "value_regression"
NOOP_REWRITE = "noop_rewrite"
FLOODING = "flooding"
SLOW_HOP = "slow_hop"
KINDS = (VALUE_REGRESSION, NOOP_REWRITE, FLOODING, SLOW_HOP)


@dataclass(frozen=True)
class Thresholds:
    regression_window_s: float = 2.0  # A → B → A within this is a regression, slower is a user
    regression_depth: int = 8  # how many earlier distinct values "older" looks back over
    noop_min: int = 2  # rewrites of an unchanged value (per source and key) before it is reported
    flood_per_s: float = 30.0  # writes per second per source and key (sliding 1 s window)
    slow_hop_ms: float = 500.0  # a hop slower than this
    max_rows: int = 20  # history rows kept as evidence per finding


@dataclass
class HistoryFinding:
    kind: str
    comm_id: str
    key: str
    source: str
    detail: str
    count: int = 1
    rows: list[Entry] = field(default_factory=list)
    severity: str = "warn"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity, "comm_id": self.comm_id, "key": self.key,
                "source": self.source, "detail": self.detail, "count": self.count,
                "rows": [msgspec.to_builtins(e) for e in self.rows]}


def _short(v: Any, n: int = 40) -> str:
    text = msgspec.json.encode(v).decode() if not isinstance(v, str) else repr(v)
    return text if len(text) <= n else text[: n - 1] + "…"


class _SourceWatch:
    """The per-source detectors of one key, fed entry by entry."""

    def __init__(self, source: str, th: Thresholds) -> None:
        self.source = source
        self.th = th
        self.recent: collections.deque[tuple[Any, Entry]] = collections.deque(maxlen=th.regression_depth + 1)
        self.regressions = 0
        self.regression_rows: list[Entry] = []
        self.first_regression = ""
        self.noops = 0
        self.noop_rows: list[Entry] = []
        self.window: collections.deque[Entry] = collections.deque()
        self.flood_best = 0
        self.flood_rows: list[Entry] = []

    def feed(self, e: Entry, vk: Any) -> None:
        th = self.th
        recent = self.recent
        if recent and recent[-1][0] == vk:
            self.noops += 1
            if len(self.noop_rows) < th.max_rows:
                self.noop_rows.append(e)
        else:
            for i in range(len(recent) - 2, -1, -1):  # older distinct values, newest first
                ovk, old = recent[i]
                if e.t - old.t > th.regression_window_s:
                    break
                if ovk == vk:
                    prev = recent[-1][1]
                    self.regressions += 1
                    if not self.first_regression:
                        self.first_regression = (
                            f"{self.source} went back from {_short(prev.value)} to the older {_short(e.value)} "
                            f"{(e.t - prev.t) * 1000:.0f} ms after moving on ({_short(old.value)} first held "
                            f"{(e.t - old.t) * 1000:.0f} ms earlier)")
                    if len(self.regression_rows) + 3 <= th.max_rows:
                        self.regression_rows += [old, prev, e]
                    break
            recent.append((vk, e))
        w = self.window
        w.append(e)
        while e.t - w[0].t > 1.0:
            w.popleft()
        if len(w) > self.flood_best:
            self.flood_best = len(w)
            if len(w) > th.flood_per_s:
                self.flood_rows = list(itertools.islice(w, th.max_rows))

    def findings(self, cid: str, key: str) -> list[HistoryFinding]:
        th = self.th
        out = []
        if self.regressions:
            more = f"; {self.regressions} go-back(s) in all" if self.regressions > 1 else ""
            out.append(HistoryFinding(VALUE_REGRESSION, cid, key, self.source, self.first_regression + more,
                                      count=self.regressions, rows=list(self.regression_rows)))
        if self.noops >= th.noop_min:
            out.append(HistoryFinding(NOOP_REWRITE, cid, key, self.source,
                                      f"{self.source} re-sent an unchanged value {self.noops} time(s)",
                                      count=self.noops, rows=list(self.noop_rows)))
        if self.flood_best > th.flood_per_s:
            out.append(HistoryFinding(FLOODING, cid, key, self.source,
                                      f"{self.source} wrote {key!r} {self.flood_best} times in one second "
                                      f"(threshold {th.flood_per_s:g}/s)", count=self.flood_best,
                                      rows=list(self.flood_rows)))
        return out


class KeyWatch:
    """Every detector and hop matcher of one key, fed incrementally (a live pane feeds it the
    new entries of each tick; `detect` feeds it a whole history: one implementation)."""

    def __init__(self, comm_id: str, key: str, thresholds: Thresholds | None = None,
                 hops: Iterable[Hop] = HOPS, max_gap_s: float = MAX_GAP_S) -> None:
        self.comm_id, self.key = comm_id, key
        self.th = thresholds or Thresholds()
        self.sources: dict[str, _SourceWatch] = {}
        self.hops = [HopMatcher(h, max_gap_s) for h in hops]
        self.slow: dict[str, list[Sample]] = {}  # hop -> samples over the threshold
        self.fed = 0

    def feed(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            vk = value_key(e.value)
            sw = self.sources.get(e.source)
            if sw is None:
                sw = self.sources[e.source] = _SourceWatch(e.source, self.th)
            sw.feed(e, vk)
            for m in self.hops:
                got = m.feed(e, vk)
                if got is not None and got.latency_s * 1000.0 > self.th.slow_hop_ms:
                    self.slow.setdefault(got.hop, []).append(got)
            self.fed += 1

    def samples(self) -> list[Sample]:
        return [s for m in self.hops for s in m.samples]

    def latency(self) -> dict[str, dict[str, Any]]:
        """This key's `latency` block entries (hops that carried a matched value)."""
        return {m.hop.name: m.figures.block() for m in self.hops if m.samples}

    def findings(self) -> list[HistoryFinding]:
        out: list[HistoryFinding] = []
        for src in sorted(self.sources):
            out += self.sources[src].findings(self.comm_id, self.key)
        th = self.th
        for hop, slow in self.slow.items():
            worst = heapq.nlargest(th.max_rows // 2, slow, key=lambda s: s.latency_s)
            rows = [r for s in worst for r in (s.near, s.far)]
            out.append(HistoryFinding(SLOW_HOP, self.comm_id, self.key, hop,
                                      f"{len(slow)} value(s) slower than {th.slow_hop_ms:g} ms "
                                      f"(worst {worst[0].latency_s * 1000:.0f} ms)", count=len(slow), rows=rows))
        return out


def detect(history: KeyHistory, thresholds: Thresholds | None = None, comm_id: str | None = None,
           key: str | None = None, hops: Iterable[Hop] = HOPS) -> list[HistoryFinding]:
    """Every history finding in the store (or for one comm / one key)."""
    out: list[HistoryFinding] = []
    for cid in ([comm_id] if comm_id is not None else history.comms()):
        for k in ([key] if key is not None else history.keys(cid)):
            w = KeyWatch(cid, k, thresholds, hops)
            w.feed(history.series(cid, k))
            out += w.findings()
    return out
