"""Feeds a `KeyHistory` from the session core: the input interface of the history store.

The core owns one `SessionHistory` when `SessionConfig.history` is set (a `HistoryOptions`),
and calls it from its own inputs, so a live socket and a replayed recording give the same
history:

* **messages** (`on_message`): every state a message carried, key by key, rewrites of an
  unchanged value included. The kernel's IOPub comm messages (`on_kernel_comm`, carrier: the
  kernel msg_id) and the daemon's comm broadcasts (`on_broadcast`: `feed` in v2, `echo` for
  `echo_update` in v4; carrier: the frame seq, and the timeline event) come in this way.
* **views** (`on_view`): a document-backed view (v2 `doc`, v4 `topology` and `state`) as the
  divergence binding's engine normalised it (`bind` subscribes to its sources); a key is
  recorded when its value differs from the last one recorded for that source, with the entry's
  latest writer and the frame that carried the change.
* **presence** (`on_presence`) names the peer behind an actor (`actor_label` on each peer);
  **divergence transitions** (`on_divergence`) open and close the intervals the plot shades.

The store outlives connections (a reconnect continues the story); each connection's binding
is bound afresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .divergence import json_equal
from .key_history import DEFAULT_MAX_BYTES, KERNEL, KeyHistory

MESSAGE_SOURCES = frozenset({KERNEL, "feed", "echo"})  # recorded from messages, not from views


@dataclass
class HistoryOptions:
    """The key-history option of a session (`SessionConfig.history`)."""

    max_bytes: int = DEFAULT_MAX_BYTES  # the store's bound (oldest entries of the biggest key go first)


def _live_wall(t: float) -> float:
    """Wall time of a monotonic instant (a live driver's clock); a replay sets its own."""
    return time.time() - (time.monotonic() - t)


class _Watch:
    """The incremental detectors of one key and how many of its entries they have seen."""

    __slots__ = ("watch", "seen")

    def __init__(self, comm_id: str, key: str, thresholds: Any) -> None:
        from .history_findings import KeyWatch

        self.watch = KeyWatch(comm_id, key, thresholds)
        self.seen = 0


class SessionHistory:
    """The adapter between a session (v2 or v4) and the store."""

    def __init__(self, history: KeyHistory | None = None) -> None:
        self.history = history if history is not None else KeyHistory()
        self.peers: dict[str, str] = {}  # actor_label -> peer (peer_label, or peer_id)
        self.frame_seq: int | None = None  # the inbound frame being handled
        self.doc_event_seq: int | None = None  # its DOC_CHANGED event
        self.wall: Callable[[float], float] = _live_wall  # monotonic -> epoch seconds, for display
        self._engine: Any = None  # the divergence engine whose document views are recorded
        self._watched: set[int] = set()  # ids of the CommSource objects subscribed to
        # (comm, key) -> [start, end or None]: when the divergence engine reported the key diverged
        self.intervals: dict[tuple[str, str], list[list[float | None]]] = {}
        self.thresholds: Any = None  # history_findings.Thresholds for `analyse` (None: the defaults)
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._room: dict[str, Any] = {}  # hop -> HopFigures, every comm
        self._per_comm: dict[str, dict[str, Any]] = {}
        self._comm_blocks: dict[str, dict[str, Any]] = {}  # comm -> its latency figures, as last built
        self._block: dict[str, Any] | None = None
        self._found: list[Any] | None = None  # every watch's findings in key order, as last built
        self._found_at: dict[tuple[str, str], list[Any]] = {}  # each key's findings (keys with none left out)

    # -- the input interface --------------------------------------------------------------------

    def on_message(self, source: str, comm_id: str, state: dict[str, Any], t: float | None = None, *,
                   writer: str | None = None, carrier: str | None = None, event_seq: int | None = None) -> int:
        """Record every key a message carried; returns how many entries were added."""
        t = time.monotonic() if t is None else t
        wall = self.wall(t)
        for key, value in state.items():
            self.history.append(source, comm_id, key, value, t, wall=wall, writer=writer,
                                peer=self.peers.get(writer) if writer else None, carrier=carrier,
                                event_seq=event_seq)
        return len(state)

    def on_view(self, source: str, view: Any, t: float | None = None) -> int:
        """Record the keys of a normalised view (`ViewComm`) that moved since last recorded."""
        state = getattr(view, "state", None)
        if not isinstance(state, dict):
            return 0
        now = time.monotonic() if t is None else t
        writer = getattr(view, "writer", None)
        carrier = f"frame {self.frame_seq}" if self.frame_seq is not None else None
        n = 0
        for key, value in state.items():
            last = self.history.last(view.comm_id, key, source)
            if last is not None and json_equal(last.value, value):
                continue
            kt = getattr(view, "key_times", {}).get(key, now)
            self.history.append(source, view.comm_id, key, value, kt, wall=self.wall(kt), writer=writer,
                                peer=self.peers.get(writer) if writer else None, carrier=carrier,
                                event_seq=self.doc_event_seq)
            n += 1
        return n

    def on_presence(self, raw: dict[str, Any]) -> None:
        """Learn which peer is behind which actor label (update and snapshot frames)."""
        peers = raw.get("peers") if isinstance(raw.get("peers"), list) else [raw]
        for p in peers:
            if not isinstance(p, dict):
                continue
            label = p.get("actor_label")
            who = p.get("peer_label") or p.get("peer_id")
            if isinstance(label, str) and isinstance(who, str):
                self.peers[label] = who

    def on_divergence(self, t: float, comm_id: str, divergences: list[dict[str, Any]]) -> None:
        """A divergence transition of one comm: open an interval for each key now reported
        (pending is not reported), close the ones no longer reported."""
        now_keys = {k.get("key") for d in divergences if d.get("status") != "pending"
                    for k in d.get("keys") or () if isinstance(k, dict)}
        for (cid, key), spans in self.intervals.items():
            if cid == comm_id and key not in now_keys and spans and spans[-1][1] is None:
                spans[-1][1] = t
        for key in now_keys:
            if isinstance(key, str):
                spans = self.intervals.setdefault((comm_id, key), [])
                if not spans or spans[-1][1] is not None:
                    spans.append([t, None])

    def divergence_intervals(self, comm_id: str, key: str) -> list[tuple[float, float | None]]:
        """For the pane's shading: (start, end or None while still diverged), monotonic seconds."""
        return [(a, b) for a, b in self.intervals.get((comm_id, key), ()) if a is not None]

    # -- outputs for the snapshot and `check` ----------------------------------------------------

    def analyse(self) -> tuple[dict[str, Any], list[Any]]:
        """(the `latency` block, every finding) over everything recorded so far, kept
        incrementally: each call feeds the per-key detectors only the entries they have not seen,
        so a snapshot in a storm costs what arrived since the last one, not the whole store."""
        from .hop_latency import HopFigures

        touched: set[str] = set()
        for cid, key in self.history.take_touched():  # only keys that moved are looked at again
            w = self._watches.get((cid, key))
            if w is None:
                w = self._watches[(cid, key)] = _Watch(cid, key, self.thresholds)
            new, w.seen, _gone = self.history.since(cid, key, w.seen)
            if not new:
                continue
            before = [len(m.samples) for m in w.watch.hops]
            w.watch.feed(new)
            found = w.watch.findings()
            had = self._found_at.pop((cid, key), None)
            if found:
                self._found_at[(cid, key)] = found
            if had or found:
                self._found = None
            for m, n in zip(w.watch.hops, before, strict=True):
                for smp in m.samples[n:]:
                    self._room.setdefault(smp.hop, HopFigures()).add(smp.latency_s)
                    self._per_comm.setdefault(cid, {}).setdefault(smp.hop, HopFigures()).add(smp.latency_s)
                    touched.add(cid)
        for cid in touched:
            self._comm_blocks[cid] = {h: f.block() for h, f in sorted(self._per_comm[cid].items())}
        if touched or self._block is None:
            self._block = {
                "hops": {h: f.block() for h, f in sorted(self._room.items())},
                "comms": dict(sorted(self._comm_blocks.items())),
            }
        block = {**self._block, "dropped_history": self.history.dropped}
        if self._found is None:
            self._found = [f for ck in sorted(self._found_at) for f in self._found_at[ck]]
        return block, list(self._found)

    def apply_to(self, snap: Any) -> Any:
        """Fill a snapshot's `latency` block and `findings` (warnings: one view's facts)."""
        import msgspec

        block, found = self.analyse()
        return msgspec.structs.replace(snap, latency=block, findings=tuple(f.to_json() for f in found))

    def latency(self, per_comm: bool = True) -> dict[str, Any]:
        """The snapshot JSON's `latency` block (see docs/history.md)."""
        from .hop_latency import latency_block

        return latency_block(self.history, per_comm=per_comm)

    def findings(self, thresholds: Any = None) -> list[dict[str, Any]]:
        """Every history finding, as JSON (warnings: `check --strict` material)."""
        from .history_findings import detect

        return [f.to_json() for f in detect(self.history, thresholds)]

    def on_kernel_comm(self, msg_type: str, content: dict[str, Any], now: float, msg_id: str | None = None) -> None:
        """A comm message from the kernel's IOPub: `comm_open` state and `update`/`echo_update`."""
        cid = content.get("comm_id")
        data = content.get("data") if isinstance(content.get("data"), dict) else {}
        state = data.get("state")
        if not isinstance(cid, str) or not isinstance(state, dict):
            return
        if msg_type == "comm_msg" and data.get("method") not in ("update", "echo_update"):
            return
        self.on_message(KERNEL, cid, state, now, writer=KERNEL,
                        carrier=f"msg {msg_id}" if msg_id else None)

    def on_broadcast(self, message: dict[str, Any], t: float, event_seq: int | None = None) -> None:
        """A daemon broadcast as sent (JSON): comm opens and updates become `feed` (or `echo`
        for `echo_update`) entries carried by the frame being handled; a v2 `comm_sync` is the
        feed's baseline (every comm's state at the join)."""
        if message.get("event") == "comm_sync":  # v2: the feed's baseline, every comm's state
            for c in message.get("comms") or ():
                if isinstance(c, dict) and isinstance(c.get("comm_id"), str) and isinstance(c.get("state"), dict):
                    self.on_message("feed", c["comm_id"], c["state"], t, event_seq=event_seq,
                                    carrier=f"frame {self.frame_seq}" if self.frame_seq else None)
            return
        if message.get("event") != "comm":
            return
        content = message.get("content") if isinstance(message.get("content"), dict) else {}
        data = content.get("data") if isinstance(content.get("data"), dict) else {}
        cid, state = content.get("comm_id"), data.get("state")
        if not isinstance(cid, str) or not isinstance(state, dict):
            return
        if message.get("msg_type") == "comm_msg" and data.get("method") not in ("update", "echo_update"):
            return
        source = "echo" if data.get("method") == "echo_update" else "feed"
        self.on_message(source, cid, state, t, carrier=f"frame {self.frame_seq}" if self.frame_seq else None,
                        event_seq=event_seq)

    def on_frame(self, frame_seq: int) -> None:
        """An inbound frame is being handled: what it changes is carried by it."""
        self.frame_seq = frame_seq
        self.doc_event_seq = None

    def on_doc_event(self, event_seq: int) -> None:
        """The DOC_CHANGED event of the frame being handled (document rows jump to it)."""
        self.doc_event_seq = event_seq

    # -- the divergence binding's views ------------------------------------------------------------

    def bind(self, engine: Any) -> None:
        """Record the document views of this connection's engine (None: no views)."""
        self._engine = engine
        self._watched = set()
        self.sweep()

    def sweep(self, t: float | None = None) -> None:
        """Subscribe to engine sources that appeared since, and record what ready views hold
        that was not recorded yet (a view loaded at the join notified before it was ready)."""
        engine = self._engine
        for name, src in list((getattr(engine, "sources", None) or {}).items()):
            if name in MESSAGE_SOURCES:
                continue
            if id(src) not in self._watched:
                self._watched.add(id(src))
                src.subscribe(self._on_source)
            if getattr(src, "ready", True):
                for cid in list(src.comms):
                    self.on_view(src.name, src.comms[cid], t)

    def close_intervals(self, t: float) -> None:
        """The connection ended: no divergence is open any more (a new join re-reports)."""
        for spans in self.intervals.values():
            if spans and spans[-1][1] is None:
                spans[-1][1] = t

    def _on_source(self, source: Any, ids: set[str]) -> None:
        if not getattr(source, "ready", True):
            return  # the join has not converged: `sweep` records the baseline once it has
        now = getattr(source, "last_change", None) or time.monotonic()
        for cid in ids:
            view = source.comms.get(cid)
            if view is not None:
                self.on_view(source.name, view, now)
