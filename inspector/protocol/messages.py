"""The one JSON model of every runtimed message, as msgspec tagged structs.

Tag keys and names mirror the daemon's serde enums: `channel` for handshakes, `action` for
requests, `result` for responses, `event` for broadcasts, `type` for the pool channel and v4
session-control frames. Structs whose optional fields the daemon skips when None use
`omit_defaults=True`; structs whose `Option` fields serialize as `null` do not.
Byte arrays travel as JSON arrays of integers (`list[int]`), never base64.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

import msgspec

from ..errors import MAX_DEPTH, BadContent

# A byte of a buffer or document: JSON integers outside 0..255 are refused at decode time.
Byte = Annotated[int, msgspec.Meta(ge=0, le=255)]

# --------------------------------------------------------------------------- handshakes


class Pool(msgspec.Struct, tag_field="channel", tag="pool"):
    pass


class SettingsSync(msgspec.Struct, tag_field="channel", tag="settings_sync"):
    pass


class BlobChannel(msgspec.Struct, tag_field="channel", tag="blob"):
    pass


class PoolStateSubscribe(msgspec.Struct, tag_field="channel", tag="pool_state_subscribe"):
    pass


class NotebookSync(msgspec.Struct, tag_field="channel", tag="notebook_sync", omit_defaults=True):
    notebook_id: str
    protocol: str | None = None
    working_dir: str | None = None
    initial_metadata: str | None = None
    # v4 only
    typed_bootstrap: bool | None = None
    operator: str | None = None


class OpenNotebook(msgspec.Struct, tag_field="channel", tag="open_notebook", omit_defaults=True):
    path: str


class CreateNotebook(msgspec.Struct, tag_field="channel", tag="create_notebook", omit_defaults=True):
    runtime: str
    working_dir: str | None = None
    notebook_id: str | None = None


Handshake = Union[Pool, SettingsSync, BlobChannel, PoolStateSubscribe, NotebookSync, OpenNotebook, CreateNotebook]
NOTEBOOK_CHANNELS = (NotebookSync, OpenNotebook, CreateNotebook)

# --------------------------------------------------------------------------- handshake replies


class ProtocolCapabilities(msgspec.Struct, omit_defaults=True):
    protocol: str
    protocol_version: int | None = None
    daemon_version: str | None = None
    # v4 additions (kept when present)
    actor_label: str | None = None
    connection_scope: str | None = None
    comments_doc_id: str | None = None


class NotebookConnectionInfo(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Reply to open_notebook/create_notebook; serialized in the daemon's field order."""

    protocol: str
    protocol_version: int | None = None
    daemon_version: str | None = None
    notebook_id: str
    cell_count: int
    needs_trust_approval: bool
    error: str | None = None


# --------------------------------------------------------------------------- requests (0x01)


class _Req(msgspec.Struct, tag_field="action"):
    pass


class LaunchKernel(_Req, tag="launch_kernel"):
    kernel_type: str = "auto"
    env_source: str = "auto"
    notebook_path: str | None = None


class ExecuteCell(_Req, tag="execute_cell"):
    cell_id: str


class QueueCell(_Req, tag="queue_cell"):
    cell_id: str
    code: str


class ClearOutputs(_Req, tag="clear_outputs"):
    cell_id: str


class InterruptExecution(_Req, tag="interrupt_execution"):
    pass


class ShutdownKernel(_Req, tag="shutdown_kernel"):
    pass


class GetKernelInfo(_Req, tag="get_kernel_info"):
    pass


class GetQueueState(_Req, tag="get_queue_state"):
    pass


class RunAllCells(_Req, tag="run_all_cells"):
    pass


class SendComm(_Req, tag="send_comm"):
    message: dict[str, Any]


class GetDocBytes(_Req, tag="get_doc_bytes"):
    pass


class GetRawMetadata(_Req, tag="get_raw_metadata"):
    key: str


class GetMetadataSnapshot(_Req, tag="get_metadata_snapshot"):
    pass


