"""Presence frames (0x04): CBOR maps tagged by `type` (update, snapshot, left, heartbeat).

Decoding keeps unknown `type`s and channels; encoding reproduces the daemon's shapes
(`update` as an indefinite-length map, the others definite).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import cbor2

KNOWN_TYPES = ("update", "snapshot", "left", "heartbeat")
KNOWN_CHANNELS = ("cursor", "selection", "kernel_state", "custom", "focus")


class PresenceError(ValueError):
    pass


@dataclass(frozen=True)
class Presence:
    type: str
    peer_id: str | None
    raw: dict[str, Any]
    known: bool = True
    peers: tuple[dict[str, Any], ...] = field(default=())

    @property
    def channel(self) -> str | None:
        ch = self.raw.get("channel")
        return ch if isinstance(ch, str) else None

    def summary(self) -> str:
        if self.type == "update":
            return f"{self.peer_id} {self.raw.get('peer_label') or ''} {self.channel}: {self.raw.get('data')!r}".strip()
        if self.type == "snapshot":
            return f"snapshot from {self.peer_id}: {len(self.peers)} peer(s)"
        return f"{self.type} {self.peer_id}"


def _plain(value: Any) -> Any:
    """CBOR values as JSON-able Python (byte strings become int lists, as serde would show them)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return list(value)
    return value


def decode_presence(body: bytes) -> Presence:
    try:
        value = cbor2.loads(body)
    except Exception as exc:  # cbor2 raises several types
        raise PresenceError(f"CBOR decode error: {exc}") from exc
    if not isinstance(value, dict):
        raise PresenceError(f"presence is not a CBOR map (got {type(value).__name__})")
    raw = _plain(value)
    ptype = raw.get("type")
    if not isinstance(ptype, str):
        raise PresenceError("presence map has no 'type'")
    peer = raw.get("peer_id")
    peers = tuple(p for p in raw.get("peers", []) if isinstance(p, dict)) if ptype == "snapshot" else ()
    return Presence(ptype, peer if isinstance(peer, str) else None, raw, ptype in KNOWN_TYPES, peers)


def _indefinite_map(items: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(b"\xbf")
    for k, v in items.items():
        buf.write(cbor2.dumps(k))
        buf.write(cbor2.dumps(v))
    buf.write(b"\xff")
    return buf.getvalue()


def encode_presence(msg: dict[str, Any]) -> bytes:
    """Encode as the daemon does: `update` indefinite-length, everything else definite."""
    if msg.get("type") == "update":
        return _indefinite_map(msg)
    return cbor2.dumps(msg)
