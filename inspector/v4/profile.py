"""The protocol v4 profile for `PeerSession`: handshake, bootstrap, five documents, and the
v4 divergence sources (topology, state, echo broadcasts).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, Any

from ..errors import ProtocolMismatch
from ..profiles import PROFILES, Profile, capabilities
from ..protocol import messages as m
from ..snapshot import CellView, CommView, DocumentSummary, KernelView
from .divergence import V4SessionDivergence
from .manifests import BlobSource
from .room import DOC_FRAMES, V4Room

if TYPE_CHECKING:
    from ..document import DocReplica
    from ..session import PeerSession

OPERATOR = "inspector"  # becomes this connection's actor label suffix: local:<user>/inspector


class V4Profile(Profile):
    """runtimed 2.9.0: notebook, RuntimeStateDoc, PoolDoc, CommsDoc, CommentsDoc; no CommSync feed."""

    version = 4
    name = "v4"
    doc_types = dict(DOC_FRAMES)
    has_feed = False

    def __init__(self) -> None:
        self.room: V4Room | None = None
        self.divergence: V4SessionDivergence | None = None
        self._session: PeerSession | None = None

    def handshake(self, notebook_id: str) -> m.NotebookSync:
        # typed_bootstrap: the reply is a 0x07 frame like every later one; never working_dir /
        # initial_metadata (they seed or alter a room)
        return m.NotebookSync(notebook_id=notebook_id, protocol="v4", typed_bootstrap=True, operator=OPERATOR)

    def parse_bootstrap(self, payload: bytes) -> dict[str, Any]:
        raw = capabilities(payload)
        version = raw.get("protocol_version")
        if version != 4:
            raise ProtocolMismatch(f"the daemon answered as protocol {raw.get('protocol')} / {version}",
                                   version=version if isinstance(version, int) else None,
                                   daemon_version=raw.get("daemon_version"))
        return raw

    # -- the room ------------------------------------------------------------------------------

    def _room(self, session: PeerSession) -> V4Room:
        if self.room is None or self.room.replicas is not session.replicas:
            # first sync, or a reconnect gave the session fresh replicas
            self.room = V4Room(session.config.notebook_id, self._blob_source(session), replicas=session.replicas)
            self._bind_divergence(session)
        return self.room

    def _bind_divergence(self, session: PeerSession) -> None:
        """One v4 divergence binding per room. A v2 binding the CLI attached before the protocol
        was known is replaced (its settings, kernel connection and tap are taken over)."""
        from ..divergence import SessionDivergence

        old = getattr(session, "divergence", None)
        config, tap = None, None
        connection = session.config.extra.get("kernel_connection")
        if isinstance(old, V4SessionDivergence):
            config, connection = old.engine.config, old.kernel_connection
            old.detach()
        elif isinstance(old, SessionDivergence):
            config, tap = old.engine.config, old.tap
            with contextlib.suppress(ValueError):
                session.hooks.remove(old._on_hook)
            with contextlib.suppress(ValueError):
                session._listeners.remove(old._on_session_change)
            with contextlib.suppress(ValueError):
                session.snapshot_filters.remove(old._filter)
            if tap is not None:
                connection = tap.connection.path
        if self._on_hook not in session.hooks:
            session.hooks.append(self._on_hook)
        self._session = session
        self.divergence = V4SessionDivergence(session, config, connection, tap=tap)

    @staticmethod
    def _blob_source(session: PeerSession) -> BlobSource | None:
        if not session.config.resolve_blobs:
            return None
        p = session.probe
        store = None
        exec_dir = (p.info.get("execution_store_dir") if p else None) or ""
        if exec_dir:
            store = os.path.join(os.path.dirname(exec_dir.rstrip("/")), "blobs")
        src = BlobSource(port=p.blob_port if p else None, store_dir=store)
        return src.get  # type: ignore[return-value]

    def doc_changed(self, session: PeerSession, replica: DocReplica, dirty: set[tuple[str, ...]]) -> set[str]:
        room = self._room(session)
        changed = room.apply(replica.frame_type, dirty)
        if self.divergence is not None and changed:
            if replica.frame_type == 0x05:
                self.divergence.on_runtime(room, changed)
            elif replica.frame_type == 0x09:
                self.divergence.on_state(room, changed)
        return changed

    def _on_hook(self, what: str, payload: Any) -> None:
        if what == "broadcast" and isinstance(payload, m.Comm) and self.divergence is not None:
            self.divergence.on_broadcast(payload)
        elif what == "control" and isinstance(payload, dict) and payload.get("type") == "sync_status":
            self._on_sync_status(payload)

    def _on_sync_status(self, status: dict[str, Any]) -> None:
        """The daemon says the join is complete (notebook interactive, runtime state ready, and it
        sends this after the last document): live now, not after a quiet window."""
        session = self._session
        if session is None or status.get("notebook_doc") != "interactive" or status.get("runtime_state") != "ready":
            return
        if session.state == "syncing":
            session._maybe_live()
            if session.state == "live":
                # index the documents for incremental reads once the tree is shown
                with contextlib.suppress(RuntimeError):
                    asyncio.get_running_loop().call_later(0.05, self._warm, session)

    @staticmethod
    def _warm(session: PeerSession) -> None:
        for rep in session.replicas.values():
            rep.paths.warm(rep.doc)

    # -- snapshot parts -------------------------------------------------------------------------

    def cells(self, session: PeerSession) -> tuple[CellView, ...]:
        return self._room(session).cells()

    def comms(self, session: PeerSession) -> tuple[CommView, ...]:
        return self._room(session).comm_views()

    def metadata(self, session: PeerSession) -> Any:
        return self._room(session).notebook.metadata

    def schema_version(self, session: PeerSession) -> int | None:
        return self._room(session).notebook.schema_version

    def kernel(self, session: PeerSession) -> KernelView:
        return self._room(session).kernel()

    def documents(self, session: PeerSession) -> tuple[DocumentSummary, ...]:
        return self._room(session).documents()

    def warnings(self, session: PeerSession) -> list[str]:
        return list(self._room(session).notebook.warnings)

    def extra_root(self, session: PeerSession) -> dict[str, Any]:
        return dict(self._room(session).notebook.extra_root)


PROFILES[4] = V4Profile
