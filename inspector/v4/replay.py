"""Replay a captured v4 frame log (`frames.jsonl`: one decoded frame per line, binary payloads
as hex) through the frame codec, the message models and one `V4Room` per connection.

Both directions feed the connection's replicas, each with its own sync state, so a replayed
room holds what both peers of that connection held: the daemon's changes and the client's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from automerge import core as am

from ..document import ALL
from ..protocol import framing
from ..protocol import messages as m
from ..protocol.presence import decode_presence
from .room import DOC_FRAMES, V4Room


@dataclass
class ReplayConn:
    conn: int
    room: V4Room = field(default_factory=V4Room)
    handshake: dict[str, Any] | None = None
    bootstrap: dict[str, Any] | None = None
    preamble_version: int | None = None
    broadcasts: list[Any] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    control: list[dict[str, Any]] = field(default_factory=list)
    presence: list[Any] = field(default_factory=list)
    unknown: list[tuple[int, bytes]] = field(default_factory=list)
    doc_messages: dict[str, int] = field(default_factory=dict)
    untyped: list[Any] = field(default_factory=list)  # pool / settings channels
    _c2s_states: dict[int, Any] = field(default_factory=dict)

    def feed_payload(self, direction: str, payload: bytes) -> None:
        tf = framing.split_typed(payload)
        ft, body = tf.frame_type, tf.body
        if ft in DOC_FRAMES:
            name = DOC_FRAMES[ft]
            self.doc_messages[name] = self.doc_messages.get(name, 0) + 1
            if direction == "s2c":
                self.room.receive(ft, body)
            else:
                # The client's own changes: same replica, a second sync state for the other peer
                st = self._c2s_states.setdefault(ft, am.SyncState())
                rep = self.room.replicas[ft]
                before = rep.doc.get_heads()
                rep.doc.receive_sync_message(st, am.Message.decode(body))
                if rep.doc.get_heads() != before:
                    self.room.apply(ft, {ALL})
        elif ft == framing.FrameType.BROADCAST:
            self.broadcasts.append(m.decode_broadcast(body))
        elif ft == framing.FrameType.RESPONSE:
            self.responses.append(m.decode_response(body))
        elif ft == framing.FrameType.REQUEST:
            self.requests.append(m.decode_json(body))
        elif ft == framing.FrameType.SESSION_CONTROL:
            self.control.append(m.decode_json(body))
        elif ft == framing.FrameType.PRESENCE:
            self.presence.append(decode_presence(body))
        else:
            self.unknown.append((ft, body))


def _payload(rec: dict[str, Any]) -> bytes:
    if "hex" in rec:
        return bytes.fromhex(rec["hex"])
    body = json.dumps(rec["json"]).encode()
    ft = rec.get("frame_type")
    return body if ft is None else bytes([ft]) + body


def replay(lines: Iterable[str]) -> dict[int, ReplayConn]:
    """Every connection of a frame log, replayed; frames go through the codec byte stream."""
    conns: dict[int, ReplayConn] = {}
    decoders: dict[tuple[int, str], framing.FrameDecoder] = {}
    for line in lines:
        if not line.strip():
            continue
        rec = json.loads(line)
        conn = conns.setdefault(rec["conn"], ReplayConn(rec["conn"]))
        kind, direction = rec["kind"], rec["dir"]
        if kind == "preamble":
            conn.preamble_version = framing.parse_preamble(bytes.fromhex(rec["hex"]))
            continue
        if kind == "eof":
            continue
        dec = decoders.setdefault((rec["conn"], direction), framing.FrameDecoder())
        (payload,) = dec.feed(framing.encode_frame(_payload(rec)))
        if kind == "handshake":
            conn.handshake = m.decode_json(payload)
        elif kind == "json" and "hex" in rec:
            conn.untyped.append(payload)  # untyped binary frames: settings_sync Automerge messages
        elif kind == "json":
            msg = m.decode_json(payload)
            if direction == "s2c" and conn.bootstrap is None and conn.handshake and \
                    conn.handshake.get("channel") != "pool":
                conn.bootstrap = msg
            else:
                conn.untyped.append(msg)
        elif kind == "typed":
            if conn.bootstrap is None and direction == "s2c" and payload[0] == framing.FrameType.SESSION_CONTROL:
                conn.bootstrap = m.decode_json(payload[1:])
                continue
            conn.feed_payload(direction, payload)
    return conns


def replay_file(path: str) -> dict[int, ReplayConn]:
    with open(path) as fh:
        return replay(fh)
