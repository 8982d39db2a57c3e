"""Protocol profiles: the only place where daemon protocol versions differ.

The session core speaks frames and Automerge; a profile says which handshake to send, how the
bootstrap reply looks, which frame types carry which documents, how the documents map onto the
one `Snapshot`, when the join is complete, how requests are framed, and which comm views the
divergence binding compares (`comm_views`). Profiles are found through `PROFILES`, an explicit
registry of protocol version -> "module:class" (v2 here, v4 in `inspector.v4.profile`),
imported when first used; a broken profile module fails loudly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .comm_table import CommTable, apply_iopub_comm
from .divergence import CommViews, DivergenceEngine, DocSource, FeedSource, SettleConfig, TableSource
from .document import DocReplica, NotebookReader
from .errors import BadFrame, ProtocolMismatch
from .protocol import messages as m
from .protocol.framing import FrameType
from .snapshot import CellView, CommView, DocumentSummary, FeedView, KernelView

if TYPE_CHECKING:
    from .session_core import SessionCore

# Frame types a later protocol added (v4's documents and session control): on a v2 connection
# they mean the daemon speaks that protocol; any other unknown type is kept as an unknown frame.
LATER_PROTOCOL_FRAMES = frozenset(ft for ft in FrameType if ft >= FrameType.RUNTIME_STATE_SYNC)


def capabilities(payload: bytes) -> dict[str, Any]:
    """The handshake reply as a dict; a reply that is not capabilities JSON is a bad frame."""
    try:
        raw = m.decode_json(payload)
    except m.MessageError as exc:
        raise BadFrame(f"the handshake reply is not JSON: {exc}") from None
    if not isinstance(raw, dict) or "protocol" not in raw:
        raise BadFrame(f"the handshake reply is not protocol capabilities: {str(raw)[:200]}")
    return raw


class Profile:
    version: int = 0
    name: str = "?"
    doc_types: dict[int, str] = {}
    path_depth: int = 2  # how deep the dirty paths of its replicas go (3: single entry fields)
    typed_bootstrap: bool = False  # the bootstrap and session control come as typed 0x07 frames
    sources: tuple[str, ...] = ()  # the room's own comm views, named in snapshots before any engine
    # index the documents for incremental reads right after the join, in slices (without it the
    # first update after the join builds the index at once: 0.5-0.9 s at 10,000 cells)
    warm_after_join: bool = True

    def comm_views(self, session: SessionCore) -> CommViews:
        """The comm views the divergence binding compares on this protocol."""
        raise NotImplementedError

    def join_gates(self, session: SessionCore) -> list[str]:
        """Beyond every document at the daemon's heads: what else the join waits for."""
        return []

    def waits_for(self, session: SessionCore, replica: DocReplica) -> bool:
        """Whether the join waits for this document to reach the daemon's heads."""
        return True

    def control(self, session: SessionCore, message: dict[str, Any]) -> None:
        """A session-control message (typed-bootstrap protocols)."""

    def keepalive(self) -> tuple[int, bytes] | None:
        """The frame that keeps a quiet peer attached (type, body), or None when the daemon drops
        no quiet peer. It must change nothing and announce nothing (docs/lifecycle.md)."""
        return None

    def request_body(self, req: m.Request, n: int) -> bytes:
        """How a read-only request is framed (`n`: a number unique on this connection)."""
        return m.encode(req)

    def broadcast(self, session: SessionCore, bc: Any, t: float) -> Any:
        """A decoded broadcast, before the divergence views see it; returns its effect (logged)."""
        return None

    def after_doc_change(self, session: SessionCore) -> None:
        """After a document change was read."""

    def feed_view(self, session: SessionCore) -> FeedView:
        return FeedView(False, (), "none")

    def handshake(self, notebook_id: str) -> m.NotebookSync:
        raise NotImplementedError

    def parse_bootstrap(self, payload: bytes) -> dict[str, Any]:
        """The daemon's reply to the handshake (first frame): capabilities as a dict."""
        raise NotImplementedError

    def unknown_frame(self, session: SessionCore, frame_type: int, body: bytes) -> None:
        """A typed frame the profile does not model. Default: keep it in the timeline."""

    def doc_changed(self, session: SessionCore, replica: DocReplica, dirty: set[tuple[str, ...]]) -> set[str]:
        """Re-read what a sync changed; return the tree paths that changed."""
        raise NotImplementedError

    def invalidate_refs(self, session: SessionCore, refs: set[str]) -> set[str]:
        return set()

    def cells(self, session: SessionCore) -> tuple[CellView, ...]:
        raise NotImplementedError

    def comms(self, session: SessionCore) -> tuple[CommView, ...]:
        raise NotImplementedError

    def metadata(self, session: SessionCore) -> Any:
        raise NotImplementedError

    def schema_version(self, session: SessionCore) -> int | None:
        raise NotImplementedError

    def kernel(self, session: SessionCore) -> KernelView:
        raise NotImplementedError

    def documents(self, session: SessionCore) -> tuple[DocumentSummary, ...]:
        return tuple(
            DocumentSummary(r.name, r.frame_type, r.heads, *r.change_actors()) for r in session.replicas.values()
        )

    def warnings(self, session: SessionCore) -> list[str]:
        return []

    def extra_root(self, session: SessionCore) -> dict[str, Any]:
        return {}


