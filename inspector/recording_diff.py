"""What changed in a recording between two points (`diff FILE --from N --to M`, the window's
"Diff two points"): per cell and per comm, field by field and key by key, with the writers
(Automerge actors) of the changes that touched each one.

Both points are replayed through the session core (`inspector.replay_driver`), so the values
are the ones the tree showed there; the writers come from the Automerge changes each
document gained between the two points' heads.
"""

from __future__ import annotations

from typing import Any

from .replay_driver import At, Replay

CELL_FIELDS = ("cell_type", "position", "source", "execution_count", "outputs", "metadata")
COMM_FIELDS = ("model_name", "model_module", "target_name", "seq")


def actor_label(actor: bytes) -> str:
    """An actor as people read it: its text when it is text (`runtimed`, `kernel:…`), else hex."""
    raw = bytes(actor)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex()
    return text if text.isprintable() and text else raw.hex()


def _point(path: str, at: At) -> tuple[Replay, dict[str, Any], dict[str, list[bytes]]]:
    rp = Replay(path)
    core = rp.run(at)
    snap = core.snapshot(taken_at=rp.wall_of(core.now or rp.meta.start_mono)).to_json()
    heads = {rep.name: list(rep.doc.get_heads()) for rep in core.replicas.values()}
    return rp, snap, heads


def _where(rp: Replay, label: At) -> dict[str, Any]:
    core = rp.core
    return {"seq": core.log._seq, "record": rp.index, "at": label.seq if label.seq is not None else label.mono,
            "t": round((core.now or rp.meta.start_mono) - rp.meta.start_mono, 6),
            "heads": {rep.name: list(rep.heads) for rep in core.replicas.values()}}


def diff_points(path: str, a: At, b: At) -> dict[str, Any]:
    """The difference between the room at `a` and at `b` (b later than a) as JSON-ready data."""
    rp_a, snap_a, heads_a = _point(path, a)
    rp_b, snap_b, _ = _point(path, b)
    changes: list[dict[str, Any]] = []
    touched: dict[str, set[str]] = {}  # cell or comm id -> writers
    for rep in rp_b.core.replicas.values():
        base = heads_a.get(rep.name, [])
        try:
            new = rep.doc.get_changes(base)
        except Exception:  # heads of `a` unknown to `b` (b is earlier): no writers
            new = []
        for ch in new:
            who = actor_label(ch.actor_id)
            try:
                paths = sorted(rep.paths.dirty_from([ch], rep.doc))
            except Exception:
                paths = []
            changes.append({"doc": rep.name, "hash": bytes(ch.hash).hex(), "writer": who,
                            "paths": ["/".join(map(str, p)) for p in paths[:50]]})
            for p in paths:
                for part in p[1:2]:
                    touched.setdefault(str(part), set()).add(who)
    out = {"from": _where(rp_a, a), "to": _where(rp_b, b), "cells": {}, "comms": {}, "changes": changes}

    cells_a = {c["id"]: c for c in snap_a["cells"]}
    cells_b = {c["id"]: c for c in snap_b["cells"]}
    for cid in sorted(cells_a.keys() | cells_b.keys()):
        ca, cb = cells_a.get(cid), cells_b.get(cid)
        entry = _entry(ca, cb, CELL_FIELDS, "fields")
        if entry is not None:
            entry["writers"] = sorted(touched.get(cid, ()))
            out["cells"][cid] = entry
    comms_a = {c["comm_id"]: c for c in snap_a["comms"]}
    comms_b = {c["comm_id"]: c for c in snap_b["comms"]}
    for cid in sorted(comms_a.keys() | comms_b.keys()):
        ca, cb = comms_a.get(cid), comms_b.get(cid)
        entry = _entry(ca, cb, COMM_FIELDS, "fields")
        if ca is not None and cb is not None:
            sa, sb = ca.get("state") or {}, cb.get("state") or {}
            keys = {k: {"from": sa.get(k), "to": sb.get(k)} for k in sorted(sa.keys() | sb.keys())
                    if sa.get(k) != sb.get(k)}
            if keys:
                entry = entry or {"change": "changed", "fields": {}}
                entry["keys"] = keys
        if entry is not None:
            entry["model_name"] = (cb or ca or {}).get("model_name")
            entry["writers"] = sorted(touched.get(cid, ()))
            out["comms"][cid] = entry
    return out


def _entry(a: dict[str, Any] | None, b: dict[str, Any] | None, fields: tuple[str, ...],
           name: str) -> dict[str, Any] | None:
    if a is None and b is None:
        return None
    if a is None:
        return {"change": "added", name: {f: {"from": None, "to": b.get(f)} for f in fields if f in b}}  # type: ignore[union-attr]
    if b is None:
        return {"change": "removed", name: {f: {"from": a.get(f), "to": None} for f in fields if f in a}}
    diff = {f: {"from": a.get(f), "to": b.get(f)} for f in fields if a.get(f) != b.get(f)}
    return {"change": "changed", name: diff} if diff else None