Request = Union[
    LaunchKernel,
    ExecuteCell,
    QueueCell,
    ClearOutputs,
    InterruptExecution,
    ShutdownKernel,
    GetKernelInfo,
    GetQueueState,
    RunAllCells,
    SendComm,
    GetDocBytes,
    GetRawMetadata,
    GetMetadataSnapshot,
]
# The only requests an observer may send (they change nothing).
READ_ONLY_REQUESTS = (GetKernelInfo, GetQueueState, GetDocBytes, GetRawMetadata, GetMetadataSnapshot)

# --------------------------------------------------------------------------- responses (0x02)


class _Resp(msgspec.Struct, tag_field="result"):
    pass


class LaunchedEnvConfig(msgspec.Struct, omit_defaults=True):
    uv_deps: list[str] | None = None
    venv_path: str | None = None
    python_path: str | None = None
    launch_id: str | None = None


class KernelLaunched(_Resp, tag="kernel_launched"):
    kernel_type: str
    env_source: str
    launched_config: LaunchedEnvConfig


class KernelAlreadyRunning(_Resp, tag="kernel_already_running"):
    kernel_type: str
    env_source: str
    launched_config: LaunchedEnvConfig


class CellQueued(_Resp, tag="cell_queued"):
    cell_id: str


class OutputsCleared(_Resp, tag="outputs_cleared"):
    cell_id: str


class InterruptSent(_Resp, tag="interrupt_sent"):
    pass


class KernelShuttingDown(_Resp, tag="kernel_shutting_down"):
    pass


class NoKernel(_Resp, tag="no_kernel"):
    pass


class KernelInfo(_Resp, tag="kernel_info"):
    kernel_type: str | None
    env_source: str | None
    status: str


class QueueState(_Resp, tag="queue_state"):
    executing: str | None
    queued: list[str]


class AllCellsQueued(_Resp, tag="all_cells_queued"):
    count: int


class Ok(_Resp, tag="ok"):
    pass


class ErrorResponse(_Resp, tag="error"):
    error: str


class DocBytes(_Resp, tag="doc_bytes"):
    bytes: list[Byte]


class RawMetadata(_Resp, tag="raw_metadata"):
    value: str | None


class MetadataSnapshot(_Resp, tag="metadata_snapshot"):
    snapshot: str | None


Response = Union[
    KernelLaunched,
    KernelAlreadyRunning,
    CellQueued,
    OutputsCleared,
    InterruptSent,
    KernelShuttingDown,
    NoKernel,
    KernelInfo,
    QueueState,
    AllCellsQueued,
    Ok,
    ErrorResponse,
    DocBytes,
    RawMetadata,
    MetadataSnapshot,
]

# --------------------------------------------------------------------------- broadcasts (0x03)


class _Bc(msgspec.Struct, tag_field="event"):
    pass


class KernelStatus(_Bc, tag="kernel_status"):
    status: str
    cell_id: str | None = None


class ExecutionStarted(_Bc, tag="execution_started"):
    cell_id: str
    execution_count: int


class OutputBroadcast(_Bc, tag="output", omit_defaults=True):
    cell_id: str
    output_type: str
    output_json: str
    output_index: int | None = None


class DisplayUpdate(_Bc, tag="display_update"):
    display_id: str
    data: dict[str, Any]
    metadata: dict[str, Any]


class ExecutionDone(_Bc, tag="execution_done"):
    cell_id: str


class QueueChanged(_Bc, tag="queue_changed"):
    executing: str | None
    queued: list[str]


class KernelError(_Bc, tag="kernel_error"):
    error: str


class OutputsClearedBroadcast(_Bc, tag="outputs_cleared"):
    cell_id: str


class Comm(_Bc, tag="comm"):
    msg_type: str
    content: dict[str, Any]
    buffers: list[list[Byte]] = []


class CommSnapshot(msgspec.Struct, omit_defaults=True):
    comm_id: str
    target_name: str
    state: Any
    model_module: str | None = None
    model_name: str | None = None
    buffers: list[list[Byte]] = []


class CommSync(_Bc, tag="comm_sync"):
    comms: list[CommSnapshot]


class EnvProgress(_Bc, tag="env_progress"):
    """`EnvProgressPhase` is flattened into the event (its own tag key `phase`); the phase's
    fields vary, so events keep the raw JSON for display."""

    env_type: str
    phase: str