class V2Profile(Profile):
    """Protocol v2 (seed era): one notebook document; #808 comms in it; a CommSync feed."""

    version = 2
    name = "v2"
    doc_types = {FrameType.AUTOMERGE_SYNC: "notebook"}
    path_depth = 3
    sources = ("doc", "feed")

    def __init__(self) -> None:
        self.reader: NotebookReader | None = None

    def handshake(self, notebook_id: str) -> m.NotebookSync:
        return m.NotebookSync(notebook_id=notebook_id, protocol="v2")

    def parse_bootstrap(self, payload: bytes) -> dict[str, Any]:
        raw = capabilities(payload)
        version = raw.get("protocol_version")
        if version not in (None, 2) or raw.get("protocol") != "v2":
            raise ProtocolMismatch(
                f"the daemon answered as protocol {raw.get('protocol')} / {version} "
                f"({raw.get('daemon_version') or 'unknown version'})",
                version=version if isinstance(version, int) else None, daemon_version=raw.get("daemon_version"))
        return raw

    def comm_views(self, session: SessionCore) -> CommViews:
        return V2CommViews(session)

    def broadcast(self, session: SessionCore, bc: Any, t: float) -> Any:
        return session.feed.apply(bc, t)

    def after_doc_change(self, session: SessionCore) -> None:
        if session.feed.shutdown_pending:  # the document decides an ambiguous shutdown
            session.feed.resolve_shutdown({c.comm_id for c in self.comms(session)})

    def feed_view(self, session: SessionCore) -> FeedView:
        return session.feed.view()

    def unknown_frame(self, session: SessionCore, frame_type: int, body: bytes) -> None:
        if frame_type in LATER_PROTOCOL_FRAMES:
            dv = session.capabilities.get("daemon_version") or session.daemon_version
            raise ProtocolMismatch(
                f"the daemon ({dv or 'unknown version'}) sent frame type 0x{frame_type:02x}, which protocol v2 "
                "does not have: it speaks a later protocol (v3 accepts v2 peers but uses its own document "
                "schema); this inspector cannot follow it as v2", version=3, daemon_version=dv)

    def _reader(self, session: SessionCore) -> NotebookReader:
        if self.reader is None:
            self.reader = NotebookReader(resolve=session.resolve_output)
        return self.reader

    def doc_changed(self, session: SessionCore, replica: DocReplica, dirty: set[tuple[str, ...]]) -> set[str]:
        return self._reader(session).refresh(replica.doc, dirty)

    def invalidate_refs(self, session: SessionCore, refs: set[str]) -> set[str]:
        rep = session.replicas.get(FrameType.AUTOMERGE_SYNC)
        if rep is None:
            return set()
        return self._reader(session).invalidate_refs(rep.doc, refs)

    def cells(self, session: SessionCore) -> tuple[CellView, ...]:
        return self._reader(session).ordered_cells()

    def comms(self, session: SessionCore) -> tuple[CommView, ...]:
        return self._reader(session).ordered_comms()

    def metadata(self, session: SessionCore) -> Any:
        return self._reader(session).metadata

    def schema_version(self, session: SessionCore) -> int | None:
        return self._reader(session).schema_version

    def kernel(self, session: SessionCore) -> KernelView:
        k = session.kernel_state
        return KernelView(status=k.get("status"), source=k.get("source", "list_rooms"),
                          executing=k.get("executing"), queued=tuple(k.get("queued", ())))

    def warnings(self, session: SessionCore) -> list[str]:
        r = self._reader(session)
        out = list(r.warnings)
        if r.has_comms_map and (r.schema_version or 0) < 3:
            out.append(f"comms map present with schema_version {r.schema_version} (< 3)")
        if not r.has_comms_map and (r.schema_version or 0) >= 3:
            out.append("schema_version 3 without a comms map: not the #808 layout (document-schema §10.1)")
        return out

    def extra_root(self, session: SessionCore) -> dict[str, Any]:
        return dict(self._reader(session).extra_root)


