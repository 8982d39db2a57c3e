"""The incremental reader never lies: after every sync, what it shows equals a full re-read of
the same replica, whatever the daemon changed (fields, entries, whole maps, big changes)."""

from __future__ import annotations

import json
import random

import msgspec
import pytest
from automerge import core as am
from scripted_daemon import build_doc, put_cell, put_comm

from inspector.change_ops import ChangeFormatError, decode_change
from inspector.document import ALL, DocReplica, NotebookReader

S = am.ScalarType


def sync(src: am.Document, s_src: am.SyncState, rep: DocReplica, reader: NotebookReader) -> set[str]:
    changed: set[str] = set()
    for _ in range(50):
        m = src.generate_sync_message(s_src)
        if m is not None:
            reply, dirty = rep.receive(m.encode())
            changed |= reader.refresh(rep.doc, dirty)
        else:
            reply = rep.generate()
        if reply is not None:
            src.receive_sync_message(s_src, am.Message.decode(reply))
        if m is None and reply is None:
            return changed
    raise AssertionError("sync did not converge")


def full_read(doc: am.Document) -> NotebookReader:
    r = NotebookReader()
    r.refresh(doc, {ALL})
    return r


def views(r: NotebookReader) -> tuple[list, list, object]:
    def plain(v: object) -> object:
        d = msgspec.to_builtins(v)
        d.pop("obj_id", None)  # the reader reports it; equal by construction
        return d

    return [plain(c) for c in r.ordered_cells()], [plain(c) for c in r.ordered_comms()], r.metadata


@pytest.mark.parametrize("depth", [2, 3])
def test_incremental_reads_equal_a_full_read_after_random_changes(depth: int) -> None:
    rnd = random.Random(depth)
    cells = [{"id": f"c{i}", "position": f"{0x80 + i:02X}80", "source": f"x = {i}\n" * 3} for i in range(30)]
    comms = {f"w{k}": {"model_name": "IntSliderModel", "model_module": "@jupyter-widgets/controls",
                       "state": {"_model_name": "IntSliderModel", "value": k}, "seq": k} for k in range(10)}
    src = build_doc(cells, schema=3, comms=comms)
    rep, reader, s_src = DocReplica("notebook", 0, depth), NotebookReader(), am.SyncState()
    sync(src, s_src, rep, reader)
    assert views(reader) == views(full_read(rep.doc))
    cells_obj = src.get(am.ROOT, "cells")[1]
    comms_obj = src.get(am.ROOT, "comms")[1]
    for step in range(120):
        kind = rnd.choice(["source", "state", "bad_state", "exec", "position", "new_cell", "del_cell",
                           "new_comm", "del_comm", "metadata", "outputs", "cell_md", "burst", "replace_cell",
                           "reopen_comm"])
        live_cells = src.keys(cells_obj)
        live_comms = src.keys(comms_obj)
        with src.transaction() as tx:
            if kind == "source" and live_cells:
                text = src.get(src.get(cells_obj, rnd.choice(live_cells))[1], "source")[1]
                tx.insert(text, rnd.randint(0, src.length(text)), S.Str, rnd.choice("abc\n"))
            elif kind in ("state", "bad_state") and live_comms:
                entry = src.get(comms_obj, rnd.choice(live_comms))[1]
                tx.put(entry, "state", S.Str, json.dumps({"value": step}) if kind == "state" else "{broken")
            elif kind == "exec" and live_cells:
                tx.put(src.get(cells_obj, rnd.choice(live_cells))[1], "execution_count", S.Str,
                       rnd.choice([str(step), "null", "nope"]))
            elif kind == "position" and live_cells:
                tx.put(src.get(cells_obj, rnd.choice(live_cells))[1], "position", S.Str, f"{rnd.randint(1, 250):02X}80")
            elif kind == "new_cell":
                put_cell(tx, cells_obj, {"id": f"n{step}", "position": "FF80", "source": "new"})
            elif kind == "del_cell" and live_cells:
                tx.delete(cells_obj, rnd.choice(live_cells))
            elif kind == "new_comm":
                put_comm(tx, comms_obj, f"n{step}", {"model_name": "OutputModel", "state": {}, "seq": 100 + step})
            elif kind == "del_comm" and live_comms:
                tx.delete(comms_obj, rnd.choice(live_comms))
            elif kind == "metadata":
                md = src.get(am.ROOT, "metadata")[1]
                tx.put(md, "custom", S.Str, f"v{step}")
            elif kind == "outputs" and live_cells:
                outs = src.get(src.get(cells_obj, rnd.choice(live_cells))[1], "outputs")[1]
                tx.insert(outs, 0, S.Str, json.dumps({"output_type": "stream", "name": "stdout", "text": str(step)}))
            elif kind == "cell_md" and live_cells:
                md = tx.put_object(src.get(cells_obj, rnd.choice(live_cells))[1], "metadata", am.ObjType.Map)
                tx.put(md, "tags", S.Str, "t")
            elif kind == "replace_cell" and live_cells:  # a new object at the same key
                put_cell(tx, cells_obj, {"id": rnd.choice(live_cells), "position": "80", "source": "again"})
            elif kind == "reopen_comm" and live_comms:  # comm_open of an existing id: new entry, new seq
                put_comm(tx, comms_obj, rnd.choice(live_comms), {"model_name": "IntSliderModel",
                                                                 "state": {"value": 0}, "seq": 500 + step})
            elif kind == "burst" and live_comms:
                for cid in live_comms[:5]:
                    tx.put(src.get(comms_obj, cid)[1], "state", S.Str, json.dumps({"value": -step}))
        sync(src, s_src, rep, reader)
        assert views(reader) == views(full_read(rep.doc)), f"step {step}: {kind}"
    assert rep.paths.fallbacks == 0  # every change was placed without a full re-read


def test_change_decoder_rejects_garbage() -> None:
    with pytest.raises(ChangeFormatError):
        decode_change(b"not a change at all")
    doc = build_doc([{"id": "a", "position": "80", "source": "x"}])
    raw = doc.get_changes([])[0].raw_bytes
    with pytest.raises(ChangeFormatError):
        decode_change(raw[:20])  # truncated
    ops = decode_change(raw)
    assert ops.actor == b"runtimed" and ops.keys[0] == "schema_version" and ops.created
