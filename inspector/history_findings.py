"""Findings read from key histories: a value going back, the same value rewritten, a key
written too often, a hop too slow. Each finding carries the history rows that show it.

These are facts about how values travelled, not disagreements between views: they are
warnings (see docs/history.md), and a view agreeing in the end does not erase them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .divergence import json_equal
from .hop_latency import HOPS, Hop, samples
from .key_history import Entry, KeyHistory

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


def regressions(cid: str, key: str, source: str, entries: list[Entry], th: Thresholds) -> list[HistoryFinding]:
    out: list[HistoryFinding] = []
    recent: list[Entry] = []  # distinct consecutive values, newest last
    for e in entries:
        if recent and json_equal(recent[-1].value, e.value):
            continue  # a rewrite, not a move
        back = None
        for old in reversed(recent[-th.regression_depth:-1]):
            if e.t - old.t > th.regression_window_s:
                break
            if json_equal(old.value, e.value):
                back = old
                break
        if back is not None:
            prev = recent[-1]
            out.append(HistoryFinding(
                VALUE_REGRESSION, cid, key, source,
                f"{source} went back from {_short(prev.value)} to the older {_short(e.value)} "
                f"{(e.t - prev.t) * 1000:.0f} ms after moving on ({_short(back.value)} first held "
                f"{(e.t - back.t) * 1000:.0f} ms earlier)",
                rows=[back, prev, e]))
        recent.append(e)
        if len(recent) > th.regression_depth + 1:
            del recent[0]
    return out


def noop_rewrites(cid: str, key: str, source: str, entries: list[Entry], th: Thresholds) -> list[HistoryFinding]:
    rows: list[Entry] = []
    count = 0
    for prev, e in zip(entries, entries[1:], strict=False):
        if json_equal(prev.value, e.value):
            count += 1
            if len(rows) < th.max_rows:
                rows.append(e)
    if count < th.noop_min:
        return []
    return [HistoryFinding(NOOP_REWRITE, cid, key, source,
                           f"{source} re-sent an unchanged value {count} time(s)", count=count, rows=rows)]


def flooding(cid: str, key: str, source: str, entries: list[Entry], th: Thresholds) -> list[HistoryFinding]:
    best = (0, 0)  # (writes in the window, index of its first entry)
    lo = 0
    for hi, e in enumerate(entries):
        while e.t - entries[lo].t > 1.0:
            lo += 1
        if hi - lo + 1 > best[0]:
            best = (hi - lo + 1, lo)
    n, start = best
    if n <= th.flood_per_s:
        return []
    window = entries[start:start + n]
    return [HistoryFinding(FLOODING, cid, key, source,
                           f"{source} wrote {key!r} {n} times in one second (threshold {th.flood_per_s:g}/s)",
                           count=n, rows=window[: th.max_rows])]


def slow_hops(history: KeyHistory, th: Thresholds, hops: Iterable[Hop] = HOPS,
              comm_id: str | None = None) -> list[HistoryFinding]:
    worst: dict[tuple[str, str, str], list[Any]] = {}
    for s in samples(history, hops, comm_id):
        if s.latency_s * 1000.0 > th.slow_hop_ms:
            worst.setdefault((s.comm_id, s.key, s.hop), []).append(s)
    out = []
    for (cid, key, hop), ss in sorted(worst.items()):
        ss.sort(key=lambda s: -s.latency_s)
        rows = [r for s in ss[: th.max_rows // 2] for r in (s.near, s.far)]
        out.append(HistoryFinding(SLOW_HOP, cid, key, hop,
                                  f"{len(ss)} value(s) slower than {th.slow_hop_ms:g} ms "
                                  f"(worst {ss[0].latency_s * 1000:.0f} ms)", count=len(ss), rows=rows))
    return out


def detect(history: KeyHistory, thresholds: Thresholds | None = None, comm_id: str | None = None,
           key: str | None = None, hops: Iterable[Hop] = HOPS) -> list[HistoryFinding]:
    """Every history finding in the store (or for one comm / one key)."""
    th = thresholds or Thresholds()
    out: list[HistoryFinding] = []
    for cid in ([comm_id] if comm_id is not None else history.comms()):
        for k in ([key] if key is not None else history.keys(cid)):
            by_src: dict[str, list[Entry]] = {}
            for e in history.series(cid, k):
                by_src.setdefault(e.source, []).append(e)
            for src, entries in sorted(by_src.items()):
                out += regressions(cid, k, src, entries, th)
                out += noop_rewrites(cid, k, src, entries, th)
                out += flooding(cid, k, src, entries, th)
    out += [f for f in slow_hops(history, th, hops, comm_id) if key is None or f.key == key]
    return out
