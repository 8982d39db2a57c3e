"""Protocol profiles: what differs between daemon protocol versions, behind one interface.

The session speaks frames and Automerge; a profile says which handshake to send, how the
bootstrap reply looks, which frame types carry which documents, and how the documents map
onto the one `Snapshot`. v2 lives here; v4 registers its own profile from `inspector.v4`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .document import DocReplica, NotebookReader
from .errors import BadFrame, ProtocolMismatch
from .protocol import messages as m
from .protocol.framing import FrameType
from .snapshot import CellView, CommView, DocumentSummary, KernelView

if TYPE_CHECKING:
    from .session import PeerSession


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
    has_feed: bool = False
    path_depth: int = 2  # how deep the dirty paths of its replicas go (3: single entry fields)

    def handshake(self, notebook_id: str) -> m.NotebookSync:
        raise NotImplementedError

    def parse_bootstrap(self, payload: bytes) -> dict[str, Any]:
        """The daemon's reply to the handshake (first frame): capabilities as a dict."""
        raise NotImplementedError

    def unknown_frame(self, session: PeerSession, frame_type: int, body: bytes) -> None:
        """A typed frame the profile does not model. Default: keep it in the timeline."""

    def doc_changed(self, session: PeerSession, replica: DocReplica, dirty: set[tuple[str, ...]]) -> set[str]:
        """Re-read what a sync changed; return the tree paths that changed."""
        raise NotImplementedError

    def invalidate_refs(self, session: PeerSession, refs: set[str]) -> set[str]:
        return set()

    def cells(self, session: PeerSession) -> tuple[CellView, ...]:
        raise NotImplementedError

    def comms(self, session: PeerSession) -> tuple[CommView, ...]:
        raise NotImplementedError

    def metadata(self, session: PeerSession) -> Any:
        raise NotImplementedError

    def schema_version(self, session: PeerSession) -> int | None:
        raise NotImplementedError

    def kernel(self, session: PeerSession) -> KernelView:
        raise NotImplementedError

    def documents(self, session: PeerSession) -> tuple[DocumentSummary, ...]:
        return tuple(
            DocumentSummary(r.name, r.frame_type, r.heads, *r.change_actors()) for r in session.replicas.values()
        )

    def warnings(self, session: PeerSession) -> list[str]:
        return []

    def extra_root(self, session: PeerSession) -> dict[str, Any]:
        return {}


class V2Profile(Profile):
    """Protocol v2 (seed era): one notebook document; #808 comms in it; a CommSync feed."""

    version = 2
    name = "v2"
    doc_types = {FrameType.AUTOMERGE_SYNC: "notebook"}
    has_feed = True
    path_depth = 3

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

    def unknown_frame(self, session: PeerSession, frame_type: int, body: bytes) -> None:
        if frame_type >= FrameType.RUNTIME_STATE_SYNC:
            dv = session.capabilities.get("daemon_version") or session.daemon_version
            raise ProtocolMismatch(
                f"the daemon ({dv or 'unknown version'}) sent frame type 0x{frame_type:02x}, which protocol v2 "
                "does not have: it speaks a later protocol (v3 accepts v2 peers but uses its own document "
                "schema); this inspector cannot follow it as v2", version=3, daemon_version=dv)

    def _reader(self, session: PeerSession) -> NotebookReader:
        if self.reader is None:
            self.reader = NotebookReader(resolve=session.resolve_output)
        return self.reader

    def doc_changed(self, session: PeerSession, replica: DocReplica, dirty: set[tuple[str, ...]]) -> set[str]:
        return self._reader(session).refresh(replica.doc, dirty)

    def invalidate_refs(self, session: PeerSession, refs: set[str]) -> set[str]:
        rep = session.replicas.get(FrameType.AUTOMERGE_SYNC)
        if rep is None:
            return set()
        return self._reader(session).invalidate_refs(rep.doc, refs)

    def cells(self, session: PeerSession) -> tuple[CellView, ...]:
        return self._reader(session).ordered_cells()

    def comms(self, session: PeerSession) -> tuple[CommView, ...]:
        return self._reader(session).ordered_comms()

    def metadata(self, session: PeerSession) -> Any:
        return self._reader(session).metadata

    def schema_version(self, session: PeerSession) -> int | None:
        return self._reader(session).schema_version

    def kernel(self, session: PeerSession) -> KernelView:
        k = session.kernel_state
        return KernelView(status=k.get("status"), source=k.get("source", "list_rooms"),
                          executing=k.get("executing"), queued=tuple(k.get("queued", ())))

    def warnings(self, session: PeerSession) -> list[str]:
        r = self._reader(session)
        out = list(r.warnings)
        if r.has_comms_map and (r.schema_version or 0) < 3:
            out.append(f"comms map present with schema_version {r.schema_version} (< 3)")
        if not r.has_comms_map and (r.schema_version or 0) >= 3:
            out.append("schema_version 3 without a comms map: not the #808 layout (document-schema §10.1)")
        return out

    def extra_root(self, session: PeerSession) -> dict[str, Any]:
        return dict(self._reader(session).extra_root)


PROFILES: dict[int, type[Profile]] = {2: V2Profile}


def profile_for(version: int) -> Profile:
    if version == 4 and 4 not in PROFILES:
        try:
            from . import v4  # noqa: F401  (registers V4Profile)
        except ImportError:
            pass
    cls = PROFILES.get(version)
    if cls is None:
        raise ProtocolMismatch(f"daemon speaks protocol {version}; supported: {sorted(PROFILES)}", version=version)
    return cls()