class V2CommViews(CommViews):
    """v2: the document's `comms/` map, the CommSync feed and, with a tap, the kernel's IOPub."""

    names = ("doc", "feed", "kernel")

    def __init__(self, session: SessionCore) -> None:
        super().__init__(session)
        self.doc = DocSource()
        self.doc.ready = False  # until the comms map exists and the join is complete
        self.feed = FeedSource(session.feed)
        opts = session.config.divergence
        self.tapping = opts is not None and opts.kernel_connection not in (None, "auto")
        self.kernel_table = CommTable()
        self.kernel_src = TableSource("kernel", self.kernel_table, partial=True) if self.tapping else None
        self._shutdown_pending = False

    def engine(self, config: SettleConfig, on_transition: Any) -> DivergenceEngine:
        eng = DivergenceEngine(config, on_transition=on_transition)
        for src in (self.doc, self.feed, self.kernel_src):
            if src is not None:
                eng.add_source(src)
        return eng

    def _reader(self) -> NotebookReader | None:
        prof = self.core.profile
        return prof.reader if isinstance(prof, V2Profile) else None

    def _update_ready(self) -> None:
        reader = self._reader()
        ready = bool(reader is not None and reader.has_comms_map) and self.joined
        if ready != self.doc.ready:
            self.doc.ready = ready
            # every view's comms: one only the feed (or the kernel) holds is compared from now on too
            others = [s for s in (self.feed, self.kernel_src) if s is not None]
            self.doc.notify(set(self.doc.comms).union(*(s.comms for s in others)))

    def on_join(self, now: float) -> None:
        self._update_ready()

    def on_leave(self) -> None:
        self.doc.ready = False

    def on_doc(self, frame_type: int, changed: set[str], now: float) -> None:
        reader = self._reader()
        comms = reader.comms if reader is not None else {}
        ids = {p[6:] for p in changed if p.startswith("comms/")}
        self.doc.refresh([comms[c] for c in ids if c in comms], now, changed_ids=ids)
        self._update_ready()
        if self._shutdown_pending and not self.core.feed.shutdown_pending:
            self._shutdown_pending = False  # the doc resolved an ambiguous shutdown
            self.feed.sync_all(now)

    def on_broadcast(self, bc: Any, now: float) -> None:
        self.feed.on_broadcast(bc, now)
        self._shutdown_pending = self.core.feed.shutdown_pending

    def on_kernel_comm(self, msg_type: str, content: dict[str, Any], buffers: list[bytes], now: float) -> None:
        if self.kernel_src is None:
            return
        apply_iopub_comm(self.kernel_table, msg_type, content, buffers, now)
        cid = content.get("comm_id")
        if not isinstance(cid, str):
            return
        rec = self.kernel_table.comms.get(cid)
        if msg_type == "comm_open" and rec is not None and rec.is_output_widget:
            # `with out:` captures are routed by the daemon by parent msg_id; the kernel's own
            # widget never holds them, so its outputs are unknown here, not empty.
            rec.captured = None
        self.kernel_src.sync([cid], now)

    def on_kernel_event(self, what: str, payload: Any, now: float) -> None:
        src = self.kernel_src
        if src is None:
            return
        if what == "shutdown":
            src.clear("shutdown_request", now)
        elif what == "dead":
            src.dead = True
            src.mark_clear("dead", now)
            src.sync_all(now)

    def shown(self, tapping: bool) -> tuple[str, ...]:
        out = [s.name for s in (self.doc, self.feed) if s.ready]
        if self.kernel_src is not None and (tapping or self.kernel_src.comms):
            out.append("kernel")
        return tuple(out)

    def key_views(self, comm_id: str, now: float) -> dict[str, dict[str, tuple[Any, float | None]]]:
        from .divergence import _views_of

        out = {}
        for src in (self.doc, self.feed, self.kernel_src):
            if src is not None and (views := _views_of(src, comm_id, now)):
                out[src.name] = views
        return out


# Protocol version -> "module:class"; imported on first use (the CLI pays only for what it uses).
PROFILES: dict[int, str] = {
    2: "inspector.profiles:V2Profile",
    4: "inspector.v4.profile:V4Profile",
}


def profile_for(version: int) -> Profile:
    where = PROFILES.get(version)
    if where is None:
        raise ProtocolMismatch(f"daemon speaks protocol {version}; supported: {sorted(PROFILES)}", version=version)
    module, _, name = where.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls()
