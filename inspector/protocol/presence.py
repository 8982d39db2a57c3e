"""Presence frames (0x04): CBOR maps tagged by `type` (update, snapshot, left, heartbeat).

Decoding keeps unknown `type`s and channels; encoding reproduces the daemon's shapes
(`update` as an indefinite-length map, the others definite).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import cbor2

from ..errors import MAX_DEPTH, BadContent

KNOWN_TYPES = ("update", "snapshot", "left", "heartbeat")
KNOWN_CHANNELS = ("cursor", "selection", "kernel_state", "custom", "focus")


class PresenceError(BadContent, ValueError):
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
    """CBOR values as JSON-able Python: byte strings become int lists (as serde would show them),
    map keys strings, `undefined`, tags and simple values None or their string form.

    Iterative, so a hostile nesting depth costs no stack (cbor2 itself stops at its own limit)."""
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int]] = [(value, root, 0, 0)]
    while stack:
        v, parent, slot, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PresenceError(f"presence nested deeper than {MAX_DEPTH} levels")
        if isinstance(v, dict):
            out: Any = {}
            for k, item in v.items():
                key = k if isinstance(k, str) else str(k)
                out[key] = None
                stack.append((item, out, key, depth + 1))
        elif isinstance(v, list | tuple):
            out = [None] * len(v)
            stack.extend((item, out, i, depth + 1) for i, item in enumerate(v))
        elif isinstance(v, bytes | bytearray):
            out = list(v)
        elif v is None or isinstance(v, bool | int | float | str):
            out = v
        elif isinstance(v, cbor2.CBORTag):
            stack.append((v.value, parent, slot, depth + 1))
            continue
        else:  # undefined, simple values, dates, decimals...: shown, never trusted
            out = None if v is cbor2.undefined else str(v)
        parent[slot] = out
    return root[0]


def decode_presence(body: bytes) -> Presence:
    try:
        value = cbor2.loads(body)
    except RecursionError:
        raise PresenceError(f"CBOR nested deeper than {MAX_DEPTH} levels", data=body) from None
    except Exception as exc:  # cbor2 raises several types
        raise PresenceError(f"CBOR decode error: {exc}", data=body) from None
    if not isinstance(value, dict):
        raise PresenceError(f"presence is not a CBOR map (got {type(value).__name__})", data=body)
    try:
        raw = _plain(value)
    except PresenceError as exc:
        raise PresenceError(str(exc), data=body) from None
    ptype = raw.get("type")
    if not isinstance(ptype, str):
        raise PresenceError("presence map has no 'type'", data=body)
    peer = raw.get("peer_id")
    peers: tuple[dict[str, Any], ...] = ()
    if ptype == "snapshot":
        listed = raw.get("peers", [])
        if not isinstance(listed, list):
            raise PresenceError(f"presence snapshot 'peers' is not an array (got {type(listed).__name__})",
                                data=body)
        peers = tuple(p for p in listed if isinstance(p, dict))
        if any(not isinstance(p.get("channels", []), list) for p in peers):
            raise PresenceError("presence snapshot has a peer whose 'channels' is not an array", data=body)
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