class EnvSyncDiff(msgspec.Struct):
    added: list[str]
    removed: list[str]
    channels_changed: bool
    deno_changed: bool


class EnvSyncState(_Bc, tag="env_sync_state", omit_defaults=True):
    in_sync: bool
    diff: EnvSyncDiff | None = None


class FileChanged(_Bc, tag="file_changed", omit_defaults=True):
    cells: list[dict[str, Any]]
    metadata: str | None = None


class BokehBufferRef(msgspec.Struct, frozen=True):
    """A blob-backed Bokeh serialization buffer (upstream `BokehSessionBufferRef`)."""

    id: str
    blob: str
    size: int
    media_type: str = "application/octet-stream"


class BokehPatchPayload(msgspec.Struct, frozen=True):
    patch: Any
    buffers: list[BokehBufferRef] = []


class BokehCheckpoint(msgspec.Struct, frozen=True):
    session_id: str
    revision: int
    document: Any
    buffers: list[BokehBufferRef] = []


class BokehPatchEvent(msgspec.Struct, frozen=True):
    """One canonical, ordered Bokeh document transaction from the kernel (upstream
    `BokehSessionPatchEvent`, #3994)."""

    session_id: str
    transaction_id: str
    base_revision: int
    revision: int
    client_patch: BokehPatchPayload | None = None
    server_patch: BokehPatchPayload | None = None
    checkpoint: BokehCheckpoint | None = None

    def summary(self) -> str:
        parts = [p for p, v in (("client patch", self.client_patch), ("server patch", self.server_patch),
                                ("checkpoint", self.checkpoint)) if v is not None]
        bufs = sum(len(p.buffers) for p in (self.client_patch, self.server_patch, self.checkpoint) if p is not None)
        return (f"bokeh session {self.session_id} r{self.base_revision}→r{self.revision} "
                f"({', '.join(parts) or 'empty'}{f', {bufs} buffer(s)' if bufs else ''})")


class BokehSessionPatch(_Bc, tag="bokeh_session_patch"):
    """Panel/Bokeh documents: a state path of their own, not a comm. Topology and replay
    pointers live in the RuntimeStateDoc; the broadcast only speeds delivery, so a lost one
    is not a divergence, and it is never counted as comm traffic."""

    patch: BokehPatchEvent


Broadcast = Union[
    KernelStatus,
    ExecutionStarted,
    OutputBroadcast,
    DisplayUpdate,
    ExecutionDone,
    QueueChanged,
    KernelError,
    OutputsClearedBroadcast,
    Comm,
    CommSync,
    EnvProgress,
    EnvSyncState,
    FileChanged,
    BokehSessionPatch,
]

# --------------------------------------------------------------------------- pool channel


class _PoolReq(msgspec.Struct, tag_field="type"):
    pass


class Ping(_PoolReq, tag="ping"):
    pass


class ListRooms(_PoolReq, tag="list_rooms"):
    pass


class PoolStatus(_PoolReq, tag="status"):
    pass


class InspectNotebook(_PoolReq, tag="inspect_notebook"):
    notebook_id: str


class GetDaemonInfo(_PoolReq, tag="get_daemon_info"):
    pass


class GetNotebookProjection(_PoolReq, tag="get_notebook_projection"):
    notebook_id: str


PoolRequest = Union[Ping, ListRooms, PoolStatus, InspectNotebook, GetDaemonInfo, GetNotebookProjection]


class RoomInfo(msgspec.Struct, omit_defaults=True):
    notebook_id: str
    active_peers: int = 0
    has_kernel: bool = False
    kernel_type: str | None = None
    env_source: str | None = None
    kernel_status: str | None = None
    # v4 additions
    had_peers: bool | None = None
    ephemeral: bool | None = None
    notebook_path: str | None = None
    state: str | None = None


class _PoolResp(msgspec.Struct, tag_field="type"):
    pass


class Pong(_PoolResp, tag="pong", omit_defaults=True):
    protocol_version: int | None = None
    daemon_version: str | None = None


class RoomsList(_PoolResp, tag="rooms_list"):
    rooms: list[RoomInfo]


class PoolError(_PoolResp, tag="error"):
    message: str


