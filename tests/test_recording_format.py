"""The recording file: real testbed traffic round-trips, a SIGKILLed writer's file opens with
everything written before the kill, a garbled or cut tail is reported, seeking from a
checkpoint gives the same documents as replaying from the start."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from automerge import core as am
from recording_source import Recorded, record_testbed

from inspector.recording import (
    Checkpoint,
    Frame,
    Kernel,
    Meta,
    Recorder,
    RecordingError,
    RecordingReader,
    RecordingWriter,
    Replicas,
    Seeker,
    Timer,
)
from inspector.recording.recording_file import MAGIC

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def recorded() -> Recorded:
    rec = record_testbed()
    yield rec
    shutil.rmtree(rec.dir, ignore_errors=True)


def replay_heads(reader: RecordingReader, start: int = 0, stop: int | None = None,
                 replicas: Replicas | None = None) -> Replicas:
    replicas = replicas or Replicas()
    for _, rec in reader.records(start, stop):
        if isinstance(rec, Frame):
            replicas.apply(rec)
    return replicas


def notebook_heads(replicas: Replicas, conn: int) -> list[str]:
    return [bytes(h).hex() for h in replicas.conn(conn).docs["notebook"].get_heads()]


def test_recording_holds_every_frame_and_rebuilds_the_session_documents(recorded: Recorded) -> None:
    with RecordingReader(recorded.path) as r:
        assert r.tail is None
        assert r.meta.notebook_id == recorded.nid
        assert (r.meta.protocol, r.meta.protocol_version, r.meta.daemon_version) == ("v2", 2, "2.0.0+testbed")
        frames = [rec for rec in r if isinstance(rec, Frame)]
        assert len([f for f in frames if f.kind != "preamble"]) == recorded.frames_tapped
        # the session's own frame log of its notebook connection counts the same frames and bytes
        notebook_conn = max(f.conn for f in frames)
        ours = [f for f in frames if f.conn == notebook_conn]
        ins, outs = [f for f in ours if f.direction == "in"], [f for f in ours if f.direction == "out"]
        assert (len(ins), len(outs), sum(f.size for f in ins), sum(f.size for f in outs)) == recorded.session_frames
        # every frame as on the wire: the handshake is JSON naming the room, typed frames carry a type byte
        assert ours[0].kind == "preamble" and ours[0].payload[:4] == bytes([0xC0, 0xDE, 0x01, 0xAC])
        assert recorded.nid.encode() in ours[1].payload
        assert {f.direction for f in ours} == {"in", "out"}
        assert all(f.size == len(f.payload) for f in frames)
        replicas = replay_heads(r)
        # the inspector's replica at the end equals the documents the recording rebuilds
        assert notebook_heads(replicas, notebook_conn) == recorded.heads


def test_seek_from_a_checkpoint_equals_replay_from_the_start(recorded: Recorded) -> None:
    with RecordingReader(recorded.path) as r:
        assert len(r.checkpoints) >= 2
        conn = max(f.conn for f in r if isinstance(f, Frame))
        for target in (r.checkpoints[1] + 3, len(r) - 1):
            cp, rest = r.seek(target)
            assert isinstance(cp, Checkpoint) and r.checkpoint_before(target) <= target
            seeked = Replicas()
            for name, ds in cp.docs.items():
                seeked.conn(cp.conn).load(name, ds.saved)
                assert [bytes(h).hex() for h in seeked.conn(cp.conn).docs[name].get_heads()] == ds.heads
            for _, rec in rest:
                if isinstance(rec, Frame):
                    seeked.apply(rec)
            full = replay_heads(r, 0, target + 1)
            assert notebook_heads(seeked, conn) == notebook_heads(full, conn)
            assert am.extract(seeked.conn(conn).docs["notebook"]) == am.extract(full.conn(conn).docs["notebook"])


WRITER = textwrap.dedent("""
    import sys, time
    from inspector.recording import Meta, RecordingWriter, Frame
    w = RecordingWriter(sys.argv[1], Meta("test", time.time(), time.monotonic()), fsync_interval=None)
    i = 0
    while True:
        i += 1
        w.append(Frame(1, "in", "typed", time.monotonic(), time.time(), bytes([3]) + b'{"n": %d}' % i + b"x" * (i % 300)))
