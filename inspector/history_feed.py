"""Feeds a `KeyHistory` from a running session: the input interface of the history store.

Two ways a source's values come in:

* **messages** (`on_message`): every state a message carried, key by key, rewrites of an
  unchanged value included. The kernel's IOPub comm messages (carrier: the kernel msg_id) and
  the daemon's comm broadcasts (`feed` in v2, `echo` for `echo_update` in v4; carrier: the frame
  seq, and the timeline event) come in this way.
* **views** (`on_view`): a document-backed view (v2 `doc`, v4 `topology` and `state`) as the
  divergence engine normalised it; a key is recorded when its value differs from the last one
  recorded for that source, with the entry's latest writer and the frame that carried the change.

`SessionHistory.attach` wires both onto today's session without changing it: the event log
(frames, broadcasts, presence), the divergence engine's sources, and the kernel tap's comm
listener. Presence names the peer behind an actor (`actor_label` on each peer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import events as ev
from .divergence import json_equal
from .key_history import KERNEL, KeyHistory

MESSAGE_SOURCES = frozenset({KERNEL, "feed", "echo"})  # recorded from messages, not from views


class SessionHistory:
    """The adapter between a session (v2 or v4) and the store."""

    def __init__(self, history: KeyHistory | None = None) -> None:
        self.history = history if history is not None else KeyHistory()
        self.peers: dict[str, str] = {}  # actor_label -> peer (peer_label, or peer_id)
        self.frame_seq: int | None = None  # the inbound frame being handled
        self.doc_event_seq: int | None = None  # its DOC_CHANGED event
        self._watched: set[int] = set()  # ids of the CommSource objects subscribed to
        self._taps: set[int] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        self.session: Any = None
        # (comm, key) -> [start, end or None]: when the divergence engine reported the key diverged
        self.intervals: dict[tuple[str, str], list[list[float | None]]] = {}

    # -- the input interface --------------------------------------------------------------------

    def on_message(self, source: str, comm_id: str, state: dict[str, Any], t: float | None = None, *,
                   writer: str | None = None, carrier: str | None = None, event_seq: int | None = None) -> int:
        """Record every key a message carried; returns how many entries were added."""
        t = time.monotonic() if t is None else t
        wall = time.time()
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
        wall = time.time()
        writer = getattr(view, "writer", None)
        carrier = f"frame {self.frame_seq}" if self.frame_seq is not None else None
        n = 0
        for key, value in state.items():
            last = self.history.last(view.comm_id, key, source)
            if last is not None and json_equal(last.value, value):
                continue
            kt = getattr(view, "key_times", {}).get(key, now)
            self.history.append(source, view.comm_id, key, value, kt, wall=wall - (now - kt), writer=writer,
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

    def latency(self, per_comm: bool = True) -> dict[str, Any]:
        """The snapshot JSON's `latency` block (see docs/history.md)."""
        from .hop_latency import latency_block

        return latency_block(self.history, per_comm=per_comm)

    def findings(self, thresholds: Any = None) -> list[dict[str, Any]]:
        """Every history finding, as JSON (warnings: `check --strict` material)."""
        from .history_findings import detect

        return [f.to_json() for f in detect(self.history, thresholds)]

    def on_kernel_comm(self, msg_type: str, content: dict[str, Any], now: float, msg_id: str | None = None) -> None:
        cid = content.get("comm_id")
        data = content.get("data") if isinstance(content.get("data"), dict) else {}
        state = data.get("state")
        if not isinstance(cid, str) or not isinstance(state, dict):
            return
        if msg_type == "comm_msg" and data.get("method") not in ("update", "echo_update"):
            return
        self.on_message(KERNEL, cid, state, now, writer=KERNEL,
                        carrier=f"msg {msg_id}" if msg_id else None)

    # -- today's session --------------------------------------------------------------------------

    def attach(self, session: Any) -> SessionHistory:
        """Subscribe to a `PeerSession` whose `divergence` binding (v2 or v4) is already made."""
        self.session = session
        self._unsubscribe.append(session.log.subscribe(self._on_event))
        self._unsubscribe.append(session.add_listener(lambda _paths: self._watch()))
        self._watch()
        return self

    def attach_log(self, log: ev.EventLog) -> SessionHistory:
        """Only the event stream (broadcasts, presence, frames, divergence transitions): what a
        replayed recording provides. Document views and the kernel tap need `attach`."""
        self._unsubscribe.append(log.subscribe(self._on_event))
        return self

    def detach(self) -> None:
        for undo in self._unsubscribe:
            undo()
        self._unsubscribe.clear()

    def _on_event(self, e: ev.Event) -> None:
        if e.kind == ev.FRAME and e.data.get("direction") == "in":
            self.frame_seq = e.data.get("frame_seq")
            self.doc_event_seq = None
        elif e.kind == ev.DOC_CHANGED:
            self.doc_event_seq = e.seq
        elif e.kind == ev.PRESENCE and isinstance(e.data.get("presence"), dict):
            self.on_presence(e.data["presence"])
        elif e.kind == ev.BROADCAST and e.data.get("event") == "comm":
            msg = e.data.get("message") if isinstance(e.data.get("message"), dict) else {}
            content = msg.get("content") if isinstance(msg.get("content"), dict) else {}
            data = content.get("data") if isinstance(content.get("data"), dict) else {}
            cid, state = content.get("comm_id"), data.get("state")
            if not isinstance(cid, str) or not isinstance(state, dict):
                return
            if msg.get("msg_type") == "comm_msg" and data.get("method") not in ("update", "echo_update"):
                return
            source = "echo" if data.get("method") == "echo_update" else "feed"
            self.on_message(source, cid, state, e.t, carrier=f"frame {self.frame_seq}", event_seq=e.seq)
        elif e.kind == ev.DIVERGENCE and isinstance(e.data.get("comm_id"), str):
            self.on_divergence(e.t, e.data["comm_id"], list(e.data.get("divergences") or ()))
        elif e.kind == ev.CONNECTION:
            self._watch()

    def _watch(self) -> None:
        """Subscribe to engine sources and a kernel tap as they appear (the v4 tap starts late)."""
        binding = getattr(self.session, "divergence", None)
        engine = getattr(binding, "engine", None)
        for name, src in (getattr(engine, "sources", None) or {}).items():
            if name not in MESSAGE_SOURCES and id(src) not in self._watched:
                self._watched.add(id(src))
                src.subscribe(self._on_source)
                for cid in list(src.comms):
                    self.on_view(src.name, src.comms[cid])
        tap = getattr(binding, "tap", None)
        if tap is not None and id(tap) not in self._taps:
            self._taps.add(id(tap))
            previous = tap.comm_listener

            def chained(msg_type: str, content: dict[str, Any], *rest: Any) -> None:
                # (msg_type, content, now), or (msg_type, content, buffers, now): the time is last
                if previous is not None:
                    previous(msg_type, content, *rest)
                self.on_kernel_comm(msg_type, content, rest[-1], getattr(tap, "last_msg_id", None))

            tap.comm_listener = chained

    def _on_source(self, source: Any, ids: set[str]) -> None:
        if not getattr(source, "ready", True):
            return  # the join has not converged: values are still arriving as one baseline
        now = time.monotonic()
        for cid in ids:
            view = source.comms.get(cid)
            if view is not None:
                self.on_view(source.name, view, now)
