"""The daemon side of the notebook Automerge document: schema v3 (v2 layout + root `comms`).

Writes exactly the shapes of document-schema.md: cells keyed by id with a fractional
`position`, `source` as the only Text, `execution_count` and `outputs` entries as Str,
metadata as native values, and the #808 `comms/` map. Every write is one transaction, made
under the actor label `runtimed`.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from automerge.core import ROOT, Document, ObjType, ScalarType

log = logging.getLogger("inspector.testbed.doc")

ACTOR = b"runtimed"
SCHEMA_VERSION = 3

# --------------------------------------------------------------------------- fractional index


def position_after(key: str) -> str:
    """The loro fractional index "after" (one left-to-right scan, then append 0x80)."""
    data = bytes.fromhex(key) if key else b""
    for i, byte in enumerate(data):
        if byte < 0x80:
            return (data[:i] + b"\x80").hex().upper()
        if byte < 0xFF:
            return (data[:i] + bytes([byte + 1]) + b"\x80").hex().upper()
    return (data + b"\x80").hex().upper()


def position_before(key: str) -> str:
    data = bytes.fromhex(key) if key else b""
    for i, byte in enumerate(data):
        if byte > 0x80:
            return (data[:i] + b"\x80").hex().upper()
        if byte > 0x00:
            return (data[:i] + bytes([byte - 1]) + b"\x80").hex().upper()
    return (data + b"\x80").hex().upper()


def bulk_positions(count: int) -> list[str]:
    """`80, 8180, 8280, …, FF80, FF8180, …`: positions of a bulk load, in file order."""
    out: list[str] = []
    key = ""
    for _ in range(count):
        key = "80" if not key else position_after(key)
        out.append(key)
    return out


# --------------------------------------------------------------------------- JSON <-> Automerge


def _put_scalar_json(tx: Any, obj: bytes, prop: str | int, value: Any, insert: bool) -> None:
    op = tx.insert if insert else tx.put
    if value is None:
        op(obj, prop, ScalarType.Null, None)
    elif isinstance(value, bool):
        op(obj, prop, ScalarType.Boolean, value)
    elif isinstance(value, int):
        if -(2**63) <= value < 2**63:
            op(obj, prop, ScalarType.Int, value)
        else:
            op(obj, prop, ScalarType.Uint, value)
    elif isinstance(value, float):
        op(obj, prop, ScalarType.F64, value)
    else:
        op(obj, prop, ScalarType.Str, str(value))


def put_json(tx: Any, obj: bytes, prop: str | int, value: Any, insert: bool = False) -> None:
    """JSON -> native Automerge (object Map, array List, string Str; §6.1 table)."""
    if isinstance(value, dict):
        child = tx.insert_object(obj, prop, ObjType.Map) if insert else tx.put_object(obj, prop, ObjType.Map)
        for k, v in value.items():
            put_json(tx, child, str(k), v)
    elif isinstance(value, list):
        child = tx.insert_object(obj, prop, ObjType.List) if insert else tx.put_object(obj, prop, ObjType.List)
        for i, v in enumerate(value):
            put_json(tx, child, i, v, insert=True)
    else:
        _put_scalar_json(tx, obj, prop, value, insert)


def read_json(doc: Any, obj: bytes) -> Any:
    kind = doc.object_type(obj)
    if kind == ObjType.Map:
        out: dict[str, Any] = {}
        for k in doc.keys(obj):
            got = doc.get(obj, k)
            if got is not None:
                out[k] = _value(doc, got)
        return out
    if kind == ObjType.List:
        return [_value(doc, doc.get(obj, i)) for i in range(doc.length(obj))]
    return doc.text(obj)


def _value(doc: Any, got: Any) -> Any:
    if got is None:
        return None
    value, obj_id = got
    if isinstance(value, ObjType):
        return read_json(doc, obj_id)
    kind, scalar = value
    if kind in (ScalarType.Counter, ScalarType.Timestamp, ScalarType.Bytes):
        return None
    return scalar


def _set_text(tx: Any, obj: bytes, text: str) -> None:
    for i, ch in enumerate(text):
        tx.insert(obj, i, ScalarType.Str, ch)


# --------------------------------------------------------------------------- the document


class NotebookDoc:
    """One room's document. Callers serialize access (one asyncio loop)."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.doc.set_actor(ACTOR)

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def new(cls, notebook_id: str) -> NotebookDoc:
        doc = Document(actor_id=ACTOR)
        with doc.transaction() as tx:
            tx.put(ROOT, "schema_version", ScalarType.Uint, SCHEMA_VERSION)
            tx.put(ROOT, "notebook_id", ScalarType.Str, notebook_id)
            tx.put_object(ROOT, "cells", ObjType.Map)
            meta = tx.put_object(ROOT, "metadata", ObjType.Map)
            tx.put(meta, "runtime", ScalarType.Str, "python")
            tx.put_object(ROOT, "comms", ObjType.Map)
        return cls(doc)

    @classmethod
    def load(cls, data: bytes) -> NotebookDoc:
        """Load a saved document and migrate it to v3 (creates `comms`, stamps schema 3)."""
        nd = cls(Document.load(data))
        nd.migrate_to_v3()
        return nd

    def migrate_to_v3(self) -> bool:
        """Idempotent v2 -> v3 (#808): create an empty `comms` Map if missing or of the wrong kind."""
        got = self.doc.get(ROOT, "comms")
        has_map = got is not None and got[0] == ObjType.Map
        version = self.schema_version()
        if has_map and version is not None and version >= SCHEMA_VERSION:
            return False
        with self.doc.transaction() as tx:
            if not has_map:
                if got is not None:
                    log.warning("root 'comms' has the wrong kind; replacing it with an empty Map")
                tx.put_object(ROOT, "comms", ObjType.Map)
            tx.put(ROOT, "schema_version", ScalarType.Uint, SCHEMA_VERSION)
        return True

    def save(self) -> bytes:
        return self.doc.save()

    # -- root ------------------------------------------------------------------------------

    def _obj(self, parent: bytes, key: str | int) -> bytes | None:
        got = self.doc.get(parent, key)
        if got is None or not isinstance(got[0], ObjType):
            return None
        return got[1]

    def _str(self, parent: bytes, key: str, default: str = "") -> str:
        got = self.doc.get(parent, key)
        if got is None or isinstance(got[0], ObjType):
            return default
        return str(got[0][1])

    def schema_version(self) -> int | None:
        got = self.doc.get(ROOT, "schema_version")
        if got is None or isinstance(got[0], ObjType):
            return None
        return int(got[0][1])

    def notebook_id(self) -> str:
        return self._str(ROOT, "notebook_id")

    @property
    def cells_obj(self) -> bytes:
        obj = self._obj(ROOT, "cells")
        if obj is None:
            with self.doc.transaction() as tx:
                obj = tx.put_object(ROOT, "cells", ObjType.Map)
        return obj

    @property
    def comms_obj(self) -> bytes:
        obj = self._obj(ROOT, "comms")
        if obj is None:
            self.migrate_to_v3()
            obj = self._obj(ROOT, "comms")
        assert obj is not None
        return obj

    # -- cells -----------------------------------------------------------------------------

    def cell_ids(self) -> list[str]:
        """Cell ids in notebook order: by (position, id)."""
        cells = self._obj(ROOT, "cells")
        if cells is None:
            return []
        rows = []
        for key in self.doc.keys(cells):
            cell = self._obj(cells, key)
            if cell is None:
                continue
            cid = self._str(cell, "id", "")
            if not cid:
                continue
            rows.append((self._str(cell, "position", "80"), cid, key))
        rows.sort()
        return [key for _, _, key in rows]

    def cell(self, cell_id: str) -> dict[str, Any] | None:
        cells = self._obj(ROOT, "cells")
        cell = None if cells is None else self._obj(cells, cell_id)
        if cell is None:
            return None
        src = self._obj(cell, "source")
        outputs = self._obj(cell, "outputs")
        meta = self._obj(cell, "metadata")
        return {
            "id": self._str(cell, "id"),
            "cell_type": self._str(cell, "cell_type"),
            "position": self._str(cell, "position", "80"),
            "source": self.doc.text(src) if src is not None else "",
            "execution_count": self._str(cell, "execution_count", "null"),
            "outputs": [self._str_at(outputs, i) for i in range(self.doc.length(outputs))] if outputs else [],
            "metadata": read_json(self.doc, meta) if meta is not None else {},
        }

    def _str_at(self, lst: bytes, idx: int) -> str:
        got = self.doc.get(lst, idx)
        return "" if got is None or isinstance(got[0], ObjType) else str(got[0][1])

    def cells(self) -> list[dict[str, Any]]:
        return [c for c in (self.cell(cid) for cid in self.cell_ids()) if c is not None]

    def add_cell(self, cell_id: str, cell_type: str, source: str, position: str,
                 execution_count: str = "null", outputs: list[str] | None = None,
                 metadata: dict[str, Any] | None = None, tx: Any = None) -> None:
        if tx is None:
            with self.doc.transaction() as tx2:
                self.add_cell(cell_id, cell_type, source, position, execution_count, outputs, metadata, tx2)
            return
        cell = tx.put_object(self.cells_obj, cell_id, ObjType.Map)
        tx.put(cell, "id", ScalarType.Str, cell_id)
        tx.put(cell, "cell_type", ScalarType.Str, cell_type)
        tx.put(cell, "position", ScalarType.Str, position)
        _set_text(tx, tx.put_object(cell, "source", ObjType.Text), source)
        tx.put(cell, "execution_count", ScalarType.Str, execution_count)
        out = tx.put_object(cell, "outputs", ObjType.List)
        for i, entry in enumerate(outputs or []):
            tx.insert(out, i, ScalarType.Str, entry)
        put_json(tx, cell, "metadata", metadata or {})
        tx.put_object(cell, "resolved_assets", ObjType.Map)

    def append_cell(self, cell_type: str = "code", source: str = "", cell_id: str | None = None,
                    metadata: dict[str, Any] | None = None) -> str:
        cell_id = cell_id or str(uuid.uuid4())
        ids = self.cell_ids()
        last = self.cell(ids[-1])["position"] if ids else ""  # type: ignore[index]
        self.add_cell(cell_id, cell_type, source, position_after(last) if last else "80", metadata=metadata)
        return cell_id

    def _cell_obj(self, cell_id: str) -> bytes | None:
        cells = self._obj(ROOT, "cells")
        return None if cells is None else self._obj(cells, cell_id)

    def reset_outputs(self, cell_id: str, execution_count: str | None = None) -> bool:
        """Replace `outputs` with a new empty List (and set execution_count when given)."""
        cell = self._cell_obj(cell_id)
        if cell is None:
            return False
        with self.doc.transaction() as tx:
            tx.delete(cell, "outputs")
            tx.put_object(cell, "outputs", ObjType.List)
            if execution_count is not None:
                tx.put(cell, "execution_count", ScalarType.Str, execution_count)
        return True

    def outputs(self, cell_id: str) -> list[str]:
        c = self.cell(cell_id)
        return [] if c is None else c["outputs"]

    def append_output(self, cell_id: str, entry: str) -> int | None:
        cell = self._cell_obj(cell_id)
        out = None if cell is None else self._obj(cell, "outputs")
        if out is None:
            return None
        idx = self.doc.length(out)
        with self.doc.transaction() as tx:
            tx.insert(out, idx, ScalarType.Str, entry)
        return idx

    def set_output(self, cell_id: str, index: int, entry: str) -> bool:
        cell = self._cell_obj(cell_id)
        out = None if cell is None else self._obj(cell, "outputs")
        if out is None or index >= self.doc.length(out):
            return False
        with self.doc.transaction() as tx:
            tx.put(out, index, ScalarType.Str, entry)
        return True

    def set_outputs_at(self, locations: list[tuple[str, int, str]]) -> None:
        for cell_id, index, entry in locations:
            self.set_output(cell_id, index, entry)

    # -- notebook metadata -----------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        meta = self._obj(ROOT, "metadata")
        return read_json(self.doc, meta) if meta is not None else {}

    def raw_metadata(self, key: str) -> str | None:
        meta = self._obj(ROOT, "metadata")
        if meta is None:
            return None
        got = self.doc.get(meta, key)
        if got is None or isinstance(got[0], ObjType) or got[0][0] != ScalarType.Str:
            return None
        return str(got[0][1])

    def set_metadata_snapshot(self, snapshot: dict[str, Any]) -> None:
        """kernelspec / language_info / runt as whole new Maps (deleted when absent)."""
        meta = self._obj(ROOT, "metadata")
        with self.doc.transaction() as tx:
            if meta is None:
                meta = tx.put_object(ROOT, "metadata", ObjType.Map)
            for key in ("kernelspec", "language_info"):
                value = snapshot.get(key)
                if isinstance(value, dict):
                    put_json(tx, meta, key, {k: v for k, v in value.items() if v is not None})
                elif tx.get(meta, key) is not None:
                    tx.delete(meta, key)
            put_json(tx, meta, "runt", snapshot.get("runt") or {"schema_version": "1"})

    def metadata_snapshot(self) -> dict[str, Any]:
        meta = self.metadata()
        snap: dict[str, Any] = {}
        for key in ("kernelspec", "language_info"):
            if isinstance(meta.get(key), dict):
                snap[key] = meta[key]
        snap["runt"] = meta.get("runt") if isinstance(meta.get("runt"), dict) else {"schema_version": "1"}
        return snap

    # -- comms (#808, document-schema §10.4) -----------------------------------------------

    def put_comm(self, comm_id: str, target_name: str, model_module: str, model_name: str,
                 state_json: str, seq: int) -> None:
        comms = self.comms_obj
        with self.doc.transaction() as tx:
            entry = tx.put_object(comms, comm_id, ObjType.Map)
            tx.put(entry, "target_name", ScalarType.Str, target_name)
            tx.put(entry, "model_module", ScalarType.Str, model_module)
            tx.put(entry, "model_name", ScalarType.Str, model_name)
            tx.put(entry, "state", ScalarType.Str, state_json)
            tx.put_object(entry, "outputs", ObjType.List)
            tx.put(entry, "seq", ScalarType.Uint, seq)

    def _comm(self, comm_id: str) -> bytes | None:
        return self._obj(self.comms_obj, comm_id)

    def update_comm_state(self, comm_id: str, state_json: str) -> bool:
        entry = self._comm(comm_id)
        if entry is None:
            return False
        with self.doc.transaction() as tx:
            tx.put(entry, "state", ScalarType.Str, state_json)
        return True

    def set_comm_seq(self, comm_id: str, seq: int) -> bool:
        entry = self._comm(comm_id)
        if entry is None:
            return False
        with self.doc.transaction() as tx:
            tx.put(entry, "seq", ScalarType.Uint, seq)
        return True

    def remove_comm(self, comm_id: str) -> bool:
        comms = self.comms_obj
        if self.doc.get(comms, comm_id) is None:
            return False
        with self.doc.transaction() as tx:
            tx.delete(comms, comm_id)
        return True

    def clear_comms(self) -> bool:
        comms = self.comms_obj
        keys = self.doc.keys(comms)
        if not keys:
            return False
        with self.doc.transaction() as tx:
            for key in keys:
                tx.delete(comms, key)
        return True

    def append_comm_output(self, comm_id: str, manifest_hash: str) -> bool:
        entry = self._comm(comm_id)
        out = None if entry is None else self._obj(entry, "outputs")
        if out is None:
            return False
        with self.doc.transaction() as tx:
            tx.insert(out, self.doc.length(out), ScalarType.Str, manifest_hash)
        return True

    def clear_comm_outputs(self, comm_id: str) -> bool:
        entry = self._comm(comm_id)
        out = None if entry is None else self._obj(entry, "outputs")
        if out is None:
            return False
        n = self.doc.length(out)
        if n == 0:
            return False
        with self.doc.transaction() as tx:
            for i in reversed(range(n)):
                tx.delete(out, i)
        return True

    def comms(self) -> dict[str, dict[str, Any]]:
        """comm_id -> {target_name, model_module, model_name, state (parsed), outputs, seq}."""
        out: dict[str, dict[str, Any]] = {}
        comms = self._obj(ROOT, "comms")
        if comms is None:
            return out
        for key in self.doc.keys(comms):
            entry = self._obj(comms, key)
            if entry is None:
                continue
            raw = read_json(self.doc, entry)
            try:
                raw["state"] = json.loads(raw.get("state", "null"))
            except (TypeError, ValueError):
                pass
            out[key] = raw
        return out


