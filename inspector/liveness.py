"""Liveness class of each comm: is this widget backed by a live kernel object, or only state?

The classes (one per comm of the snapshot):

* **live-bound**: topology and state are present, the kernel is alive, and nothing says the
  kernel lacks the comm. Evidence is `kernel_tap` when the kernel's own IOPub view lists the
  comm, else `kernel_running` (the runtime agent writes topology only for comms its kernel
  opened and removes it on close, so a running kernel is the best evidence without a tap;
  v2: the feed's record is `live`).
* **replay-only**: topology and state are present but the kernel is gone (status `shutdown`,
  `dead`, `error`, `not_started`, or none reported), is starting (a launch clears the comms of
  the kernel before it, so survivors belong to a dead one), or is alive and known not to hold the comm
  (a tap that saw the kernel from its start does not list it; v2: the feed marked the comm
  `kernel_dead`). A frontend would still render it from state, but nothing answers it.
* **not-yet-loaded** (v4): topology without state, younger than the window. The runtime state
  and the comms document arrive in separate sync frames; topology first is the normal order.
* **orphaned** (v4): state without topology, or topology without state older than the window:
  the daemon's cross-document delete is not atomic and orphan state persists until its GC.
  State without topology younger than the window is `orphaned` with `provisional=True`.

v2 (seed era): the notebook doc's `comms/<id>` entry holds topology and state together, so a
comm is never orphaned from the doc alone; an entry with no `state` is `not-yet-loaded`.

Kernel comms the room does not show at all are listed as `missing_in_room`, except the
reserved `nteract.dx.*` targets, which the runtime agent filters out of topology, state and
broadcasts by design.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .snapshot import CommView, FeedCommView, Snapshot

LIVE_BOUND, REPLAY_ONLY, ORPHANED, NOT_YET_LOADED = "live-bound", "replay-only", "orphaned", "not-yet-loaded"
CLASSES = (LIVE_BOUND, REPLAY_ONLY, ORPHANED, NOT_YET_LOADED)
WINDOW_S = 2.0  # the daemon batches topology and state writes; past this a half comm is orphaned
RESERVED_PREFIX = "nteract.dx."
GONE = {"shutdown", "dead", "error", "not_started", "none", "starting"}


class KernelEvidence(msgspec.Struct, frozen=True):
    """What is known about the kernel besides the snapshot."""

    status: str | None = None  # overrides snapshot.kernel.status when given
    comms: dict[str, str | None] | None = None  # comm id -> target name, from a kernel tap
    complete: bool = False  # the tap saw the kernel from its start (absence is meaningful)


class CommLiveness(msgspec.Struct, frozen=True):
    comm_id: str
    liveness: str
    reason: str
    evidence: str = ""  # kernel_tap | kernel_running | feed | kernel_status | documents
    has_topology: bool = True
    has_state: bool = True
    provisional: bool = False
    since: float | None = None  # when this comm was first seen in its current shape (tracker)


class LivenessReport(msgspec.Struct, frozen=True):
    comms: tuple[CommLiveness, ...] = ()
    kernel_status: str | None = None
    kernel_alive: bool = False
    missing_in_room: tuple[str, ...] = ()  # kernel comms the room does not show (reserved excluded)
    reserved: tuple[str, ...] = ()  # kernel comms in the reserved nteract.dx.* namespace

    def by_id(self) -> dict[str, CommLiveness]:
        return {c.comm_id: c for c in self.comms}

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(CLASSES, 0)
        for c in self.comms:
            out[c.liveness] += 1
        return out

    def to_json(self) -> dict[str, object]:
        return msgspec.to_builtins(self)


def kernel_alive(status: str | None) -> bool:
    if status is None:
        return False
    s = status.lower()
    return not (s in GONE or s.startswith("error"))


def _shape(c: CommView) -> tuple[bool, bool]:
    no_topo = any(f.startswith("no topology") for f in c.flags)
    no_state = any(f.startswith("no state") for f in c.flags) or "missing state" in c.flags
    return not no_topo, not no_state


def classify(snapshot: Snapshot, kernel: KernelEvidence | None = None, *,
             first_seen: Mapping[str, float] | None = None, now: float | None = None,
             window_s: float = WINDOW_S, memo: dict[str, tuple[Any, CommLiveness]] | None = None,
             shapes: Mapping[str, tuple[bool, bool]] | None = None) -> LivenessReport:
    """Liveness of every comm of `snapshot`. `first_seen[comm_id]`: when the comm was first
    seen in its current shape (topology/state presence); without it a half comm is judged as
    if it had just appeared (not yet loaded, or provisionally orphaned). `memo` (the tracker's):
    each comm's verdict with what it was judged from, reused while that is unchanged, so a
    storm on one slider does not judge 2,000 comms again; `shapes`: each comm's `_shape`."""
    kernel = kernel or KernelEvidence()
    now = snapshot.taken_at if now is None else now
    status = kernel.status if kernel.status is not None else snapshot.kernel.status
    alive = kernel_alive(status)
    feed = {f.comm_id: f for f in snapshot.feed.comms}
    v4 = snapshot.feed.baseline == "none"
    kcomms = kernel.comms
    out: list[CommLiveness] = []
    for c in snapshot.comms:
        cid = c.comm_id
        topo, state = shapes[cid] if shapes is not None else _shape(c)
        seen = first_seen.get(cid) if first_seen else None
        young = seen is None or now - seen <= window_s
        f = feed.get(cid)
        if memo is not None:
            # a half comm's reason names its age: judged again each time (they are few)
            basis = (topo, state, seen, young, status, f, kcomms is not None and cid in kcomms, kernel.complete, v4)
            hit = memo.get(cid)
            if hit is not None and hit[0] == basis and topo and state:
                out.append(hit[1])
                continue
        verdict = _judge(cid, topo, state, seen, young, now, v4, status, alive, kernel, f)
        if memo is not None:
            memo[cid] = (basis, verdict)
        out.append(verdict)
    if memo is not None and len(memo) > len(out) + 64:
        for cid in set(memo) - {c.comm_id for c in snapshot.comms}:
            del memo[cid]
    room = {c.comm_id for c in snapshot.comms}
    missing: list[str] = []
    reserved: list[str] = []
    for cid, target in (kcomms or {}).items():
        if target and target.startswith(RESERVED_PREFIX):
            reserved.append(cid)
        elif cid not in room:
            missing.append(cid)
    return LivenessReport(tuple(out), status, alive, tuple(sorted(missing)), tuple(sorted(reserved)))


def _judge(cid: str, topo: bool, state: bool, seen: float | None, young: bool, now: float, v4: bool,
           status: str | None, alive: bool, kernel: KernelEvidence, feed: FeedCommView | None) -> CommLiveness:
    if not state and topo:
        if young or not v4:
            return CommLiveness(cid, NOT_YET_LOADED, "topology without state", "documents", topo, state, since=seen)
        assert seen is not None
        return CommLiveness(cid, ORPHANED, f"topology without state for {now - seen:.1f} s",
                            "documents", topo, state, since=seen)
    if not topo:
        return CommLiveness(cid, ORPHANED, "state without topology", "documents", topo, state,
                            provisional=young, since=seen)
    return _bound(cid, status, alive, kernel, feed, seen)


def _bound(cid: str, status: str | None, alive: bool, kernel: KernelEvidence, feed: FeedCommView | None,
           seen: float | None) -> CommLiveness:
    if not alive:
        why = f"kernel {status}" if status else "no kernel reported"
        return CommLiveness(cid, REPLAY_ONLY, why, "kernel_status", since=seen)
    if feed is not None and feed.status == "kernel_dead":
        return CommLiveness(cid, REPLAY_ONLY, "the feed marked the comm's kernel dead", "feed", since=seen)
    if kernel.comms is not None:
        if cid in kernel.comms:
            return CommLiveness(cid, LIVE_BOUND, "the kernel holds the comm", "kernel_tap", since=seen)
        if kernel.complete:
            return CommLiveness(cid, REPLAY_ONLY, "the kernel does not know this comm", "kernel_tap", since=seen)
    if feed is not None and feed.status == "live":
        return CommLiveness(cid, LIVE_BOUND, "kernel alive; the feed relayed its comm_open", "feed", since=seen)
    return CommLiveness(cid, LIVE_BOUND, f"kernel {status}; topology and state present", "kernel_running",
                        since=seen)


class LivenessTracker:
    """Remembers when each comm was first seen in its current shape, for the window."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._seen: dict[str, tuple[tuple[bool, bool], float]] = {}
        self._shapes: dict[str, tuple[CommView, tuple[bool, bool]]] = {}  # per comm: the view it was read from
        self._memo: dict[str, tuple[Any, CommLiveness]] = {}

    def update(self, snapshot: Snapshot, kernel: KernelEvidence | None = None,
               now: float | None = None) -> LivenessReport:
        now = snapshot.taken_at if now is None else now
        shapes = self._shapes
        current: dict[str, tuple[bool, bool]] = {}
        for c in snapshot.comms:
            hit = shapes.get(c.comm_id)
            if hit is None or hit[0] is not c:
                hit = shapes[c.comm_id] = (c, _shape(c))
            current[c.comm_id] = hit[1]
        if len(shapes) > len(current) + 64:
            self._shapes = {cid: shapes[cid] for cid in current}
        seen = self._seen
        self._seen = {cid: (shape, old[1] if (old := seen.get(cid)) is not None and old[0] == shape else now)
                      for cid, shape in current.items()}
        return classify(snapshot, kernel, first_seen=self.first_seen, now=now,
                        window_s=self.window_s, memo=self._memo, shapes=current)

    @property
    def first_seen(self) -> dict[str, float]:
        """Per comm: when it was first seen in its current shape."""
        return {k: v[1] for k, v in self._seen.items()}
