"""`bokeh_session_patch` broadcasts: a widget-like state path of its own, not a comm.

Upstream `NotebookBroadcast::BokehSessionPatch { patch: BokehSessionPatchEvent }`
(`crates/notebook-protocol/src/protocol.rs`, #3994): one canonical, ordered Bokeh document
transaction from the kernel. Topology and replay pointers live in the RuntimeStateDoc; the
broadcast only speeds delivery, so a lost one is not a divergence. The message model does
not know the event yet (it decodes as `Unknown`); `decode_bokeh_patch` reads it from that
raw dict, and `is_comm_broadcast` tells the counters what to leave out.
"""

from __future__ import annotations

from typing import Any

import msgspec

EVENT = "bokeh_session_patch"


class BokehBufferRef(msgspec.Struct, frozen=True):
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


class BokehPatchError(ValueError):
    pass


_dec = msgspec.convert


def decode_bokeh_patch(raw: Any) -> BokehPatchEvent:
    """The `patch` of a `{"event": "bokeh_session_patch", "patch": {...}}` broadcast."""
    if not isinstance(raw, dict) or raw.get("event") != EVENT:
        raise BokehPatchError("not a bokeh_session_patch broadcast")
    try:
        return _dec(raw.get("patch"), BokehPatchEvent)
    except msgspec.ValidationError as exc:
        raise BokehPatchError(f"malformed bokeh_session_patch: {exc}") from None


def is_comm_broadcast(raw: Any) -> bool:
    """Only `comm` events are widget comms; a Bokeh patch is counted on its own."""
    return isinstance(raw, dict) and raw.get("event") == "comm"
