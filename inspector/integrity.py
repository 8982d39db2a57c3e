"""One integrity report per snapshot: references, liveness, buffers, document pointers and,
when the notebook file is known, the saved widget state. Everything here is a fact about one
view of the room (a warning), never a divergence between views: `check` may print these
without changing its exit code."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from .divergence import CompareViews
from .doc_pointers import PointerReport, check_snapshot_pointers
from .liveness import ORPHANED, WINDOW_S, KernelEvidence, LivenessReport, LivenessTracker
from .references import SETTLE_S, ReferenceGraph, ReferenceTracker
from .saved_state import (
    SavedComparison,
    SavedState,
    SavedStateError,
    SavedView,
    compare_saved,
    read_saved_state,
)
from .snapshot import Snapshot
from .widget_buffers import BufferRef, describe, find_buffer_refs

if TYPE_CHECKING:
    from .session_core import SessionCore

# (bytes or None, media type the server reported, error): the v4 room's blob getter
BlobGet = Callable[[str], tuple[bytes | None, str | None, str | None]]


class IntegrityReport(msgspec.Struct, frozen=True):
    references: ReferenceGraph
    liveness: LivenessReport
    buffers: tuple[BufferRef, ...]
    pointers: PointerReport
    saved: SavedComparison | None = None
    saved_views: tuple[SavedView, ...] = ()  # saved views a reopened notebook could not restore
    saved_error: str | None = None  # the room's notebook file could not be read
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
        if self.saved_error:
            out.append(self.saved_error)
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


@dataclass(frozen=True)
class IntegrityOptions:
    """The integrity option of a session (`SessionConfig.integrity`)."""

    settle_s: float = SETTLE_S
    window_s: float = WINDOW_S
    saved_path: str | None = None  # the notebook file to compare; None: the room's own file, when on disk


class SessionIntegrity:
    """Fills each snapshot's `integrity` block for one connection (a reconnect gets a fresh
    one, like the divergence binding). Computed only when a snapshot is taken, so the window's
    coalesced refresh sets the rate, not the frame rate."""

    def __init__(self, core: SessionCore, options: IntegrityOptions) -> None:
        self.core = core
        self.options = options
        self.tracker = IntegrityTracker(options.settle_s, options.window_s)
        self._saved: tuple[tuple[str, int, int], SavedState] | None = None
        self._described: dict[tuple[str, str, tuple[str, ...]], BufferRef] = {}
        self._due: float | None = None  # core clock: when a pending reference or half comm ripens

    # -- inputs the session holds ------------------------------------------------------------------

    def _room(self) -> Any:
        return getattr(self.core.profile, "room", None)  # the v4 profile's joined room; v2 has none

    def _kernel(self) -> KernelEvidence | None:
        tap = self.core.tap
        if tap is None:
            return None
        # complete=False: the tap may have joined after the kernel opened comms, so absence proves nothing
        status = tap.state if tap.state in ("shutdown", "dead") else None
        return KernelEvidence(status=status, comms={cid: r.target_name for cid, r in tap.table.comms.items()},
                              complete=False)

    def _executions(self) -> Collection[str] | None:
        room = self._room()
        return room.runtime.executions.keys() if room is not None else None

    def saved_path(self) -> str | None:
        """The notebook file compared: the one given, else the room's own (v4 `list_rooms`)."""
        if self.options.saved_path:
            return self.options.saved_path
        probe = self.core.probe
        info = probe.room(self.core.config.notebook_id) if probe is not None else None
        path = getattr(info, "notebook_path", None)
        return path if isinstance(path, str) and path.endswith(".ipynb") and os.path.isfile(path) else None

    def _read_saved(self) -> tuple[SavedState | None, str | None]:
        path = self.saved_path()
        if path is None:
            return None, None
        try:
            st = os.stat(path)
        except OSError as exc:
            return None, f"saved notebook {path}: {exc.strerror or exc}"
        key = (path, st.st_mtime_ns, st.st_size)
        if self._saved is None or self._saved[0] != key:  # re-read only when the file changed
            try:
                self._saved = (key, read_saved_state(path))
            except SavedStateError as exc:
                self._saved = None
                return None, str(exc)
        return self._saved[1], None

    def _blob_get(self) -> BlobGet | None:
        room = self._room()
        blobs = getattr(room, "blobs", None) if room is not None else None
        return blobs if callable(blobs) else None  # the v4 room's getter (None: blobs not resolved)

    def _resolve(self, refs: tuple[BufferRef, ...]) -> tuple[BufferRef, ...]:
        get = self._blob_get()
        if get is None:
            return refs
        current = {(r.blob, r.comm_id, r.path) for r in refs}
        for gone in [k for k in self._described if k not in current]:
            del self._described[gone]  # what the room no longer references is not kept
        out = []
        for ref in refs:
            if not ref.blob or ref.error:
                out.append(ref)
                continue
            key = (ref.blob, ref.comm_id, ref.path)
            done = self._described.get(key)
            if done is None or done.writer != ref.writer:
                data, served, err = get(ref.blob)
                if data is None:
                    out.append(msgspec.structs.replace(ref, error=err or "blob not available"))
                    continue  # not cached: a blob server that comes back is asked again
                done = describe(ref, data, served)
                self._described[key] = done
            out.append(done)
        return tuple(out)

    def saved_state(self) -> SavedState | None:
        """The saved notebook last read (the window shows its values as one more view)."""
        return self._saved[1] if self._saved is not None else None

    def blob_bytes(self, digest: str) -> bytes | None:
        """The bytes of a blob already resolved for a snapshot (the window's preview and hex
        view); the room's blob getter keeps them, so this never fetches."""
        get = self._blob_get()
        if get is None or not any(k[0] == digest for k in self._described):
            return None
        data, _served, _err = get(digest)
        return data

    # -- per snapshot ---------------------------------------------------------------------------

    def report(self, snapshot: Snapshot) -> IntegrityReport:
        saved, saved_error = self._read_saved()
        # timed by the session's clock, not the wall: a recording replayed gives the same report
        now = self.core.clock()
        rep = self.tracker.update(snapshot, now=now, kernel=self._kernel(),
                                  executions=self._executions(), saved=saved,
                                  joined_notebook_id=self.core.config.notebook_id,
                                  capabilities=self.core.capabilities)
        self._schedule(rep, now)
        return msgspec.structs.replace(rep, buffers=self._resolve(rep.buffers), saved_error=saved_error)

    def _schedule(self, rep: IntegrityReport, now: float) -> None:
        ripe = [seen + self.options.settle_s for seen in self.tracker.references.first_seen.values()
                if seen + self.options.settle_s > now]
        ripe += [c.since + self.options.window_s for c in rep.liveness.comms
                 if c.since is not None and (c.provisional or not (c.has_state and c.has_topology))
                 and c.since + self.options.window_s > now]
        if ripe:
            self._due = min(ripe) + 0.01
        elif self.tracker.references.first_seen:
            self._due = now + 1.0  # findings stay: how long they have been unresolved moves on
        else:
            self._due = None

    def next_deadline(self) -> float | None:
        """When a new snapshot could show a new finding although nothing changed (core clock)."""
        return self._due

    def due(self, t: float) -> bool:
        """`t` is past the deadline: the core marks its snapshot stale and forgets the deadline."""
        if self._due is not None and t >= self._due:
            # the next snapshot reschedules; until one is taken, ages of findings still move on
            self._due = t + 1.0 if self.tracker.references.first_seen else None
            return True
        return False

    def apply_to(self, snapshot: Snapshot) -> Snapshot:
        return msgspec.structs.replace(snapshot, integrity=self.report(snapshot))


SAVED = "saved"  # the source name of the saved notebook's widget state in a comparison


def with_saved(views: CompareViews | None, saved: SavedState | None, comm_id: str) -> CompareViews | None:
    """`views` with the saved notebook's widget state of the comm as one more source."""
    model = saved.models.get(comm_id) if views is not None and saved is not None else None
    if views is None or model is None:
        return views
    return CompareViews((*views.sources, SAVED), {**views.values, SAVED: {k: (v, None) for k, v in model.state.items()}},
                        views.meta)
