"""Frame codec, message model and presence decoding, byte for byte against the spec."""

from __future__ import annotations

import struct

import pytest

from inspector.protocol import messages as m
from inspector.protocol.framing import (
    DATA_FRAME_MAX,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    encode_frame,
    encode_typed,
    parse_preamble,
    preamble,
    split_typed,
)
from inspector.protocol.presence import PresenceError, decode_presence, encode_presence


def test_preamble_and_handshake_bytes_match_the_spec() -> None:
    hs = m.encode(m.NotebookSync(notebook_id="abc", protocol="v2"))
    data = preamble(2) + encode_frame(hs)
    assert hs == b'{"channel":"notebook_sync","notebook_id":"abc","protocol":"v2"}'
    assert data[:9].hex(" ") == "c0 de 01 ac 02 00 00 00 3f"  # length 63, wire-protocol §4
    assert parse_preamble(preamble(4)) == 4
    with pytest.raises(FrameError, match="invalid magic"):
        parse_preamble(b"\xc0\xde\x01\xad\x02")


def test_typed_request_frame_layout() -> None:
    frame = encode_typed(0x01, m.encode(m.GetKernelInfo()))
    assert frame[:5].hex(" ") == "00 00 00 1d 01"  # length 29 = 1 type byte + 28 JSON bytes
    tf = split_typed(frame[4:])
    assert (tf.frame_type, tf.type_name) == (1, "request")
    assert split_typed(b"\x0b").type_name == "unknown_0x0b"
    with pytest.raises(FrameError, match="empty frame"):
        split_typed(b"")


def test_decoder_handles_frames_split_at_every_byte() -> None:
    payloads = [b"\x00" + bytes(range(50)), b"\x03" + b'{"event":"kernel_status","status":"idle","cell_id":null}', b"\x04\xa0"]
    stream = b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder()
    got: list[bytes] = []
    for i in range(len(stream)):
        got += dec.feed(stream[i : i + 1])
        assert dec.pending <= len(stream)
    assert got == payloads
    assert dec.at_boundary()


def test_decoder_rejects_an_oversized_length_before_buffering() -> None:
    dec = FrameDecoder()
    with pytest.raises(FrameTooLarge) as exc:
        dec.feed(struct.pack(">I", DATA_FRAME_MAX + 1))
    assert exc.value.length == DATA_FRAME_MAX + 1
    assert "max 104857600" in str(exc.value)


def test_serde_shapes_of_broadcasts_and_responses() -> None:
    assert m.encode(m.KernelStatus(status="busy", cell_id="c1")) == b'{"event":"kernel_status","status":"busy","cell_id":"c1"}'
    # Option without skip_serializing_if is null; omitted-if-None fields are absent
    assert m.encode(m.KernelStatus(status="starting")) == b'{"event":"kernel_status","status":"starting","cell_id":null}'
    assert m.encode(m.OutputBroadcast(cell_id="c", output_type="stream", output_json="ab")) == \
        b'{"event":"output","cell_id":"c","output_type":"stream","output_json":"ab"}'
    assert m.encode(m.Comm(msg_type="comm_close", content={"comm_id": "x", "data": {}})) == \
        b'{"event":"comm","msg_type":"comm_close","content":{"comm_id":"x","data":{}},"buffers":[]}'
    snap = m.CommSnapshot(comm_id="a", target_name="jupyter.widget", state={"v": 1}, model_name="M")
    assert m.encode(snap) == b'{"comm_id":"a","target_name":"jupyter.widget","state":{"v":1},"model_name":"M"}'
    assert m.encode(m.QueueState(executing=None, queued=[])) == b'{"result":"queue_state","executing":null,"queued":[]}'
    assert m.encode(m.InterruptExecution()) == b'{"action":"interrupt_execution"}'
    assert m.encode(m.LaunchKernel()) == \
        b'{"action":"launch_kernel","kernel_type":"auto","env_source":"auto","notebook_path":null}'


def test_byte_arrays_are_integer_arrays() -> None:
    bc = m.decode_broadcast(b'{"event":"comm","msg_type":"comm_open","content":{"comm_id":"i"},"buffers":[[137,80,78,71]]}')
    assert isinstance(bc, m.Comm) and bc.buffers == [[137, 80, 78, 71]]
    resp = m.decode_response(b'{"result":"doc_bytes","bytes":[133,111,74,131]}')
    assert isinstance(resp, m.DocBytes) and bytes(resp.bytes) == b"\x85oJ\x83"


def test_unknown_tags_are_kept_and_bad_json_is_an_error() -> None:
    unk = m.decode_broadcast(b'{"event":"brand_new","x":1}')
    assert isinstance(unk, m.Unknown) and unk.tag == "brand_new" and unk.raw["x"] == 1
    assert m.tag_of(unk) == "brand_new"
    with pytest.raises(m.MessageError, match="invalid JSON"):
        m.decode_broadcast(b"{not json")
    with pytest.raises(m.MessageError, match="missing required field"):
        m.decode_broadcast(b'{"event":"kernel_status"}')
    rooms = m.decode_pool_response(
        b'{"type":"rooms_list","rooms":[{"notebook_id":"a","active_peers":1,"has_kernel":true,'
        b'"kernel_type":"python","env_source":"uv:prewarmed","kernel_status":"idle"}]}')
    assert isinstance(rooms, m.RoomsList) and rooms.rooms[0].kernel_status == "idle"


