"""A recording as a pcapng capture for Wireshark: one interface per connection with link type
252 (Exported PDU), each frame an Enhanced Packet Block whose exported-PDU tags name the
`runtimed` dissector (resources/wireshark/runtimed.lua), its direction in the EPB flags and
its wall-clock time; divergence transitions and marks become packet comments.

The packet data is the frame as it crossed the socket: the preamble's five bytes, or the u32
big-endian length and the payload.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

from .records import IN, PREAMBLE, Connection, Frame, Mark, Record

LINKTYPE_EXPORTED_PDU = 252
EXP_PDU_TAG_END_OF_OPT = 0
EXP_PDU_TAG_DISSECTOR_NAME = 12
DISSECTOR = "runtimed"
EPB_INBOUND, EPB_OUTBOUND = 1, 2
OPT_COMMENT = 1
EPB_FLAGS = 2
IF_NAME, IF_DESCRIPTION, IF_TSRESOL = 2, 3, 9
SHB_USERAPPL = 4


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _options(opts: list[bytes]) -> bytes:
    return b"".join(opts) + struct.pack("<HH", 0, 0) if opts else b""


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def _exported_pdu_header(dissector: str = DISSECTOR) -> bytes:
    # exported-PDU tags are big-endian; the value is NUL-padded to 4 bytes and its length says so
    name = _pad(dissector.encode())
    return struct.pack(">HH", EXP_PDU_TAG_DISSECTOR_NAME, len(name)) + name + struct.pack(">HH", EXP_PDU_TAG_END_OF_OPT, 0)


PDU_HEADER = _exported_pdu_header()


def wire_bytes(frame: Frame) -> bytes:
    """The frame as it was on the socket."""
    if frame.kind == PREAMBLE:
        return frame.payload
    return struct.pack(">I", frame.size if frame.redacted else len(frame.payload)) + frame.payload


def _epb(interface: int, rec: Frame, comments: list[str]) -> bytes:
    data = PDU_HEADER + wire_bytes(rec)
    ts = int(round(rec.wall * 1_000_000))
    opts = [_option(EPB_FLAGS, struct.pack("<I", EPB_INBOUND if rec.direction == IN else EPB_OUTBOUND))]
    opts += [_option(OPT_COMMENT, text.encode()) for text in comments]
    # a redacted frame keeps its original length as the packet's original length
    orig = len(PDU_HEADER) + (rec.size + (0 if rec.kind == PREAMBLE else 4) if rec.redacted else len(data) - len(PDU_HEADER))
    body = struct.pack("<IIIII", interface, ts >> 32, ts & 0xFFFFFFFF, len(data), orig)
    return _block(6, body + _pad(data) + _options(opts))


def export_pcapng(records: Iterable[Record], out_path: str,
                  comments: Mapping[int, Sequence[str]] | None = None, application: str = "runtimed-inspector") -> int:
    """Write `records` (a `RecordingReader` or any iterable of records, indexed from 0 as the
    reader does) to `out_path`; `comments` maps a record index to packet comments (divergence
    transitions), put on that frame or, for a non-frame record, on the next frame. Returns the
    number of packets written."""
    comments = comments or {}
    interfaces: dict[int, int] = {}
    channels: dict[int, str] = {}
    pending: list[str] = []
    held: tuple[int, Frame, list[str]] | None = None  # the last frame, written once its comments are known
    packets = 0
    with open(out_path, "wb") as out:
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _options([_option(SHB_USERAPPL, application.encode())])
        out.write(_block(0x0A0D0D0A, shb))
        for index, rec in enumerate(records):
            pending.extend(comments.get(index, ()))
            if isinstance(rec, Connection):
                if rec.channel:
                    channels[rec.conn] = rec.channel
                pending.append(f"connection {rec.conn} {rec.event}{': ' + rec.detail if rec.detail else ''}")
                continue
            if isinstance(rec, Mark):
                pending.append(rec.text)
                continue
            if not isinstance(rec, Frame):
                continue
            if rec.conn not in interfaces:
                interfaces[rec.conn] = len(interfaces)
                name = f"runtimed connection {rec.conn}"
                opts = [_option(IF_NAME, name.encode()), _option(IF_TSRESOL, bytes([6]))]
                if rec.conn in channels:
                    opts.append(_option(IF_DESCRIPTION, f"channel {channels[rec.conn]}".encode()))
                out.write(_block(1, struct.pack("<HHI", LINKTYPE_EXPORTED_PDU, 0, 0) + _options(opts)))
            if held is not None:
                out.write(_epb(*held))
            if rec.redacted:
                pending.append(f"body redacted ({rec.size} bytes)")
            held, pending = (interfaces[rec.conn], rec, pending), []
            packets += 1
        if held is not None:  # what happened after the last frame goes on it
            out.write(_epb(held[0], held[1], held[2] + [f"after this frame: {t}" for t in pending]))
    return packets
