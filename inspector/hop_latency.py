"""How long a value took from one view to the next: per-hop latency, matched from key histories.

A hop is an ordered pair of sources (kernel IOPub → state document, state document → echo
broadcast, a frontend's document write → kernel, ...). A value on the far side is matched to the
same value on the near side, earlier, not yet matched: hops deliver in order, so matching is
first-in first-out and a value the far side coalesced away simply has no match. A frontend's
write is a document entry whose writer presence names as a connected peer (the daemon is not a
peer), so the daemon's own writes never count as a frontend's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .divergence import json_equal
from .key_history import KERNEL, Entry, KeyHistory

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


@dataclass(frozen=True)
class Sample:
    hop: str
    comm_id: str
    key: str
    latency_s: float
    near: Entry
    far: Entry


@dataclass
class HopFigures:
    samples: list[float] = field(default_factory=list)  # seconds

    def block(self) -> dict[str, Any]:
        xs = sorted(self.samples)
        return {"n": len(xs), "p50_ms": _ms(_quantile(xs, 0.5)), "p95_ms": _ms(_quantile(xs, 0.95)),
                "max_ms": _ms(xs[-1] if xs else None), "histogram": histogram(xs)}


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
        ms = x * 1000.0
        for i, edge in enumerate(edges_ms):
            if ms <= edge:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
    return {"edges_ms": list(edges_ms), "counts": counts}


def match_hop(hop: Hop, near: list[Entry], far: list[Entry], max_gap_s: float = MAX_GAP_S) -> list[Sample]:
    """FIFO-match one key's far-side entries to earlier equal near-side entries."""
    if hop.near_frontend_only:
        near = [e for e in near if e.peer is not None]
    out: list[Sample] = []
    lo = 0  # near entries before lo are matched or superseded by a match
    hi = 0
    for f in far:
        while hi < len(near) and near[hi].t <= f.t:
            hi += 1
        stop = max(lo, hi - SCAN)
        for k in range(hi - 1, stop - 1, -1):
            n = near[k]
            if f.t - n.t > max_gap_s:
                break
            if json_equal(n.value, f.value):
                out.append(Sample(hop.name, f.comm_id, f.key, f.t - n.t, n, f))
                lo = k + 1
                break
    return out


def samples(history: KeyHistory, hops: Iterable[Hop] = HOPS, comm_id: str | None = None,
            max_gap_s: float = MAX_GAP_S) -> list[Sample]:
    """Every matched hop sample in the store (or in one comm)."""
    hops = tuple(hops)
    out: list[Sample] = []
    for cid in ([comm_id] if comm_id is not None else history.comms()):
        for key in history.keys(cid):
            by_src: dict[str, list[Entry]] = {}
            for e in history.series(cid, key):
                by_src.setdefault(e.source, []).append(e)
            for hop in hops:
                if hop.near in by_src and hop.far in by_src:
                    out.extend(match_hop(hop, by_src[hop.near], by_src[hop.far], max_gap_s))
    return out


def latency_block(history: KeyHistory, hops: Iterable[Hop] = HOPS, per_comm: bool = True,
                  max_gap_s: float = MAX_GAP_S, comm_id: str | None = None) -> dict[str, Any]:
    """The snapshot JSON's `latency` block: p50/p95/max and a histogram per hop, for the room and
    per comm (or for one comm only). Hops with no matched value are absent (no figure is better
    than a made-up one)."""
    room: dict[str, HopFigures] = {}
    comms: dict[str, dict[str, HopFigures]] = {}
    for s in samples(history, hops, comm_id, max_gap_s=max_gap_s):
        room.setdefault(s.hop, HopFigures()).samples.append(s.latency_s)
        if per_comm:
            comms.setdefault(s.comm_id, {}).setdefault(s.hop, HopFigures()).samples.append(s.latency_s)
    out: dict[str, Any] = {"hops": {h: f.block() for h, f in sorted(room.items())}}
    if per_comm:
        out["comms"] = {cid: {h: f.block() for h, f in sorted(per.items())} for cid, per in sorted(comms.items())}
    out["dropped_history"] = history.dropped  # figures are over what the store still holds
    return out