SPEC_UPDATE = bytes.fromhex(
    "BF 64 74797065 66 757064617465 67 706565725F6964 62 7031"
    " 6A 706565725F6C6162656C 63 416E61 67 6368616E6E656C 66 637572736F72"
    " 64 64617461 A3 67 63656C6C5F6964 62 6331 64 6C696E65 03 66 636F6C756D6E 07 FF".replace(" ", ""))


def test_presence_decodes_the_spec_examples() -> None:
    p = decode_presence(SPEC_UPDATE)
    assert (p.type, p.peer_id, p.channel) == ("update", "p1", "cursor")
    assert p.raw["data"] == {"cell_id": "c1", "line": 3, "column": 7}
    left = decode_presence(bytes.fromhex("A2 64 74797065 64 6C656674 67 706565725F6964 62 7031".replace(" ", "")))
    assert (left.type, left.peer_id) == ("left", "p1")
    # our encoder reproduces the daemon's indefinite-length update byte for byte
    assert encode_presence({"type": "update", "peer_id": "p1", "peer_label": "Ana", "channel": "cursor",
                            "data": {"cell_id": "c1", "line": 3, "column": 7}}) == SPEC_UPDATE


def test_presence_unknown_type_kept_and_garbage_rejected() -> None:
    p = decode_presence(encode_presence({"type": "wave", "peer_id": "z"}))
    assert not p.known and p.type == "wave"
    custom = decode_presence(encode_presence({"type": "update", "peer_id": "q", "channel": "custom", "data": b"\x01\x02"}))
    assert custom.raw["data"] == [1, 2]
    with pytest.raises(PresenceError):
        decode_presence(b"\xff\xff\xff")
    with pytest.raises(PresenceError, match="not a CBOR map"):
        decode_presence(b"\x01")


# --------------------------------------------------------------------------- hostile input


def test_deep_json_is_a_message_error_not_a_recursion_error() -> None:
    deep = b'{"event":"comm","msg_type":"comm_msg","content":{"comm_id":"c","data":' + b"[" * 1000 + b"]" * 1000 + b"}}"
    with pytest.raises(m.MessageError, match="nested deeper than 100") as exc:
        m.decode_broadcast(deep)
    assert exc.value.size == len(deep) and len(exc.value.sha256) == 64
    # deep enough to pass msgspec, too deep for anything recursive downstream
    with pytest.raises(m.MessageError, match="nested deeper"):
        m.decode_json(b"[" * 150 + b"]" * 150)
    assert m.decode_json(b"[" * 50 + b"]" * 50) is not None


def test_buffer_bytes_out_of_range_are_refused() -> None:
    with pytest.raises(m.MessageError, match="buffers"):
        m.decode_broadcast(b'{"event":"comm","msg_type":"comm_msg","content":{"comm_id":"c"},"buffers":[[300]]}')
    with pytest.raises(m.MessageError):
        m.decode_broadcast(b'{"event":"comm_sync","comms":[{"comm_id":"a","target_name":"t","state":{},'
                           b'"buffers":[[-1]]}]}')
    with pytest.raises(m.MessageError):
        m.decode_response(b'{"result":"doc_bytes","bytes":[256]}')


def test_invalid_utf8_in_an_unknown_key_is_a_message_error() -> None:
    # the typed decoder would skip the unknown key; the raw reader after it would then fail
    with pytest.raises(m.MessageError, match="UTF-8"):
        m.decode_broadcast(b'{"event":"kernel_status","status":"idle","x\xff":1}')


def test_project_errors_carry_their_exit_code() -> None:
    from inspector import errors

    for exc in (m.MessageError("x"), PresenceError("y")):
        assert isinstance(exc, errors.BadContent) and isinstance(exc, ValueError)
        assert exc.exit_code == errors.EXIT_BAD_FRAME


@pytest.mark.parametrize("body", [
    bytes.fromhex("a2647479706568736e617073686f74657065657273") + b"\x05",  # {"type":"snapshot","peers":5}
    bytes.fromhex("a2647479706568736e617073686f74"),  # a map of two entries holding one
    b"\xa1\x64type\xf7",  # type: undefined
    b"\x81" * 5000 + b"\x00",  # nested arrays
])
def test_hostile_presence_is_a_presence_error(body: bytes) -> None:
    with pytest.raises(PresenceError):
        decode_presence(body)


def test_presence_values_without_json_form_are_shown_not_trusted() -> None:
    import cbor2

    p = decode_presence(cbor2.dumps({"type": "update", "peer_id": "p", 7: cbor2.undefined,
                                     "data": cbor2.CBORTag(99, [1, b"\x02"])}))
    assert p.raw == {"type": "update", "peer_id": "p", "7": None, "data": [1, [2]]}
    with pytest.raises(PresenceError, match="channels"):
        decode_presence(cbor2.dumps({"type": "snapshot", "peer_id": "d",
                                     "peers": [{"peer_id": "a", "channels": 5}]}))