class Stats(_PoolResp, tag="stats", omit_defaults=True):
    stats: dict[str, Any] | None = None
    state: dict[str, Any] | None = None


class NotebookState(_PoolResp, tag="notebook_state", omit_defaults=True):
    notebook_id: str
    cells: list[dict[str, Any]]
    source: str
    kernel_info: dict[str, Any] | None = None
    outputs_by_cell: dict[str, Any] | None = None


class DaemonInfoResp(_PoolResp, tag="daemon_info", omit_defaults=True):
    protocol_version: int | None = None
    daemon_version: str | None = None
    pid: int | None = None
    started_at: str | None = None
    blob_port: int | None = None
    execution_store_dir: str | None = None


class NotebookProjection(_PoolResp, tag="notebook_projection"):
    projection: dict[str, Any]


PoolResponse = Union[Pong, RoomsList, PoolError, Stats, NotebookState, DaemonInfoResp, NotebookProjection]

# --------------------------------------------------------------------------- codecs

_enc = msgspec.json.Encoder()
_dec_any = msgspec.json.Decoder()


class Unknown(msgspec.Struct):
    """A well-formed JSON message whose tag we do not model: kept, shown, never fatal."""

    tag_key: str
    tag: str | None
    raw: Any


class MessageError(BadContent, ValueError):
    """Bytes that are not valid JSON, or JSON that does not fit the message's shape."""


def encode(msg: msgspec.Struct) -> bytes:
    return _enc.encode(msg)


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when containers in `value` nest deeper than `limit` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children: Any = v.values()
        elif isinstance(v, list | tuple):
            children = v
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list | tuple))
    return False


def decode_json(data: bytes) -> Any:
    """Any JSON value, UTF-8 checked and depth-bounded; MessageError for anything else."""
    try:
        raw = _dec_any.decode(data)
    except msgspec.DecodeError as exc:
        raise MessageError(f"invalid JSON: {exc}", data=data) from None
    except RecursionError:
        raise MessageError(f"JSON nested deeper than {MAX_DEPTH} levels", data=data) from None
    if too_deep(raw):
        raise MessageError(f"JSON nested deeper than {MAX_DEPTH} levels", data=data)
    return raw


def _decode(model: Any, tag_key: str, data: bytes) -> Any:
    # Untyped first, then converted: the typed decoder skips unknown fields unchecked (invalid
    # UTF-8 in an unknown key would pass here and fail in the next reader of the raw bytes).
    raw = decode_json(data)
    try:
        return msgspec.convert(raw, model)
    except msgspec.ValidationError as exc:
        tag = raw.get(tag_key) if isinstance(raw, dict) else None
        if isinstance(raw, dict) and isinstance(tag, str) and f"`$.{tag_key}`" in str(exc):
            return Unknown(tag_key, tag, raw)
        raise MessageError(f"malformed {tag_key}={tag!r} message: {exc}", data=data) from None


def encode_json(obj: Any) -> bytes:
    return _enc.encode(obj)


def decode_handshake(data: bytes) -> Handshake | Unknown:
    return _decode(Handshake, "channel", data)


def decode_request(data: bytes) -> Request | Unknown:
    return _decode(Request, "action", data)


def decode_response(data: bytes) -> Response | Unknown:
    return _decode(Response, "result", data)


def decode_broadcast(data: bytes) -> Broadcast | Unknown:
    return _decode(Broadcast, "event", data)


def decode_pool_request(data: bytes) -> PoolRequest | Unknown:
    return _decode(PoolRequest, "type", data)


def decode_pool_response(data: bytes) -> PoolResponse | Unknown:
    return _decode(PoolResponse, "type", data)


def to_builtins(msg: Any) -> Any:
    """Plain JSON-able form of a message (Unknown messages give back their raw dict)."""
    if isinstance(msg, Unknown):
        return msg.raw
    return msgspec.to_builtins(msg)


def tag_of(msg: Any) -> str:
    if isinstance(msg, Unknown):
        return msg.tag or "?"
    cfg = getattr(type(msg), "__struct_config__", None)
    return str(cfg.tag) if cfg is not None and cfg.tag is not None else type(msg).__name__
