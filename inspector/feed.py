"""The CommSync feed view: the comm table a peer rebuilds from `comm_sync` plus every later
`comm` broadcast, with the daemon's merge rules (comm-semantics §7.2).
"""

from __future__ import annotations

import copy
import time
from typing import Any

from .comm_table import CommTable, apply_iopub_comm
from .protocol import messages as m
from .snapshot import FeedCommView, FeedView


class CommFeed:
    def __init__(self) -> None:
        self.table = CommTable()
        self.baseline = "pending"  # pending | comm_sync | empty
        self.generation = 0
        self.anomalies: list[str] = []
        self.received_comm_sync = False
        self.last_event_at: float | None = None
        self.last_clear_at: float | None = None  # starting / shutdown / error
        self.kernel_status: str | None = None
        self.kernel_dead = False
        self.shutdown_pending = False
        self._view_cache: dict[str, tuple[tuple, FeedCommView]] = {}

    # -- one broadcast at a time, in arrival order -----------------------------------------

    def apply(self, bc: Any, now: float | None = None) -> str | None:
        """Apply one decoded broadcast; return a short description of the effect (or None)."""
        now = time.monotonic() if now is None else now
        first = self.baseline == "pending"
        if isinstance(bc, m.CommSync):
            if first:
                self.baseline = "comm_sync"
                self.received_comm_sync = True
                for snap in bc.comms:
                    rec = self.table.open(snap.comm_id, snap.target_name, snap.state,
                                          [bytes(b) for b in snap.buffers], now, source="comm_sync")
                    # comm_sync carries the open-time model fields explicitly
                    rec.model_module = snap.model_module
                    rec.model_name = snap.model_name
                    rec.captured = None  # capture history before the join is unknown
                self.last_event_at = now
                return f"comm_sync baseline: {len(bc.comms)} comm(s)"
            self.anomalies.append("comm_sync received after other broadcasts")
            return "anomaly: late comm_sync"
        if first:
            self.baseline = "empty"
        if isinstance(bc, m.Comm):
            self.last_event_at = now
            return self._apply_comm(bc, now)
        if isinstance(bc, m.KernelStatus):
            return self._apply_kernel_status(bc.status, now)
        return None

    def _apply_comm(self, bc: m.Comm, now: float) -> str:
        content = bc.content if isinstance(bc.content, dict) else {}
        comm_id = content.get("comm_id")
        data = content.get("data") if isinstance(content.get("data"), dict) else {}
        if bc.msg_type == "comm_msg" and data.get("method") == "custom" and isinstance(comm_id, str):
            inner = data.get("content") if isinstance(data.get("content"), dict) else {}
            if inner.get("method") == "output":
                if self.table.capture_output(comm_id, inner.get("output")):
                    return f"captured output on {comm_id}"
            elif inner.get("method") == "clear_output":
                if self.table.capture_clear(comm_id, bool(inner.get("wait"))):
                    return f"clear_output(wait={bool(inner.get('wait'))}) on {comm_id}"
        effect = apply_iopub_comm(self.table, bc.msg_type, content, [bytes(b) for b in bc.buffers], now)
        if effect == "open":
            self.table.comms[comm_id].generation = self.generation
        return f"{effect} {comm_id}"

    def _apply_kernel_status(self, status: str, now: float) -> str | None:
        self.kernel_status = status
        if status == "starting":
            self.generation += 1
            self.table.clear()
            self.last_clear_at = now
            self.kernel_dead = False
            self.shutdown_pending = False
            return "kernel starting: feed cleared"
        if status == "shutdown":
            for rec in self.table.comms.values():
                rec.status = "clear_pending"
            self.shutdown_pending = True
            self.last_clear_at = now
            return "kernel shutdown: comms pending clear"
        if status == "error" or status.startswith("error:"):
            for rec in self.table.comms.values():
                rec.status = "kernel_dead"
            self.kernel_dead = True
            self.last_clear_at = now
            return "kernel error: comms marked dead"
        return None

    def resolve_shutdown(self, doc_comm_ids: set[str]) -> None:
        """After a shutdown, the doc tells whether the daemon cleared (request) or not (exit)."""
        if not self.shutdown_pending:
            return
        if not doc_comm_ids:
            self.table.clear()
        else:
            for rec in self.table.comms.values():
                if rec.status == "clear_pending":
                    rec.status = "live"
        self.shutdown_pending = False

    # -- reading ------------------------------------------------------------------------------

    def _comm_view(self, r: Any) -> FeedCommView:
        # Views are immutable copies; rebuild one only when its record changed.
        stamp = (id(r), r.updates, r.status, r.echo_updates, r.pending_clear,
                 None if r.captured is None else len(r.captured), r.model_name)
        cached = self._view_cache.get(r.comm_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        v = FeedCommView(
            comm_id=r.comm_id,
            target_name=r.target_name,
            model_module=r.model_module,
            model_name=r.model_name,
            state=copy.deepcopy(r.state),
            source=r.source,
            status=r.status,
            buffers=tuple(len(b) for b in r.open_buffers),
            captured=tuple(copy.deepcopy(r.captured)) if r.captured is not None else None,
            echo_shadow=copy.deepcopy(r.echo_shadow),
        )
        self._view_cache[r.comm_id] = (stamp, v)
        return v

    def view(self) -> FeedView:
        comms = tuple(self._comm_view(r) for r in self.table.ordered())
        if len(self._view_cache) > 2 * len(comms) + 64:
            live = set(self.table.comms)
            self._view_cache = {k: v for k, v in self._view_cache.items() if k in live}
        return FeedView(
            received_comm_sync=self.received_comm_sync,
            comms=comms,
            baseline=self.baseline,
            generation=self.generation,
            orphans={k: dict(v) for k, v in self.table.orphans.items()},
            anomalies=tuple(self.anomalies),
        )
