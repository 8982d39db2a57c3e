"""The Wireshark export, read back by the real tshark with the shipped Lua dissector: every
packet decodes as `runtimed`, frame types, JSON messages, presence types and the Automerge
sync headers are right on the real runtimed 2.9.0 capture, on exact synthetic Automerge sync
and on a testbed recording, with directions, one interface per connection and divergence
transitions as comments."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import cbor2
import pytest
from automerge import core as am
from recording_source import Recorded, frame_log_records, record_testbed

from inspector.recording import Frame, Mark, Meta, RecordingReader
from inspector.recording.pcapng import export_pcapng
from inspector.recording.redact import redact_file

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (Debian package tshark)")
LUA = os.path.join(os.path.dirname(__file__), "..", "resources", "wireshark", "runtimed.lua")
FIELDS = ["frame.number", "frame.protocols", "frame.packet_flags_direction", "frame.interface_name", "frame.comment",
          "runtimed.kind", "runtimed.type", "runtimed.doc", "runtimed.msg", "runtimed.presence.type",
          "runtimed.preamble.version", "runtimed.length", "runtimed.sync.msgtype", "runtimed.sync.heads_count",
          "runtimed.sync.head", "runtimed.sync.need_count", "runtimed.sync.have_count",
          "runtimed.sync.changes_count", "runtimed.sync.change_chunks", "runtimed.sync.document_chunks",
          "runtimed.error", "_ws.expert.message"]
SYNC_TYPES = {0x00, 0x05, 0x06, 0x09, 0x0A}


def tshark(pcap: str) -> list[dict[str, str]]:
    args = [TSHARK, "-X", f"lua_script:{LUA}", "-r", pcap, "-T", "fields", "-E", "separator=\t",
            "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in FIELDS:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
    assert "Lua" not in out.stderr, out.stderr
    rows = [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in out.stdout.splitlines()]
    for row in rows:
        assert "Lua Error" not in row["_ws.expert.message"], row
    return rows


def uleb(b: bytes, p: int) -> tuple[int, int]:
    r = s = 0
    while True:
        x = b[p]
        p += 1
        r |= (x & 0x7F) << s
        s += 7
        if x < 0x80:
            return r, p


def sync_header(msg: bytes) -> dict[str, object]:
    """The sync message header, decoded here independently of the dissector."""
    n, p = uleb(msg, 1)
    heads = [msg[p + 32 * i : p + 32 * i + 32].hex() for i in range(n)]
    p += 32 * n
    n, p = uleb(msg, p)
    need = n
    p += 32 * n
    have, p = uleb(msg, p)
    for _ in range(have):
        n, p = uleb(msg, p)
        p += 32 * n
        n, p = uleb(msg, p)
        p += n
    changes, p = uleb(msg, p)
    return {"heads": heads, "need": need, "have": have, "changes": changes}


def heads_of(row: dict[str, str]) -> list[str]:
    return [h.replace(":", "") for h in row["runtimed.sync.head"].split("|") if h]


@pytest.fixture(scope="module")
def real_capture(tmp_path_factory) -> tuple[list, list[dict[str, str]]]:
    records = frame_log_records()
    pcap = str(tmp_path_factory.mktemp("pcap") / "real.pcapng")
    frames = [r for r in records if isinstance(r, Frame)]
    assert export_pcapng(records, pcap) == len(frames)
    return frames, tshark(pcap)


def test_every_packet_of_the_real_capture_decodes_as_runtimed(real_capture) -> None:
    frames, rows = real_capture
    assert len(rows) == len(frames) == 285
    for f, row in zip(frames, rows, strict=True):
        assert "runtimed" in row["frame.protocols"].split(":"), row
        assert row["runtimed.error"] == "", row
        assert row["runtimed.kind"] == {"preamble": "preamble", "typed": "typed", "untyped": "untyped"}[f.kind]
        # EPB flags: 1 inbound (daemon -> peer), 2 outbound
        assert int(row["frame.packet_flags_direction"], 16) == (1 if f.direction == "in" else 2)
        assert row["frame.interface_name"] == f"runtimed connection {f.conn}"
        if f.kind == "preamble":
            assert row["runtimed.preamble.version"] == "4"
        else:
            assert int(row["runtimed.length"]) == len(f.payload)


def test_real_capture_frame_types_json_and_presence(real_capture) -> None:
    frames, rows = real_capture
    seen = set()
    for f, row in zip(frames, rows, strict=True):
        if f.kind != "typed":
            continue
        ft = f.payload[0]
        assert int(row["runtimed.type"], 16) == ft
        seen.add(ft)
        if ft in (0x01, 0x02, 0x03, 0x07):
            body = json.loads(f.payload[1:])
            expected = next(body[k] for k in ("type", "action", "event", "result") if isinstance(body.get(k), str))
            assert row["runtimed.msg"] == expected, (row, body)
        elif ft == 0x04:
            assert row["runtimed.presence.type"] == cbor2.loads(f.payload[1:])["type"]
    assert {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09, 0x0A} <= seen


def test_real_capture_sync_headers(real_capture) -> None:
    frames, rows = real_capture
    n = 0
    for f, row in zip(frames, rows, strict=True):
        if f.kind == "typed" and f.payload[0] in SYNC_TYPES:
            h = sync_header(f.payload[1:])
            assert heads_of(row) == h["heads"] and int(row["runtimed.sync.heads_count"]) == len(h["heads"])
            assert int(row["runtimed.sync.need_count"]) == h["need"]
            assert int(row["runtimed.sync.have_count"]) == h["have"]
            assert int(row["runtimed.sync.changes_count"]) == h["changes"]
            assert int(row["runtimed.sync.msgtype"], 16) == f.payload[1]
            n += 1
    assert n > 150
    # the settings channel's untyped Automerge messages decode too
    settings = [row for f, row in zip(frames, rows, strict=True) if f.kind == "untyped" and f.payload[:1] == b"\x42"]
    assert settings and all(r["runtimed.sync.heads_count"] != "" for r in settings)


def test_sync_headers_match_what_automerge_put_in_them(tmp_path) -> None:
    """Ground truth from Automerge itself: the sender's heads, and how many changes the
    receiver gained from the message (a first sync sends one whole-document chunk instead)."""
    a, b = am.Document(actor_id=b"daemon"), am.Document(actor_id=b"peer")
    sa, sb = am.SyncState(), am.SyncState()
    with a.transaction() as tx:
        m = tx.put_object(am.ROOT, "cells", am.ObjType.Map)
    for i in range(5):
        with a.transaction() as tx:
            tx.put(m, f"k{i}", am.ScalarType.Int, i)
    records: list = [Meta("t", 1.7e9, 0.0)]
    truth = []
    for step in range(12):
        if step == 6:  # after the first sync: three more changes travel as change chunks
            for i in range(3):
                with a.transaction() as tx:
                    tx.put(m, f"later{i}", am.ScalarType.Int, i)
        msg = a.generate_sync_message(sa)
        if msg is not None:
            heads = [bytes(h).hex() for h in a.get_heads()]
            before = len(b.get_changes([]))
            b.receive_sync_message(sb, msg)
            truth.append((heads, len(b.get_changes([])) - before))
            records.append(Frame(1, "in", "typed", float(step), 1.7e9 + step, b"\x00" + msg.encode()))
        reply = b.generate_sync_message(sb)
        if reply is not None:
            heads = [bytes(h).hex() for h in b.get_heads()]
            before = len(a.get_changes([]))
            a.receive_sync_message(sa, reply)
            truth.append((heads, len(a.get_changes([])) - before))
            records.append(Frame(1, "out", "typed", step + 0.5, 1.7e9 + step + 0.5, b"\x00" + reply.encode()))
    pcap = str(tmp_path / "sync.pcapng")
    export_pcapng(records, pcap)
    rows = tshark(pcap)
    assert len(rows) == len(truth) >= 5
    assert sorted(g for _, g in truth if g) == [3, 6]  # the first sync, then the later changes
    for (heads, gained), row in zip(truth, rows, strict=True):
        assert sorted(heads_of(row)) == sorted(heads)
        assert row["runtimed.sync.document_chunks"] == "0"
        assert int(row["runtimed.sync.change_chunks"]) == gained


@pytest.mark.kernel
def test_a_testbed_recording_with_divergence_comments(tmp_path) -> None:
    rec: Recorded = record_testbed(fault="doc-drop-update:IntSliderModel")
    try:
        pcap = str(tmp_path / "testbed.pcapng")
        with RecordingReader(rec.path) as r:
            records = list(r)
        marks = [i for i, x in enumerate(records) if isinstance(x, Mark)]
        assert marks, "the fault produced no divergence transition"
        extra = {marks[0]: ["divergence given by the caller"]}
        frames = [x for x in records if isinstance(x, Frame)]
        assert export_pcapng(records, pcap, extra) == len(frames)
        rows = tshark(pcap)
        assert len(rows) == len(frames)
        assert all("runtimed" in row["frame.protocols"].split(":") for row in rows)
        assert {row["frame.interface_name"] for row in rows} == {f"runtimed connection {c}" for c in {f.conn for f in frames}}
        comments = "|".join(row["frame.comment"] for row in rows)
        assert "divergence given by the caller" in comments
        for i in marks:
            assert records[i].text in comments
        kinds = {row["runtimed.msg"] for row in rows if row["runtimed.type"] in ("0x03", "0x02", "0x01")}
        assert "comm" in kinds or any(k for k in kinds)  # broadcasts carry their event name
        v2 = [row for row in rows if row["runtimed.kind"] == "preamble"]
        assert v2 and all(row["runtimed.preamble.version"] == "2" for row in v2)
        # a redacted recording exports too: sync frames keep type and length, say their body is gone
        red = str(tmp_path / "redacted.rtirec")
        redact_file(rec.path, red)
        with RecordingReader(red) as r:
            red_records = list(r)
        red_rows = tshark(str(tmp_path / "redacted.pcapng")) if export_pcapng(
            red_records, str(tmp_path / "redacted.pcapng")) else []
        assert len(red_rows) == len(frames)
        for f, row in zip(frames, red_rows, strict=True):
            assert "runtimed" in row["frame.protocols"].split(":")
            if f.kind == "typed" and f.payload[0] == 0:
                assert int(row["runtimed.length"]) == len(f.payload)
                assert "body not captured" in row["runtimed.error"] and "body redacted" in row["frame.comment"]
    finally:
        shutil.rmtree(rec.dir, ignore_errors=True)