""")


def test_a_recording_killed_with_sigkill_opens_with_everything_before_the_kill(tmp_path) -> None:
    path = str(tmp_path / "killed.rtirec")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path])
    try:
        deadline = time.monotonic() + 30
        while not (os.path.exists(path) and os.path.getsize(path) > 200_000):
            assert time.monotonic() < deadline, "the writer wrote nothing"
            assert proc.poll() is None, "the writer died"
            time.sleep(0.01)  # polling a file another process writes: no event to wait on
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    size = os.path.getsize(path)
    with RecordingReader(path) as r:
        assert len(r) > 300
        frames = [rec for rec in r if isinstance(rec, Frame)]
        # records are numbered 1.. in order, none missing, none damaged
        assert [int(f.payload[7:].split(b"}")[0]) for f in frames] == list(range(1, len(frames) + 1))
        end = r.offsets[-1] if r.tail is None else r.tail.offset
        assert r.tail is None or "cut short" in r.tail.reason
        assert end <= size


def make_recording(path: str, n: int = 50) -> list[int]:
    """A small recording; returns the end offset of each record."""
    ends = []
    with RecordingWriter(path, Meta("test", 1.0, 0.0)) as w:
        ends.append(w.bytes)
        for i in range(n):
            w.append(Frame(1, "in", "typed", float(i), 1.0 + i, bytes([1]) + b'{"i":%d}' % i))
            ends.append(w.bytes)
    return ends


def test_a_cut_at_any_byte_keeps_every_whole_record_before_it(tmp_path) -> None:
    path = str(tmp_path / "r.rtirec")
    ends = make_recording(path, 12)
    with open(path, "rb") as fh:
        data = fh.read()
    cut_path = tmp_path / "cut.rtirec"
    for cut in range(ends[0], len(data) + 1):  # every length from the metadata record on
        cut_path.write_bytes(data[:cut])
        whole = sum(1 for e in ends if e <= cut)
        with RecordingReader(str(cut_path)) as r:
            assert len(r) == whole, cut
            if cut == ends[whole - 1]:
                assert r.tail is None
            else:
                assert r.tail is not None and r.tail.index == whole and "cut short" in r.tail.reason, cut


def test_a_garbled_record_ends_the_readable_part_and_says_where(tmp_path) -> None:
    path = str(tmp_path / "g.rtirec")
    ends = make_recording(path)
    with open(path, "r+b") as fh:
        fh.seek(ends[30] + 20)  # inside the 31st frame's body
        b = fh.read(1)
        fh.seek(ends[30] + 20)
        fh.write(bytes([b[0] ^ 0xFF]))
    with RecordingReader(path) as r:
        assert len(r) == 31
        assert r.tail is not None and r.tail.offset == ends[30] and "checksum" in r.tail.reason
        assert f"byte {ends[30]}" in str(r.tail)


@pytest.mark.parametrize("content, message", [
    (b"", "not a recording"),
    (b"{\"conn\": 1}\n", "not a recording"),
    (MAGIC[:-1] + b"\x09" + b"\0" * 20, "format version 9"),
    (MAGIC, "no session metadata"),
])
def test_what_is_not_a_recording_says_so_in_one_line(tmp_path, content: bytes, message: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(RecordingError) as exc:
        RecordingReader(str(path))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_kernel_messages_timers_and_marks_round_trip_with_their_times(tmp_path) -> None:
    path = str(tmp_path / "k.rtirec")
    rec = Recorder(Meta("test", 100.0, 5.0))
    rec.start_file(path)
    msg = {"header": {"msg_type": "comm_msg", "msg_id": "m1"}, "content": {"data": {"state": {"value": 3}}}}
    rec.kernel(msg, mono=6.0, wall=101.0)
    rec.timer("settle", 6.5, due=7.0)
    rec.mark("divergence state_mismatch", {"comm_id": "c1"}, mono=7.0)
    rec.update_meta(daemon_version="2.9.0", protocol="v4", protocol_version=4)
    rec.close()
    with RecordingReader(path) as r:
        kinds = [r.kind(i) for i in range(len(r))]
        assert kinds == ["meta", "kernel", "timer", "mark", "meta"]
        assert r.meta.daemon_version == "2.9.0" and r.meta.start_wall == 100.0
        k = r.record(1)
        assert isinstance(k, Kernel) and k.msg == msg and k.mono == 6.0
        t = r.record(2)
        assert isinstance(t, Timer) and (t.name, t.mono, t.due) == ("settle", 6.5, 7.0)
        assert r.index_at(6.7) == 2 and r.index_at(0.0) == 0


def test_a_writer_does_not_overwrite_a_file_unless_told(tmp_path) -> None:
    path = tmp_path / "exists.rtirec"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        RecordingWriter(str(path), Meta("t", 0.0, 0.0))
    assert path.read_bytes() == b"keep me"
    RecordingWriter(str(path), Meta("t", 0.0, 0.0), overwrite=True).close()
    assert RecordingReader(str(path)).meta.inspector_version == "t"


def test_seeker_gives_the_documents_at_any_record_and_reuses_what_it_loaded(recorded: Recorded) -> None:
    with RecordingReader(recorded.path) as r:
        seeker = Seeker(r)
        conn = max(f.conn for f in r if isinstance(f, Frame))
        targets = [len(r) - 1, r.checkpoints[1] + 2, r.checkpoints[1] + 5, 3, len(r) - 1, r.checkpoints[-1]]
        for target in targets:
            got = seeker.seek(target).conn(conn).docs.get("notebook")
            full = replay_heads(r, 0, target + 1).conn(conn).docs.get("notebook")
            assert (got is None) == (full is None)
            if full is not None:
                assert got.get_heads() == full.get_heads() and am.extract(got) == am.extract(full)
        # each checkpoint was decoded once; moving forward continued from the last seek
        assert seeker.loads <= len({r.checkpoint_before(t) for t in targets} - {None})
