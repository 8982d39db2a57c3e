"""The always-on ring: bounded by bytes and by age, saved as a recording that opens and
replays from its first checkpoint to the same documents as the full session."""

from __future__ import annotations

from automerge import core as am

from inspector.recording import Checkpoint, Frame, Meta, Recorder, RecordingReader, RecordingRing, Replicas


class Daemon:
    """A real Automerge document changed step by step, synced to a peer as sync frames."""

    def __init__(self) -> None:
        self.doc = am.Document(actor_id=b"daemon")
        self.state = am.SyncState()
        self.peer = am.Document()
        self.peer_state = am.SyncState()
        with self.doc.transaction() as tx:
            self.cells = tx.put_object(am.ROOT, "cells", am.ObjType.Map)

    def step(self, i: int) -> list[tuple[str, bytes]]:
        with self.doc.transaction() as tx:
            tx.put(self.cells, f"c{i % 7}", am.ScalarType.Int, i)
        frames = []
        for _ in range(4):  # until both sides have nothing more to say
            msg = self.doc.generate_sync_message(self.state)
            if msg is not None:
                frames.append(("in", bytes([0]) + msg.encode()))
                self.peer.receive_sync_message(self.peer_state, msg)
            reply = self.peer.generate_sync_message(self.peer_state)
            if reply is not None:
                frames.append(("out", bytes([0]) + reply.encode()))
                self.doc.receive_sync_message(self.state, reply)
            if msg is None and reply is None:
                break
        return frames


def run(recorder: Recorder, replicas: Replicas, steps: int, dt: float = 0.1, start: float = 0.0,
        daemon: Daemon | None = None) -> Daemon:
    daemon = daemon or Daemon()
    for i in range(steps):
        t = start + i * dt
        for direction, payload in daemon.step(i):
            replicas.apply(recorder.frame(1, direction, "typed", payload, mono=t, wall=1000 + t))
    return daemon


def test_ring_stays_within_its_byte_bound_and_keeps_the_newest(tmp_path) -> None:
    ring = RecordingRing(max_bytes=40_000, max_age=10_000)
    replicas = Replicas()
    rec = Recorder(Meta("t", 1000.0, 0.0), ring=ring, checkpoint=replicas.checkpoint, checkpoint_interval=1e9,
                   checkpoint_records=10**9)
    daemon = run(rec, replicas, 2000)
    assert not ring.complete and ring.dropped_records > 0
    assert ring.size <= ring.max_bytes
    path = str(tmp_path / "ring.rtirec")
    assert rec.save_ring(path) == len(ring)
    with RecordingReader(path) as r:
        assert r.tail is None and r.kind(1) == "checkpoint"
        cp = r.record(1)
        assert isinstance(cp, Checkpoint)
        replay = Replicas()
        replay.conn(1).load("notebook", cp.docs["notebook"].saved)
        for _, x in r.records(2):
            if isinstance(x, Frame):
                replay.apply(x)
        # what the peer holds at the end is what the saved ring replays to
        assert replay.conn(1).docs["notebook"].get_heads() == daemon.peer.get_heads()
        assert am.extract(replay.conn(1).docs["notebook"]) == am.extract(daemon.peer)


def test_ring_keeps_at_least_its_age_and_saves_the_last_n_seconds(tmp_path) -> None:
    ring = RecordingRing(max_bytes=1 << 30, max_age=60.0)
    replicas = Replicas()
    rec = Recorder(Meta("t", 1000.0, 0.0), ring=ring, checkpoint=replicas.checkpoint, checkpoint_interval=1e9,
                   checkpoint_records=10**9)
    run(rec, replicas, 3000, dt=0.1)  # 300 s of traffic
    end = 2999 * 0.1
    assert ring.start is not None and end - 60.0 - 60.0 / 8 - 0.2 <= ring.start <= end - 60.0
    path = str(tmp_path / "last.rtirec")
    rec.ring.save(path, rec.meta, last=20.0, now=end)
    with RecordingReader(path) as r:
        first_cp = r.record(1)
        assert isinstance(first_cp, Checkpoint)
        assert end - 20.0 - 60.0 / 8 - 0.2 <= first_cp.mono <= end - 20.0
        assert r.monos[-1] == end  # up to the newest record


def test_ring_without_checkpoints_says_it_holds_nothing_replayable_once_it_drops(tmp_path) -> None:
    ring = RecordingRing(max_bytes=5_000, max_age=1e9)
    rec = Recorder(Meta("t", 1000.0, 0.0), ring=ring)
    run(rec, Replicas(), 50)
    assert ring.replayable()  # one segment, from the start
    ring2 = RecordingRing(max_bytes=5_000, max_age=1e9)
    for i in range(200):
        ring2.append_encoded(2, float(i), b"x" * 100)
    ring2.append_encoded(6, 200.0, b"c" * 10)  # a checkpoint starts a segment
    for i in range(200):
        ring2.append_encoded(2, 201.0 + i, b"x" * 100)
    assert ring2.size > ring2.max_bytes  # a lone oversized segment is kept whole...
    assert not ring2.complete and ring2.replayable()  # ...and it starts at its checkpoint
    try:
        RecordingRing(0, 1)
    except ValueError as exc:
        assert "positive" in str(exc)
    else:
        raise AssertionError("a ring of no size was accepted")


def test_starting_a_file_mid_session_begins_it_with_a_checkpoint(tmp_path) -> None:
    replicas = Replicas()
    rec = Recorder(Meta("t", 1000.0, 0.0), ring=RecordingRing(), checkpoint=replicas.checkpoint)
    daemon = run(rec, replicas, 30)
    path = str(tmp_path / "mid.rtirec")
    rec.start_file(path)
    run(rec, replicas, 30, start=10.0, daemon=daemon)
    rec.stop_file()
    with RecordingReader(path) as r:
        assert [r.kind(i) for i in range(2)] == ["meta", "checkpoint"]
        cp = r.record(1)
        replay = Replicas()
        replay.conn(1).load("notebook", cp.docs["notebook"].saved)
        for _, x in r.records(2):
            if isinstance(x, Frame):
                replay.apply(x)
        assert am.extract(replay.conn(1).docs["notebook"]) == am.extract(daemon.peer)
