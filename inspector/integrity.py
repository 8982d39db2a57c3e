"""One integrity report per snapshot: references, liveness, buffers, document pointers and,
when the notebook file is known, the saved widget state. Everything here is a fact about one
view of the room (a warning), never a divergence between views: `check` may print these
without changing its exit code."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import msgspec

from .doc_pointers import PointerReport, check_snapshot_pointers
from .liveness import ORPHANED, WINDOW_S, KernelEvidence, LivenessReport, LivenessTracker
from .references import SETTLE_S, ReferenceGraph, ReferenceTracker
from .saved_state import SavedComparison, SavedState, SavedView, compare_saved
from .snapshot import Snapshot
from .widget_buffers import BufferRef, find_buffer_refs


class IntegrityReport(msgspec.Struct, frozen=True):
    references: ReferenceGraph
    liveness: LivenessReport
    buffers: tuple[BufferRef, ...]
    pointers: PointerReport
    saved: SavedComparison | None = None
    saved_views: tuple[SavedView, ...] = ()  # saved views a reopened notebook could not restore
    taken_at: float = 0.0

    @property
    def saved_source(self) -> str:
        return self.saved.source if self.saved is not None else "?"

    def warnings(self) -> tuple[str, ...]:
        """One line per finding, for `check` and the status bar."""
        out = [f.detail for f in self.references.findings]
        out += [f"comm {c.comm_id} is orphaned: {c.reason}" for c in self.liveness.comms
                if c.liveness == ORPHANED and not c.provisional]
        out += [f"kernel comm {cid} is not in the room" for cid in self.liveness.missing_in_room]
        out += [f"document pointer {c.name}: {c.status} ({c.pointer!r} vs joined {c.joined!r})"
                for c in self.pointers.findings]
        out += [f"buffer {b.comm_id}/{'/'.join(b.path)}: {b.error}" for b in self.buffers if b.error]
        out += [f"saved notebook {self.saved_source}: cell {v.cell_id} output {v.output_index} shows model "
                f"{v.model_id}, which the saved widget state lacks" for v in self.saved_views]
        if self.saved is not None and self.saved.differences:
            n = len(self.saved.differences)
            out.append(f"saved notebook {self.saved.source}: {n} widget{'s' if n != 1 else ''} differ from the room")
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


class IntegrityTracker:
    """Feed it every snapshot (with its time); it keeps the first-seen times the reference
    graph and the liveness classes need."""

    def __init__(self, settle_s: float = SETTLE_S, window_s: float = WINDOW_S) -> None:
        self.references = ReferenceTracker(settle_s)
        self.liveness = LivenessTracker(window_s)
        self._buffers: dict[str, Any] = {}

    def update(self, snapshot: Snapshot, *, now: float | None = None, kernel: KernelEvidence | None = None,
               executions: Collection[str] | None = None, saved: SavedState | None = None,
               joined_notebook_id: str | None = None,
               capabilities: Mapping[str, Any] | None = None) -> IntegrityReport:
        now = snapshot.taken_at if now is None else now
        return IntegrityReport(
            references=self.references.update(snapshot, now, executions),
            liveness=self.liveness.update(snapshot, kernel, now),
            buffers=find_buffer_refs(snapshot, self._buffers),
            pointers=check_snapshot_pointers(snapshot, joined_notebook_id, capabilities),
            saved=compare_saved(saved, snapshot) if saved is not None else None,
            saved_views=saved.unrestorable_views if saved is not None else (),
            taken_at=now,
        )
