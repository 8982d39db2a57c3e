"""Snapshots shipped in pieces (inspector/snapshot_stream.py): what the window assembles equals
what the session core held, at every step of real recorded sessions and under random edits,
and an update ships only what changed."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_verdicts_corpus import Replay

from inspector.snapshot import CellView, CommView, DaemonView, FeedCommView, FeedView, KernelView, Snapshot
from inspector.snapshot_stream import CellChunk, Header, SnapshotAssembler, SnapshotEncoder


def _ship(enc: SnapshotEncoder, asm: SnapshotAssembler, snap: Snapshot) -> tuple[Snapshot, list[bytes]]:
    msgs = enc.encode(snap)
    out = [asm.take(m) for m in msgs]
    assert all(o is None for o in out[:-1]), "only the header completes a snapshot"
    assert out[-1] is not None
    return out[-1], msgs


@pytest.mark.parametrize("name", ["widgets_300", "late_join_send_comm", "output_capture"])
def test_every_step_of_a_recorded_session_assembles_to_the_same_snapshot(name: str) -> None:
    rp = Replay(name)
    enc, asm = SnapshotEncoder(chunk=50), SnapshotAssembler()
    shipped: list[Snapshot] = []

    def step(_rec: dict) -> None:
        snap = rp.core.snapshot()
        got, _ = _ship(enc, asm, snap)
        assert got == snap
        shipped.append(got)

    rp.run(after=0.0, on_step=step)
    steps, got, snap = len(shipped), shipped[-1], rp.core.snapshot()
    assert steps > 10
    assert len(got.comms) > 0 and got.divergence == snap.divergence and got.integrity == snap.integrity


def _cell(i: int, src: str = "x") -> CellView:
    return CellView(id=f"c{i}", cell_type="code", position=f"{i:05d}", source=src, execution_count=None,
                    outputs=(), metadata={})


def _comm(i: int, value: object) -> CommView:
    return CommView(comm_id=f"m{i}", seq=i, target_name="jupyter.widget", model_module=None, model_name="X",
                    state={"value": value}, state_error=None, outputs=())


def _snap(cells: list[CellView], comms: list[CommView], feed: list[FeedCommView] = ()) -> Snapshot:
    return Snapshot(DaemonView(socket="/s"), "nb", 1, ("h",), tuple(cells), {}, tuple(comms),
                    FeedView(received_comm_sync=True, comms=tuple(feed)), KernelView())


def test_an_update_ships_the_one_comm_that_changed_in_a_big_room() -> None:
    enc, asm = SnapshotEncoder(), SnapshotAssembler()
    cells = [_cell(i) for i in range(10_000)]
    comms = [_comm(i, 0) for i in range(2_000)]
    first, msgs = _ship(enc, asm, _snap(cells, comms))
    assert len(msgs) == 20 + 4 + 1  # 10,000 cells and 2,000 comms in chunks of 500, then the header
    comms[7] = _comm(7, 42)
    before = enc.entries_sent
    got, msgs = _ship(enc, asm, _snap(cells, comms))
    assert enc.entries_sent - before == 1 and len(msgs) == 2
    assert sum(map(len, msgs)) < 2_000  # the unchanged order is not sent again either
    assert got.comms[7].state == {"value": 42} and got.cells == first.cells
    assert got.cells is first.cells  # an unchanged part is the same tuple: the tree skips it at a glance
    assert got.comms[0] is first.comms[0]  # entries the window holds are reused, not decoded again


def test_a_hostile_room_with_repeated_ids_and_huge_integers_loses_nothing() -> None:
    enc, asm = SnapshotEncoder(), SnapshotAssembler()
    snap = _snap([_cell(1, "a"), _cell(1, "b"), _cell(1, "c")], [_comm(0, 1 << 70), _comm(1, 2)])
    got, _ = _ship(enc, asm, snap)
    assert [c.source for c in got.cells] == ["a", "b", "c"]
    big = got.comms[0]
    assert big.state == {"value": str(1 << 70)} and "big_int_as_text" in big.flags  # said, not hidden
    assert got.comms[1] == snap.comms[1]


def test_chunks_decode_one_at_a_time_and_the_header_comes_last() -> None:
    enc = SnapshotEncoder(chunk=100)
    msgs = enc.encode(_snap([_cell(i) for i in range(250)], []))
    dec = msgspec.msgpack.Decoder(CellChunk | Header)
    kinds = [type(dec.decode(m)).__name__ for m in msgs]
    assert kinds == ["CellChunk", "CellChunk", "CellChunk", "Header"]


_edit = st.tuples(st.sampled_from(["add", "remove", "move", "change", "dup"]), st.integers(0, 50), st.integers(0, 50))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_edit, max_size=6), min_size=1, max_size=12))
def test_random_edits_assemble_to_the_snapshot_sent(rounds: list[list[tuple[str, int, int]]]) -> None:
    enc, asm = SnapshotEncoder(chunk=3), SnapshotAssembler()
    cells = [_cell(i) for i in range(5)]
    comms = [_comm(i, i) for i in range(3)]
    n = 100
    for edits in rounds:
        for op, a, b in edits:
            if op == "add":
                n += 1
                cells.insert(a % (len(cells) + 1), _cell(n))
                comms.append(_comm(n, a))
            elif op == "remove" and cells:
                cells.pop(a % len(cells))
                if comms:
                    comms.pop(b % len(comms))
            elif op == "move" and cells:
                cells.insert(b % len(cells), cells.pop(a % len(cells)))
            elif op == "change" and comms:
                i = a % len(comms)
                comms[i] = _comm(int(comms[i].comm_id[1:]), b)
            elif op == "dup" and cells:
                cells.append(cells[a % len(cells)])
        feed = [FeedCommView(c.comm_id, "jupyter.widget", None, "X", c.state) for c in comms[::2]]
        snap = _snap(cells, comms, feed)
        got, _ = _ship(enc, asm, snap)
        assert got == snap


def _deep(n: int) -> object:
    x: object = []
    for _ in range(n):
        x = [x]
    return x


def test_content_nested_too_deep_for_the_stream_is_marked_and_the_rest_arrives() -> None:
    enc, asm = SnapshotEncoder(), SnapshotAssembler()
    snap = _snap([_cell(1)], [_comm(0, _deep(5_000)), _comm(1, 2)])
    got, _ = _ship(enc, asm, snap)
    hurt = got.comms[0]
    assert hurt.comm_id == "m0" and hurt.seq == 0 and "not_shipped" in hurt.flags
    assert "nested too deep" in hurt.state
    assert got.comms[1] == snap.comms[1] and got.cells == snap.cells


def test_the_log_and_the_history_ship_past_an_event_too_deep_to_encode() -> None:
    from inspector.core_process import Entries, LogBatch, ToParent, _safe_encode
    from inspector.events import Event
    from inspector.key_history import Entry

    enc = msgspec.msgpack.Encoder()
    deep = Event(7, 1.0, 2.0, "broadcast", "a hostile broadcast", {"content": _deep(5_000)})
    fine = Event(8, 1.1, 2.1, "frame", "in frame 10 B", b"")
    out = msgspec.msgpack.decode(_safe_encode(enc, LogBatch([deep, fine], [])), type=ToParent)
    assert [e.seq for e in out.events] == [7, 8] and out.events[1] == fine
    assert out.events[0].summary == "a hostile broadcast" and "nested too deep" in out.events[0].held
    entry = Entry("feed", "m0", "value", _deep(5_000), 1.0, 2.0)
    got = msgspec.msgpack.decode(_safe_encode(enc, Entries([entry])), type=ToParent)
    assert got.entries[0].comm_id == "m0" and "nested too deep" in got.entries[0].value
