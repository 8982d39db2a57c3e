"""Property fuzzing of every decoder of daemon input: the frame codec, each message decoder,
presence, the change-op decoder and the sync path (`DocReplica.receive` and the reader after
it). Random bytes, structure-aware JSON/CBOR, and mutations of real frames; the only
exceptions allowed out are the project's own (see conftest.feed)."""

from __future__ import annotations

import json
import struct
from typing import Any

import cbor2
import msgspec
from automerge import core as am
from hypothesis import given
from hypothesis import strategies as st
from scripted_daemon import build_doc

from inspector.change_ops import decode_change, encode_uleb
from inspector.document import ALL, DocReplica, NotebookReader
from inspector.errors import InspectorError
from inspector.protocol import messages as m
from inspector.protocol.framing import FrameDecoder, encode_frame, parse_preamble, split_typed
from inspector.protocol.presence import decode_presence, encode_presence

from .conftest import count_project_error, feed

S = am.ScalarType

# --------------------------------------------------------------------------- seeds: real frames


def _seed_messages() -> tuple[list[bytes], list[bytes]]:
    """Sync messages of a real join and of later updates, and the change chunks they carry."""
    cells = [{"id": f"c{i}", "position": f"{0x80 + i:02X}", "source": f"x = {i}"} for i in range(3)]
    comms = {"w": {"model_name": "IntSliderModel", "state": {"value": 1}, "seq": 0}}
    src = build_doc(cells, schema=3, comms=comms)
    peer, s_src, s_peer = am.Document(), am.SyncState(), am.SyncState()
    msgs: list[bytes] = []

    def pump() -> None:
        for _ in range(20):
            out = src.generate_sync_message(s_src)
            if out is not None:
                msgs.append(out.encode())
                peer.receive_sync_message(s_peer, out)
            back = peer.generate_sync_message(s_peer)
            if back is not None:
                src.receive_sync_message(s_src, back)
            if out is None and back is None:
                return

    pump()
    w = src.get(src.get(am.ROOT, "comms")[1], "w")[1]
    for i in range(3):
        with src.transaction() as tx:
            tx.put(w, "state", S.Str, json.dumps({"value": i}))
            obj = tx.put_object(w, f"extra{i}", am.ObjType.Map)
            tx.put(obj, "k", S.Int, i)
        pump()
    return msgs, [c.raw_bytes for c in src.get_changes([])]


SYNC_SEEDS, CHANGE_SEEDS = _seed_messages()
BROADCAST_SEEDS = [
    m.encode(m.KernelStatus(status="busy", cell_id="c1")),
    m.encode(m.Comm(msg_type="comm_msg", content={"comm_id": "w", "data": {"method": "update", "state": {"v": 1}}},
                    buffers=[[1, 2, 3]])),
    m.encode(m.CommSync(comms=[m.CommSnapshot(comm_id="w", target_name="jupyter.widget", state={"value": 1})])),
    b'{"event":"output","cell_id":"c","output_type":"stream","output_json":"{}"}',
]
PRESENCE_SEEDS = [
    encode_presence({"type": "update", "peer_id": "p1", "channel": "cursor", "data": {"cell_id": "c1", "line": 3}}),
    cbor2.dumps({"type": "snapshot", "peer_id": "d", "peers": [{"peer_id": "a", "peer_label": "A",
                                                               "channels": [{"channel": "focus", "data": {}}]}]}),
    cbor2.dumps({"type": "left", "peer_id": "p1"}),
]


