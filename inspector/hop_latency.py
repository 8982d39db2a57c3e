"""How long a value took from one view to the next: per-hop latency, matched from key histories.

A hop is an ordered pair of sources (kernel IOPub → state document, state document → echo
broadcast, a frontend's document write → kernel, ...). A value on the far side is matched to the
oldest equal value on the near side that is earlier and not yet matched: hops deliver in order,
so matching is first-in first-out, and a value the far side coalesced away simply has no match.
(A value repeated within one coalesced batch is matched to its first occurrence: that sample
over-states the hop; the other choice would under-state every lagging hop whose values repeat.) A frontend's
write is a document entry whose writer presence names as a connected peer (the daemon is not a
peer), so the daemon's own writes never count as a frontend's.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from .key_history import KERNEL, Entry, KeyHistory, value_key

MAX_GAP_S = 10.0  # a match further apart than this is a coincidence, not a hop
SCAN = 256  # near-side entries looked at per far-side value
HIST_EDGES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


@dataclass(frozen=True)
class Hop:
    name: str
    near: str  # source the value starts in
    far: str  # source it arrives in
    near_frontend_only: bool = False  # near entries must be written by a presence-named peer


# Every hop a profile can have; a hop whose sources never spoke is left out of the figures.
HOPS: tuple[Hop, ...] = (
    Hop("kernel→doc", KERNEL, "doc"),
    Hop("kernel→feed", KERNEL, "feed"),
    Hop("kernel→state", KERNEL, "state"),
    Hop("kernel→topology", KERNEL, "topology"),
    Hop("state→echo", "state", "echo"),
    Hop("kernel→echo", KERNEL, "echo"),
    Hop("frontend(doc)→kernel", "doc", KERNEL, near_frontend_only=True),
    Hop("frontend(state)→kernel", "state", KERNEL, near_frontend_only=True),
)


class Sample(msgspec.Struct, frozen=True, gc=False):
    """One value's trip over one hop. Not tracked by the garbage collector: a storm makes tens of
    thousands, and collector passes over them would be window stalls."""

    hop: str
    comm_id: str
    key: str
    latency_s: float
    near: Entry
    far: Entry


class HopFigures:
    """Latency figures of one hop, kept incrementally: a sorted list for the quantiles and the
    histogram's bucket counts, so reading them costs nothing in a storm."""

    def __init__(self, edges_ms: tuple[float, ...] = HIST_EDGES_MS) -> None:
        self.sorted: list[float] = []  # seconds
        self.edges_ms = edges_ms
        self.counts = [0] * (len(edges_ms) + 1)

    def add(self, latency_s: float) -> None:
        bisect.insort(self.sorted, latency_s)
        self.counts[bisect.bisect_left(self.edges_ms, latency_s * 1000.0)] += 1

    def block(self) -> dict[str, Any]:
        xs = self.sorted
        return {"n": len(xs), "p50_ms": _ms(_quantile(xs, 0.5)), "p95_ms": _ms(_quantile(xs, 0.95)),
                "max_ms": _ms(xs[-1] if xs else None),
                "histogram": {"edges_ms": list(self.edges_ms), "counts": list(self.counts)}}


def _ms(s: float | None) -> float | None:
    return None if s is None else round(s * 1000.0, 3)


