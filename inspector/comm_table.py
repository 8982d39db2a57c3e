"""The daemon's CommState rules, written once.

open (replace and re-sequence), shallow `update` merge, close, clear and the Output-widget
capture stack. The testbed daemon's CommState, the inspector's CommSync feed view and the
kernel IOPub view are all CommTables fed from different streams, so any difference between
them comes from the streams, never from three copies of the rules.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

OUTPUT_MODEL = "OutputModel"


def merge_state(stored: Any, delta: Any) -> list[str]:
    """Shallow merge `delta` into `stored` in place; return the keys that were set.

    Nested values are replaced whole and `null` is stored, never a delete (daemon rule).
    Non-object values on either side are left alone.
    """
    if not isinstance(stored, dict) or not isinstance(delta, dict):
        return []
    for key, value in delta.items():
        stored[key] = value
    return list(delta)


@dataclass
class CommRecord:
    comm_id: str
    target_name: str
    model_module: str | None
    model_name: str | None
    state: Any
    seq: int
    open_buffers: list[bytes] = field(default_factory=list)
    opened_at: float = 0.0
    key_times: dict[str, float] = field(default_factory=dict)  # per-key last-changed (monotonic)
    updates: int = 0  # state updates merged since open
    echo_updates: int = 0
    # Client-side bookkeeping (feed view); the daemon's table leaves these at defaults.
    source: str = "comm_open"
    generation: int = 0
    status: str = "live"  # live | kernel_dead | clear_pending
    echo_shadow: dict[str, Any] | None = None
    captured: list[Any] | None = field(default_factory=list)
    pending_clear: bool = False
    capture_msg_id: str = ""

    @property
    def is_output_widget(self) -> bool:
        return self.model_name == OUTPUT_MODEL

    def last_changed(self) -> float:
        return max(self.key_times.values(), default=self.opened_at)


def model_fields(state: Any) -> tuple[str | None, str | None]:
    if not isinstance(state, dict):
        return None, None
    mm, mn = state.get("_model_module"), state.get("_model_name")
    return (mm if isinstance(mm, str) else None, mn if isinstance(mn, str) else None)


class CommTable:
    """Comms in open order with the daemon's merge rules and capture stacks."""

    def __init__(self) -> None:
        self.comms: dict[str, CommRecord] = {}
        self.next_seq = 0
        self.capture_stacks: dict[str, list[str]] = {}
        self.capturing: dict[str, str] = {}  # comm_id -> msg_id
        self.orphans: dict[str, dict[str, int]] = {}

    # -- mutations --------------------------------------------------------------------------

    def open(
        self,
        comm_id: str,
        target_name: str,
        state: Any,
        buffers: list[bytes] | None = None,
        now: float | None = None,
        source: str = "comm_open",
    ) -> CommRecord:
        """comm_open: an existing id is replaced and moves to the end with a new seq."""
        now = time.monotonic() if now is None else now
        if comm_id in self.comms:
            # The daemon replaces the entry but leaves its capture registration alone
            # (comm_state.rs on_comm_open only inserts), so a re-opened Output keeps capturing.
            del self.comms[comm_id]
        state = copy.deepcopy(state) if state is not None else {}
        mm, mn = model_fields(state)
        rec = CommRecord(
            comm_id=comm_id,
            target_name=target_name,
            model_module=mm,
            model_name=mn,
            state=state,
            seq=self.next_seq,
            open_buffers=list(buffers or []),
            opened_at=now,
            key_times={k: now for k in state} if isinstance(state, dict) else {},
            source=source,
            capture_msg_id=self.capturing.get(comm_id, ""),
        )
        self.next_seq += 1
        self.comms[comm_id] = rec
        return rec

    def update(self, comm_id: str, delta: Any, now: float | None = None) -> list[str] | None:
        """comm_msg update: None when the comm is unknown (the update is dropped)."""
        rec = self.comms.get(comm_id)
        if rec is None:
            self._orphan(comm_id, "update")
            return None
        now = time.monotonic() if now is None else now
        if rec.is_output_widget and isinstance(delta, dict) and isinstance(delta.get("msg_id"), str):
            self._set_capture(comm_id, delta["msg_id"])
            rec.capture_msg_id = delta["msg_id"]
        keys = merge_state(rec.state, copy.deepcopy(delta))
        for k in keys:
            rec.key_times[k] = now
        rec.updates += 1
        return keys

    def echo(self, comm_id: str, delta: Any) -> bool:
        """echo_update: relayed but never stored; kept in a display-only shadow."""
        rec = self.comms.get(comm_id)
        if rec is None:
            self._orphan(comm_id, "echo_update")
            return False
        if rec.echo_shadow is None:
            rec.echo_shadow = copy.deepcopy(rec.state) if isinstance(rec.state, dict) else {}
        merge_state(rec.echo_shadow, copy.deepcopy(delta))
        rec.echo_updates += 1
        return True

    def close(self, comm_id: str) -> CommRecord | None:
        self._uncapture(comm_id)
        return self.comms.pop(comm_id, None)

    def clear(self) -> None:
        self.comms.clear()
        self.next_seq = 0
        self.capture_stacks.clear()
        self.capturing.clear()

    def note_orphan(self, comm_id: str, method: str) -> None:
        self._orphan(comm_id, method)

    # -- captured outputs (client-side record of the synthetic custom broadcasts) -------------

    def capture_output(self, comm_id: str, output: Any) -> bool:
        rec = self.comms.get(comm_id)
        if rec is None or not rec.is_output_widget:
            return False
        if rec.captured is not None:
            if rec.pending_clear:
                rec.captured = [output]
            else:
                rec.captured.append(output)
        rec.pending_clear = False
        return True

    def capture_clear(self, comm_id: str, wait: bool) -> bool:
        rec = self.comms.get(comm_id)
        if rec is None or not rec.is_output_widget:
            return False
        if wait:
            rec.pending_clear = True
        else:
            if rec.captured is not None:
                rec.captured = []
            rec.pending_clear = False
        return True

    # -- capture stack (daemon routing) ----------------------------------------------------

    def capture_target(self, msg_id: str) -> str | None:
        stack = self.capture_stacks.get(msg_id)
        return stack[-1] if stack else None

    def _set_capture(self, comm_id: str, msg_id: str) -> None:
        self._uncapture(comm_id)
        if msg_id:
            self.capture_stacks.setdefault(msg_id, []).append(comm_id)
            self.capturing[comm_id] = msg_id

    def _uncapture(self, comm_id: str) -> None:
        old = self.capturing.pop(comm_id, None)
        if old is None:
            return
        stack = self.capture_stacks.get(old, [])
        if comm_id in stack:
            stack.remove(comm_id)
        if not stack:
            self.capture_stacks.pop(old, None)

    def _orphan(self, comm_id: str, method: str) -> None:
        per = self.orphans.setdefault(comm_id, {})
        per[method] = per.get(method, 0) + 1

    # -- reading ------------------------------------------------------------------------------

    def ordered(self) -> list[CommRecord]:
        """Open order (dict insertion order equals ascending seq)."""
        return list(self.comms.values())


def apply_iopub_comm(table: CommTable, msg_type: str, content: dict[str, Any], buffers: list[bytes],
                     now: float | None = None) -> str:
    """Apply one comm message (IOPub or `comm` broadcast) to a table; return what it did.

    Returns one of: "open", "update", "echo", "close", "custom", "orphan", "ignored".
    """
    comm_id = content.get("comm_id")
    if not isinstance(comm_id, str):
        return "ignored"
    data = content.get("data") if isinstance(content.get("data"), dict) else {}
    if msg_type == "comm_open":
        table.open(comm_id, str(content.get("target_name", "")), data.get("state", {}), buffers, now)
        return "open"
    if msg_type == "comm_close":
        return "close" if table.close(comm_id) is not None else "orphan"
    if msg_type == "comm_msg":
        method = data.get("method")
        if method == "update" and "state" in data:
            return "update" if table.update(comm_id, data["state"], now) is not None else "orphan"
        if method == "echo_update":
            return "echo" if table.echo(comm_id, data.get("state", {})) else "orphan"
        if comm_id not in table.comms:
            table.note_orphan(comm_id, str(method))
            return "orphan"
        return "custom"
    return "ignored"
