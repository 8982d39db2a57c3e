"""The one snapshot type: what the replica, the feed and the engine hold at one instant.

The CLI prints it as JSON (`to_json`), the GUI renders the same object. All parts are
immutable msgspec structs so a snapshot can be handed to another thread or compared with
the previous one cheaply.
"""

from __future__ import annotations

from typing import Any

import msgspec


class DaemonView(msgspec.Struct, frozen=True):
    socket: str
    protocol: str | None = None
    protocol_version: int | None = None
    daemon_version: str | None = None
    actor_label: str | None = None  # v4: this connection's label
    blob_port: int | None = None


class OutputView(msgspec.Struct, frozen=True):
    """One cell or widget output: a manifest ref (v2 hash) or an inline manifest (v4)."""

    ref: str  # 64-hex manifest hash, v4 output_id, or "raw" for inline nbformat JSON
    manifest: dict[str, Any] | None = None
    error: str | None = None  # why the manifest is not resolved
    output_type: str | None = None
    resolved: dict[str, Any] | None = None  # MIME type / field -> resolved content (text or base64 marker)


class CellView(msgspec.Struct, frozen=True):
    id: str
    cell_type: str
    position: str
    source: str
    execution_count: int | None
    outputs: tuple[OutputView, ...]
    metadata: Any
    key: str = ""  # map key in `cells`
    flags: tuple[str, ...] = ()  # tolerated deviations (legacy metadata, id/key mismatch, ...)
    extra: dict[str, Any] = {}  # unknown keys, kept and shown
    execution_id: str | None = None  # v4
    obj_id: str = ""  # Automerge object id (hex) of the cell map


class CommView(msgspec.Struct, frozen=True):
    """One entry of the document's comms (v2/#808 map, or v4 topology joined with state)."""

    comm_id: str
    seq: int | None
    target_name: str | None
    model_module: str | None
    model_name: str | None
    state: Any  # parsed object, or the raw string when `state` is not valid JSON
    state_error: str | None
    outputs: tuple[OutputView, ...]
    flags: tuple[str, ...] = ()
    extra: dict[str, Any] = {}
    writer: str | None = None  # actor label of the last write to this entry
    key_writers: dict[str, str] = {}  # per state key (v4 native maps) -> actor label
    seq_type: str | None = None  # "Uint" | "Int" | ...
    capture_msg_id: str | None = None  # v4
    obj_id: str = ""


class FeedCommView(msgspec.Struct, frozen=True):
    comm_id: str
    target_name: str
    model_module: str | None
    model_name: str | None
    state: Any
    source: str = "comm_open"
    status: str = "live"
    buffers: tuple[int, ...] = ()  # sizes of open-time buffers
    captured: tuple[Any, ...] | None = None
    echo_shadow: dict[str, Any] | None = None


class FeedView(msgspec.Struct, frozen=True):
    received_comm_sync: bool
    comms: tuple[FeedCommView, ...]
    baseline: str = "pending"  # pending | comm_sync | empty | none (v4: no feed exists)
    generation: int = 0
    orphans: dict[str, dict[str, int]] = {}
    anomalies: tuple[str, ...] = ()


class KernelView(msgspec.Struct, frozen=True):
    status: str | None = None
    source: str = "broadcast"  # broadcast | presence | runtime_state
    lifecycle: str | None = None  # v4
    activity: str | None = None  # v4
    executing: str | None = None
    queued: tuple[str, ...] = ()
    error_reason: str | None = None


class KeyDiff(msgspec.Struct, frozen=True):
    key: str
    doc: Any = None
    feed: Any = None
    kernel: Any = None
    doc_age_ms: float | None = None
    feed_age_ms: float | None = None
    kernel_age_ms: float | None = None
    present: tuple[str, ...] = ()  # which sides hold the key
    values: dict[str, Any] = {}  # side name -> value, for any pair of views (v4: topology, state, ...)
    ages_ms: dict[str, float] = {}  # side name -> ms since that side last changed the key


class Divergence(msgspec.Struct, frozen=True):
    comm_id: str
    kind: str
    severity: str
    status: str  # pending | diverged | info
    keys: tuple[KeyDiff, ...] = ()
    since_ms: float = 0.0
    detail: str = ""
    sides: tuple[str, ...] = ()  # the two views compared, e.g. ("doc", "feed")
    moved: str | None = None  # the side that changed last (v4: "kernel" for send_comm echoes)
    model_name: str | None = None


class DocumentSummary(msgspec.Struct, frozen=True):
    """One synced Automerge document (v4 has five per room)."""

    name: str
    frame_type: int
    heads: tuple[str, ...]
    changes: int
    actors: tuple[str, ...]
    tree: Any = None  # plain JSON view, for the raw-tree display of secondary docs


class LifecycleView(msgspec.Struct, frozen=True):
    """The room's, the connection's and the kernel's lifecycle (docs/lifecycle.md)."""

    room: str = "open"  # open | gone (evicted or closed: the daemon no longer lists it)
    daemon: str = "connected"  # connecting | connected | reconnecting | stopped
    reconnect_in_s: float | None = None  # while reconnecting: the countdown to the next attempt
    kernel: str | None = None  # starting | idle | busy | dead | shutdown | restarting | ...
    kernel_restarts: int = 0
    gaps_s: tuple[float, ...] = ()  # each time the session was not live after being live, seconds
    disconnected_s: float = 0.0  # their sum, the current one included
    connections: int = 0


class Snapshot(msgspec.Struct, frozen=True):
    daemon: DaemonView
    notebook_id: str
    schema_version: int | None
    heads: tuple[str, ...]
    cells: tuple[CellView, ...]
    metadata: Any
    comms: tuple[CommView, ...]
    feed: FeedView
    kernel: KernelView
    divergence: tuple[Divergence, ...] = ()
    sources: tuple[str, ...] = ()
    documents: tuple[DocumentSummary, ...] = ()
    warnings: tuple[str, ...] = ()
    connection: str = "live"
    taken_at: float = 0.0  # wall clock, seconds since the epoch
    extra_root: dict[str, Any] = {}  # unknown root keys of the notebook doc
    # `inspector.integrity.IntegrityReport` when the session declares the integrity option (typed
    # Any: that module reads snapshots, so this one cannot import it)
    integrity: Any = None
    # The key history's figures (see docs/history.md): p50/p95/max and a histogram per hop, for
    # the room (`hops`) and per comm (`comms`); empty without a history.
    latency: dict[str, Any] = {}
    # The key history's findings (value_regression, noop_rewrite, flooding, slow_hop): warnings,
    # facts about how values travelled in one view or hop; they fail only `check --strict`.
    findings: tuple[dict[str, Any], ...] = ()
    lifecycle: LifecycleView = LifecycleView()

    def to_json(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)

    def encode(self) -> bytes:
        return msgspec.json.encode(self)