def _quantile(xs: list[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted `xs` (a figure that was observed, never interpolated)."""
    if not xs:
        return None
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def histogram(xs: Iterable[float], edges_ms: tuple[float, ...] = HIST_EDGES_MS) -> dict[str, Any]:
    """Counts per bucket: `counts[i]` is values ≤ edges_ms[i] (and > the previous edge); the last
    count is values above the last edge."""
    counts = [0] * (len(edges_ms) + 1)
    for x in xs:
        counts[bisect.bisect_left(edges_ms, x * 1000.0)] += 1
    return {"edges_ms": list(edges_ms), "counts": counts}


class HopMatcher:
    """One hop on one key, matched as entries arrive (the batch figures use the same code)."""

    def __init__(self, hop: Hop, max_gap_s: float = MAX_GAP_S) -> None:
        self.hop = hop
        self.max_gap_s = max_gap_s
        # parallel lists, not tuples: nothing here for the garbage collector to walk
        self.near_t: list[float] = []
        self.near_vk: list[Any] = []
        self.near: list[Entry] = []
        self.lo = 0  # near entries before lo are matched or superseded by a match
        self.samples: list[Sample] = []
        self.figures = HopFigures()

    def feed(self, e: Entry, vk: Any) -> Sample | None:
        hop = self.hop
        if e.source == hop.near:
            if not hop.near_frontend_only or e.peer is not None:
                self.near_t.append(e.t)
                self.near_vk.append(vk)
                self.near.append(e)
            return None
        if e.source != hop.far:
            return None
        near, near_t, near_vk = self.near, self.near_t, self.near_vk
        # oldest unmatched equal value first: a hop delivers in order, so when a value repeats
        # (a slider passing 93 twice) the far side's 93 is the earlier one still in flight
        for k in range(max(self.lo, len(near) - SCAN), len(near)):
            t, nvk = near_t[k], near_vk[k]
            if t > e.t:
                break  # stamped after this arrival: not its origin
            if e.t - t > self.max_gap_s or nvk != vk:
                continue
            s = Sample(hop.name, e.comm_id, e.key, e.t - t, near[k], e)
            self.samples.append(s)
            self.figures.add(s.latency_s)
            self.lo = k + 1
            return s
        return None


def match_hop(hop: Hop, near: list[Entry], far: list[Entry], max_gap_s: float = MAX_GAP_S) -> list[Sample]:
    """FIFO-match one key's far-side entries to earlier equal near-side entries."""
    m = HopMatcher(hop, max_gap_s)
    for e in sorted(near + far, key=lambda e: e.t):
        m.feed(e, value_key(e.value))
    return m.samples


def key_samples(entries: Iterable[Entry], hops: Iterable[Hop] = HOPS, max_gap_s: float = MAX_GAP_S) -> list[Sample]:
    """Every hop sample of one key's entries (arrival order)."""
    matchers = [HopMatcher(h, max_gap_s) for h in hops]
    for e in entries:
        vk = value_key(e.value)
        for m in matchers:
            m.feed(e, vk)
    return [s for m in matchers for s in m.samples]


def samples(history: KeyHistory, hops: Iterable[Hop] = HOPS, comm_id: str | None = None,
            max_gap_s: float = MAX_GAP_S) -> list[Sample]:
    """Every matched hop sample in the store (or in one comm)."""
    hops = tuple(hops)
    out: list[Sample] = []
    for cid in ([comm_id] if comm_id is not None else history.comms()):
        for key in history.keys(cid):
            srcs = set(history.sources(cid, key))
            use = [h for h in hops if h.near in srcs and h.far in srcs]
            if use:
                out.extend(key_samples(history.series(cid, key), use, max_gap_s))
    return out


def figures(samples_: Iterable[Sample]) -> dict[str, dict[str, Any]]:
    """Per hop: p50/p95/max and a histogram of these samples."""
    per: dict[str, HopFigures] = {}
    for s in samples_:
        per.setdefault(s.hop, HopFigures()).add(s.latency_s)
    return {h: f.block() for h, f in sorted(per.items())}


def latency_block(history: KeyHistory, hops: Iterable[Hop] = HOPS, per_comm: bool = True,
                  max_gap_s: float = MAX_GAP_S, comm_id: str | None = None) -> dict[str, Any]:
    """The snapshot JSON's `latency` block: p50/p95/max and a histogram per hop, for the room and
    per comm (or for one comm only). Hops with no matched value are absent (no figure is better
    than a made-up one)."""
    room: dict[str, HopFigures] = {}
    comms: dict[str, dict[str, HopFigures]] = {}
    for s in samples(history, hops, comm_id, max_gap_s=max_gap_s):
        room.setdefault(s.hop, HopFigures()).add(s.latency_s)
        if per_comm:
            comms.setdefault(s.comm_id, {}).setdefault(s.hop, HopFigures()).add(s.latency_s)
    out: dict[str, Any] = {"hops": {h: f.block() for h, f in sorted(room.items())}}
    if per_comm:
        out["comms"] = {cid: {h: f.block() for h, f in sorted(per.items())} for cid, per in sorted(comms.items())}
    out["dropped_history"] = history.dropped  # figures are over what the store still holds
    return out
