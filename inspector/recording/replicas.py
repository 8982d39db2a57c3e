"""The documents a recording's frames build, per connection: what checkpoints hold and what
redaction rewrites. Both directions feed one replica per document, each through its own sync
state (the other peer's changes and the daemon's alike)."""

from __future__ import annotations

from typing import Any

from automerge import core as am

from ..v4.room import DOC_FRAMES
from .records import IN, TYPED, Checkpoint, DocState, Frame

# v2 uses only 0x00 (notebook); 0x05-0x0a are v4's other documents and unused in v2
DOC_TYPES = DOC_FRAMES


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def carries_changes(msg: bytes) -> bool:
    """Whether an Automerge sync message's change list is non-empty: heads, need and have come
    first (type byte; hash lists; have = last-sync hashes and a bloom filter each)."""
    try:
        n, pos = _uleb(msg, 1)
        pos += 32 * n
        n, pos = _uleb(msg, pos)
        pos += 32 * n
        have, pos = _uleb(msg, pos)
        for _ in range(have):
            n, pos = _uleb(msg, pos)
            pos += 32 * n
            n, pos = _uleb(msg, pos)
            pos += n
        changes, _ = _uleb(msg, pos)
    except IndexError:
        return True  # let Automerge judge a message this cannot read
    return changes > 0


def doc_state(doc: Any, saved: bytes | None = None) -> DocState:
    """A checkpoint's view of one `automerge.core.Document`; `saved`: its saved form when the
    caller keeps one (`DocReplica.saved`), else a full save now."""
    return DocState(doc.save() if saved is None else saved, [bytes(h).hex() for h in doc.get_heads()])


class ConnDocs:
    """One connection's documents."""

    def __init__(self) -> None:
        self.docs: dict[str, Any] = {}
        self._states: dict[tuple[str, str], Any] = {}

    def apply(self, frame: Frame) -> str | None:
        """Apply a typed sync frame; the name of the document it changed, or None."""
        if frame.kind != TYPED or frame.redacted or not frame.payload:
            return None
        name = DOC_TYPES.get(frame.payload[0])
        if name is None:
            return None
        doc = self.docs.get(name)
        if doc is None:
            doc = self.docs[name] = am.Document()
        body = frame.payload[1:]
        # a replay never answers, so a message without changes (heads, need, have: the sync
        # protocol's bookkeeping) cannot change what it shows; skipping it keeps replay cheap
        if not carries_changes(body):
            return None
        state = self._states.setdefault((name, frame.direction == IN and "in" or "out"), am.SyncState())
        before = doc.get_heads()
        try:
            doc.receive_sync_message(state, am.Message.decode(body))
        except Exception:  # the binding raises plain exceptions; a bad message changes nothing
            return None
        return name if doc.get_heads() != before else None

    def load(self, name: str, saved: bytes) -> Any:
        """Start document `name` over from a checkpoint's bytes (with fresh sync states)."""
        return self.adopt(name, am.Document.load(saved))

    def adopt(self, name: str, doc: Any) -> Any:
        """Start document `name` over from `doc` (with fresh sync states)."""
        self.docs[name] = doc
        self._states = {k: v for k, v in self._states.items() if k[0] != name}
        return doc


class Replicas:
    """Every connection's documents, fed frame by frame."""

    def __init__(self) -> None:
        self.conns: dict[int, ConnDocs] = {}

    def conn(self, conn: int) -> ConnDocs:
        return self.conns.setdefault(conn, ConnDocs())

    def apply(self, frame: Frame) -> str | None:
        return self.conn(frame.conn).apply(frame)

    def checkpoint(self, mono: float, wall: float, conn: int | None = None) -> Checkpoint | None:
        """The documents of `conn` (default: the latest connection that has any)."""
        if conn is None:
            with_docs = [c for c, d in self.conns.items() if d.docs]
            if not with_docs:
                return None
            conn = max(with_docs)
        docs = self.conns.get(conn)
        if docs is None or not docs.docs:
            return None
        return Checkpoint(mono, wall, conn, {name: doc_state(d) for name, d in docs.docs.items()})