@st.composite
def mutated(draw: Any, seeds: list[bytes]) -> bytes:
    """A real frame with byte flips, insertions, deletions or a truncation."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate", "leb")))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from((0x00, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255)))))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos: pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        elif op == "leb":  # a huge LEB128 count where a small one was
            data[pos:pos + 1] = b"\xff" * draw(st.integers(1, 12)) + b"\x01"
    return bytes(data)


JSON_LEAF = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
JSON = st.recursive(JSON_LEAF, lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=20)
TAGS = {"event": ["kernel_status", "comm", "comm_sync", "output", "display_update", "queue_changed",
                  "env_progress", "file_changed", "new_thing"],
        "result": ["doc_bytes", "kernel_info", "queue_state", "error", "ok"],
        "type": ["pong", "rooms_list", "daemon_info", "stats", "notebook_state", "ping", "list_rooms"],
        "action": ["get_kernel_info", "send_comm", "launch_kernel"],
        "channel": ["notebook_sync", "pool", "open_notebook"]}


@st.composite
def tagged_json(draw: Any) -> bytes:
    """A JSON object with a real tag and random fields: reaches the typed validation paths."""
    key = draw(st.sampled_from(sorted(TAGS)))
    obj = draw(st.dictionaries(st.sampled_from(["cell_id", "status", "comms", "content", "buffers", "rooms",
                                                "msg_type", "bytes", "state", "comm_id", "x"]), JSON, max_size=5))
    obj[key] = draw(st.sampled_from(TAGS[key]))
    return json.dumps(obj).encode()


def deep(depth: int, open_: bytes, close: bytes) -> bytes:
    return open_ * depth + close * depth


MESSAGE_DECODERS = (m.decode_handshake, m.decode_request, m.decode_response, m.decode_broadcast,
                    m.decode_pool_request, m.decode_pool_response, m.decode_json)

# --------------------------------------------------------------------------- frame codec


@given(st.lists(st.binary(max_size=64), max_size=12), st.integers(1, 1 << 20))
def test_frame_decoder_on_random_chunks(chunks: list[bytes], limit: int) -> None:
    dec = FrameDecoder(limit)

    def run() -> list[bytes]:
        out: list[bytes] = []
        for c in chunks:
            out += dec.feed(c)
        for p in out:
            if p:
                split_typed(p)
        return out

    feed("frame codec", run)
    feed("frame codec", parse_preamble, b"".join(chunks)[:5])


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_frame_decoder_returns_every_payload_whatever_the_split(payloads: list[bytes], data: Any) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec, got, last = FrameDecoder(), [], 0
    for c in [*cuts, len(stream)]:
        got += feed("frame codec", dec.feed, stream[last:c])
        last = c
    assert got == payloads and dec.at_boundary()


# --------------------------------------------------------------------------- messages


def _decode_all(data: bytes) -> None:
    for decode in MESSAGE_DECODERS:
        out = feed("message decoders", decode, data)
        if not isinstance(out, InspectorError):
            msgspec.json.encode(m.to_builtins(out) if not isinstance(out, m.Unknown) else out.raw)


@given(st.binary(max_size=200))
def test_message_decoders_on_random_bytes(data: bytes) -> None:
    _decode_all(data)


@given(tagged_json() | mutated(BROADCAST_SEEDS) | st.builds(json.dumps, JSON).map(str.encode))
def test_message_decoders_on_structured_json(data: bytes) -> None:
    _decode_all(data)


@given(st.integers(1, 3000), st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
def test_message_decoders_on_deep_nesting(depth: int, brackets: tuple[bytes, bytes]) -> None:
    inner = deep(depth, *brackets) if brackets[0] == b"[" else brackets[0] * depth + b"1" + brackets[1] * depth
    _decode_all(b'{"event":"comm","msg_type":"comm_msg","content":{"comm_id":"c","data":' + inner + b"}}")


# --------------------------------------------------------------------------- presence


CBOR_LEAF = JSON_LEAF | st.binary(max_size=8) | st.just(cbor2.undefined) | st.builds(cbor2.CBORSimpleValue,
                                                                                      st.integers(32, 255))
CBOR = st.recursive(CBOR_LEAF, lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.text(max_size=6) | st.integers(0, 9), kids, max_size=4)
                    | st.builds(cbor2.CBORTag, st.integers(40, 999), kids), max_leaves=20)


@st.composite
def presence_maps(draw: Any) -> bytes:
    obj = draw(st.dictionaries(st.sampled_from(["peer_id", "channel", "data", "peers", "peer_label"]), CBOR,
                               max_size=4))
    obj["type"] = draw(st.sampled_from(["update", "snapshot", "left", "heartbeat", "other"]) | CBOR)
    return cbor2.dumps(obj)


@given(st.binary(max_size=200) | presence_maps() | mutated(PRESENCE_SEEDS))
def test_presence_decoder(data: bytes) -> None:
    out = feed("presence", decode_presence, data)
    if not isinstance(out, InspectorError):
        msgspec.json.encode(out.raw)
        for peer in out.peers:  # what the session iterates
            list(peer.get("channels", []))


# --------------------------------------------------------------------------- change ops


@given(mutated(CHANGE_SEEDS) | st.binary(max_size=120).map(lambda b: b"\x85\x6f\x4a\x83" + b))
def test_change_op_decoder(data: bytes) -> None:
    feed("change ops", decode_change, data)


# --------------------------------------------------------------------------- the sync path


def _receive_and_read(messages: list[bytes]) -> None:
    rep, reader = DocReplica("notebook", 0, 3), NotebookReader()
    for body in messages:
        try:
            _, dirty = rep.receive(body)
        except InspectorError:
            count_project_error("sync path")
            continue  # the session reconnects: a fresh replica (here: the next message on this one)
        reader.refresh(rep.doc, dirty)
        rep.take_problems()
    reader.refresh(rep.doc, {ALL})
    rep.change_actors()


@given(st.lists(mutated(SYNC_SEEDS) | st.sampled_from(SYNC_SEEDS), min_size=1, max_size=4))
def test_sync_path_on_mutated_real_messages(messages: list[bytes]) -> None:
    feed("sync path", _receive_and_read, messages)


@given(st.binary(max_size=160).map(lambda b: bytes([0x42]) + b) | st.binary(max_size=160))
def test_sync_path_on_random_bytes(body: bytes) -> None:
    feed("sync path", _receive_and_read, [body])


@st.composite
def bloom_messages(draw: Any) -> bytes:
    """Valid framing around hostile `have` bloom filters (the field that made Automerge panic)."""
    entries, bits, probes = draw(st.integers(0, 40)), draw(st.integers(0, 12)), draw(st.integers(0, 12))
    nbytes = draw(st.sampled_from([(entries * bits + 7) // 8, draw(st.integers(0, 20))]))
    bloom = bytes([entries, bits, probes]) + draw(st.binary(min_size=nbytes, max_size=nbytes))
    change = draw(st.sampled_from(CHANGE_SEEDS[:1]))
    return (bytes([0x42, 0, 0, 1, 0, len(bloom)]) + bloom + bytes([1]) + _leb(len(change)) + change)


_leb = encode_uleb


@given(bloom_messages())
def test_sync_path_on_hostile_bloom_filters(body: bytes) -> None:
    feed("sync path", _receive_and_read, [body])


def test_the_seeds_are_real() -> None:
    assert len(SYNC_SEEDS) >= 4 and len(CHANGE_SEEDS) >= 4
    assert struct.unpack(">I", encode_frame(b"ab")[:4]) == (2,)
