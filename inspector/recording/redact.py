"""Redaction for bug reports: a copy of a recording without the user's code or data.

Cell sources, outputs and string values (widget state, metadata, messages) become
`<redacted len=N h=HASH>`, where N is the length in characters and HASH a keyed hash (HMAC-
SHA256 under a key drawn for this redaction and not stored): equal strings get equal hashes
within one report, and short strings cannot be guessed by hashing candidates. Map keys, ids,
type names, model names, positions, hashes and every number and boolean are kept.

Automerge sync frames cannot keep their bodies: a change holds the inserted text itself, and
rewriting a change changes its hash and so every later dependency. The redacted recording
therefore drops each sync frame's body (the frame stays with its type, size, direction and
times) and, after each frame that changed a document, adds a checkpoint with that connection's
documents rebuilt from their redacted contents (each value written under the actor that wrote
the original, so the writers stay). A replay loads those checkpoints where it would have
applied the sync message: same tree, same structure, same writers and numbers, no text.
JSON frames, presence and kernel messages are rewritten in place and stay decodable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable
from typing import Any

import cbor2
import msgspec
from automerge import core as am

from ..document import parse_exid
from .recording_file import RecordingReader, RecordingWriter
from .records import (
    PREAMBLE,
    TYPED,
    UNTYPED,
    Checkpoint,
    DocState,
    Frame,
    Kernel,
    Manifest,
    Mark,
    Meta,
    Record,
)
from .replicas import DOC_TYPES, ConnDocs

# string values under these keys are structure (ids, type and model names, fractional positions)
KEEP_KEYS = frozenset({
    "id", "cell_id", "comm_id", "msg_id", "msg_type", "type", "action", "event", "result", "channel",
    "target_name", "target_module", "model_module", "model_module_version", "model_name", "view_module",
    "view_module_version", "view_name", "_model_module", "_model_module_version", "_model_name",
    "_view_module", "_view_module_version", "_view_name", "cell_type", "position", "output_type",
    "execution_id", "status", "execution_state", "method", "protocol", "daemon_version", "notebook_id",
    "peer_id", "actor_label", "session", "version", "kind", "phase", "lifecycle", "activity", "hash",
    "ref", "digest", "required_heads", "heads", "buffer_paths", "schema_version", "capture_msg_id",
    "content_type", "mime", "mime_type", "encoding", "orientation", "layout", "style", "children",
    "state_error", "env_source", "runtime", "trust", "room_id", "comments_doc_id", "connection_scope",
    "ephemeral", "signature_scheme", "transport", "date", "key", "keys", "direction",
})
# string values kept only when they are one of these (stream names, not whatever a widget calls "name")
KEEP_VALUES = {"name": frozenset({"stdout", "stderr"})}
IDISH = re.compile(
    r"^(?:IPY_MODEL_)?[0-9a-fA-F]{16,}$"  # hashes, comm ids
    r"|^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"  # uuids
    r"|^(?:cell|comm|exec|peer)-[0-9a-fA-F-]{8,}$"
    r"|^<redacted len=\d+ h=[0-9a-f]+>$"
)
SYNC_MESSAGE_TYPES = (0x42, 0x43)


class Redactor:
    """Rewrites values; one instance per report (one key, so equal values hash equally)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def text(self, s: str) -> str:
        if IDISH.match(s):
            return s
        h = hmac.new(self._key, s.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]
        return f"<redacted len={len(s)} h={h}>"

    def string(self, s: str, key: str | None = None) -> str:
        """A string value: kept under a structural key, rewritten inside when it holds JSON."""
        if key in KEEP_KEYS or (key in KEEP_VALUES and s in KEEP_VALUES[key]):
            return s
        stripped = s.lstrip()
        if stripped[:1] in ("{", "["):
            try:
                inner = json.loads(s)
            except ValueError:
                pass
            else:
                return json.dumps(self.value(inner), separators=(",", ":"))
        return self.text(s)

    def value(self, v: Any, key: str | None = None) -> Any:
        if isinstance(v, str):
            return self.string(v, key)
        if isinstance(v, dict):
            return {k: self.value(x, k if isinstance(k, str) else None) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [self.value(x, key if key in KEEP_KEYS else None) for x in v]
        if isinstance(v, bytes | bytearray):
            return self.text(bytes(v).hex()).encode()
        return v

    # -- Automerge documents -----------------------------------------------------------------

    def document(self, doc: Any) -> Any:
        """A new document with `doc`'s structure and redacted values, each written under the
        actor of the original op (so the writer labels stay)."""
        out = am.Document()
        writes = _Writes(out)
        self._copy_map(doc, am.ROOT, out, am.ROOT, writes)
        writes.flush()
        return out

    def _copy_map(self, doc: Any, src: bytes, out: Any, dst: bytes, w: _Writes) -> None:
        for key in doc.keys(src):
            got = doc.get(src, key)
            if got is not None:
                self._copy_value(doc, got, key, out, dst, key, w, insert=False)

    def _copy_list(self, doc: Any, src: bytes, out: Any, dst: bytes, w: _Writes, key: str | None) -> None:
        for i in range(doc.length(src)):
            got = doc.get(src, i)
            if got is not None:
                self._copy_value(doc, got, key, out, dst, i, w, insert=True)

    def _copy_value(self, doc: Any, got: Any, key: str | None, out: Any, dst: bytes, prop: str | int,
                    w: _Writes, insert: bool) -> None:
        value, exid = got
        tx = w.tx(_actor(exid))
        if isinstance(value, am.ObjType):
            make = tx.insert_object if insert else tx.put_object
            child = make(dst, prop, value)
            if value == am.ObjType.Map:
                self._copy_map(doc, exid, out, child, w)
            elif value == am.ObjType.List:
                self._copy_list(doc, exid, out, child, w, key)
            else:  # text
                text = doc.text(exid)
                new = text if key in KEEP_KEYS else self.string(text, key)
                tx = w.tx(_actor(exid))
                for i, ch in enumerate(new):
                    tx.insert(child, i, am.ScalarType.Str, ch)
            return
        kind, scalar = value
        if kind == am.ScalarType.Str:
            scalar = self.string(scalar, key)
        elif kind == am.ScalarType.Bytes:
            scalar = b""
        elif kind not in (am.ScalarType.Int, am.ScalarType.Uint, am.ScalarType.F64, am.ScalarType.Boolean,
                          am.ScalarType.Null, am.ScalarType.Counter, am.ScalarType.Timestamp):
            kind, scalar = am.ScalarType.Null, None
        (tx.insert if insert else tx.put)(dst, prop, kind, scalar)

    def doc_state(self, saved: bytes, heads: list[str] | None = None) -> tuple[DocState, Any]:
        original = am.Document.load(saved)
        red = self.document(original)
        state = DocState(red.save(), [bytes(h).hex() for h in red.get_heads()],
                         heads if heads is not None else [bytes(h).hex() for h in original.get_heads()])
        return state, original


class _Writes:
    """Batches consecutive writes by the same actor into one transaction."""

    def __init__(self, doc: Any) -> None:
        self.doc = doc
        self._actor: bytes | None = None
        self._cm: Any = None
        self._tx: Any = None

    def tx(self, actor: bytes | None) -> Any:
        actor = actor or b"redacted"
        if self._tx is None or actor != self._actor:
            self.flush()
            self.doc.set_actor(actor)
            self._cm = self.doc.transaction()
            self._tx = self._cm.__enter__()
            self._actor = actor
        return self._tx

    def flush(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
        self._cm = self._tx = self._actor = None


def _actor(exid: bytes) -> bytes | None:
    parsed = parse_exid(exid)
    return parsed[0] if parsed else None


# --------------------------------------------------------------------------- recordings


class _Conn(ConnDocs):
    def __init__(self) -> None:
        super().__init__()
        self.redacted: dict[str, DocState] = {}


def redact_records(records: Iterable[Record], redactor: Redactor | None = None) -> Iterable[Record]:
    """The redacted recording, record by record (see the module docstring)."""
    r = redactor or Redactor()
    conns: dict[int, _Conn] = {}
    for rec in records:
        if isinstance(rec, Meta):
            yield rec
        elif isinstance(rec, Frame):
            conn = conns.setdefault(rec.conn, _Conn())
            out, changed = _redact_frame(rec, conn, r)
            yield out
            if changed is not None:
                state, _ = r.doc_state(conn.docs[changed].save())
                conn.redacted[changed] = state
                yield Checkpoint(rec.mono, rec.wall, rec.conn, dict(conn.redacted))
        elif isinstance(rec, Checkpoint):
            conn = conns.setdefault(rec.conn, _Conn())
            docs = {}
            for name, ds in rec.docs.items():
                conn.load(name, ds.saved)  # later frames apply on top of the checkpoint
                docs[name], _ = r.doc_state(ds.saved, ds.heads)
            conn.redacted.update(docs)
            yield Checkpoint(rec.mono, rec.wall, rec.conn, docs, r.value(rec.core))
        elif isinstance(rec, Kernel):
            yield Kernel(rec.mono, rec.wall, r.value(rec.msg), rec.channel)
        elif isinstance(rec, Mark):
            yield Mark(rec.mono, rec.wall, rec.text, r.value(rec.data))
        elif isinstance(rec, Manifest):  # outputs: their text and data are redacted like any value
            yield Manifest(rec.mono, rec.wall, rec.ref, r.value(rec.manifest), rec.error)
        else:
            yield rec


def _redact_frame(rec: Frame, conn: _Conn, r: Redactor) -> tuple[Frame, str | None]:
    """(the frame as it goes in the redacted recording, the document it changed or None)."""
    p = rec.payload
    if rec.kind == PREAMBLE or rec.redacted or not p:
        return rec, None

    def stripped(keep: int) -> Frame:
        return Frame(rec.conn, rec.direction, rec.kind, rec.mono, rec.wall, p[:keep], len(p), True)

    if rec.kind == TYPED:
        ft, body = p[0], p[1:]
        if ft in DOC_TYPES:
            return stripped(1), conn.apply(rec)
        if ft == 0x04:
            try:
                value = cbor2.loads(body)
            except Exception:  # cbor2 raises several types
                return stripped(1), None
            return _with(rec, bytes([ft]) + cbor2.dumps(r.value(value))), None
        if ft in (0x01, 0x02, 0x03, 0x07):
            return _json_frame(rec, p[:1], body, r), None
        return stripped(1), None
    if rec.kind == UNTYPED:
        if p[:1] == b"{":
            return _json_frame(rec, b"", p, r), None
        if p[0] in SYNC_MESSAGE_TYPES:  # settings_sync: its own document, not replayed
            return stripped(0), None
    return stripped(0), None


def _json_frame(rec: Frame, prefix: bytes, body: bytes, r: Redactor) -> Frame:
    try:
        value = json.loads(body)
    except ValueError:
        return Frame(rec.conn, rec.direction, rec.kind, rec.mono, rec.wall, prefix, len(rec.payload), True)
    return _with(rec, prefix + json.dumps(r.value(value), separators=(",", ":")).encode())


def _with(rec: Frame, payload: bytes) -> Frame:
    return Frame(rec.conn, rec.direction, rec.kind, rec.mono, rec.wall, payload, len(payload))


def redact_file(src: str, dst: str, redactor: Redactor | None = None) -> int:
    """Write the redacted copy of recording `src` to `dst`; returns the records written."""
    r = redactor or Redactor()
    with RecordingReader(src) as reader:
        meta = msgspec.structs.replace(reader.meta, extra=r.value(reader.meta.extra))
        _write_redacted(reader, dst, meta, r)
    with RecordingReader(dst) as out:
        return len(out)


def _write_redacted(reader: RecordingReader, dst: str, meta: Meta, r: Redactor) -> None:
    with RecordingWriter(dst, meta, fsync_interval=None) as w:
        records = iter(reader)
        next(records)  # the writer wrote the metadata (the last one, with the versions) first
        for rec in redact_records(records, r):
            if not isinstance(rec, Meta):  # one copy of the metadata is enough
                w.append(rec)