# --------------------------------------------------------------------------- .ipynb loading


def _ipynb_source(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def notebook_from_ipynb(nb: dict[str, Any], notebook_id: str, store: Any) -> NotebookDoc:
    """Build a room document from nbformat JSON as the daemon's bulk load does."""
    nd = NotebookDoc.new(notebook_id)
    cells = nb.get("cells") or []
    positions = bulk_positions(len(cells))
    with nd.doc.transaction() as tx:
        for index, (cell, position) in enumerate(zip(cells, positions, strict=True)):
            cell_id = cell.get("id") or f"__external_cell_{index}"
            count = cell.get("execution_count")
            outputs = [store.store_manifest(o) for o in cell.get("outputs") or [] if isinstance(o, dict)]
            nd.add_cell(
                cell_id,
                cell.get("cell_type", "code"),
                _ipynb_source(cell.get("source")),
                position,
                str(count) if isinstance(count, int) and not isinstance(count, bool) else "null",
                outputs,
                cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {},
                tx,
            )
    meta = nb.get("metadata") or {}
    snap: dict[str, Any] = {}
    ks = meta.get("kernelspec")
    if isinstance(ks, dict):
        snap["kernelspec"] = {k: ks[k] for k in ("name", "display_name", "language") if k in ks}
    li = meta.get("language_info")
    if isinstance(li, dict):
        snap["language_info"] = {k: li[k] for k in ("name", "version") if k in li}
    snap["runt"] = meta.get("runt") if isinstance(meta.get("runt"), dict) else {"schema_version": "1"}
    nd.set_metadata_snapshot(snap)
    return nd


def new_python_notebook(notebook_id: str) -> NotebookDoc:
    """A new notebook as `create_notebook` builds it: default metadata plus one empty code cell."""
    nd = NotebookDoc.new(notebook_id)
    nd.set_metadata_snapshot({
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "runt": {"schema_version": "1", "env_id": str(uuid.uuid4()), "uv": {"dependencies": []}},
    })
    nd.append_cell("code", "")
    return nd
