"""The protocol v4 profile for `SessionCore`: handshake, bootstrap, five documents, and the
v4 divergence sources (topology, state, echo broadcasts).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import ProtocolMismatch
from ..profiles import Profile, capabilities
from ..protocol import messages as m
from ..protocol.framing import FrameType
from ..protocol.presence import encode_presence
from ..snapshot import CellView, CommView, DocumentSummary, KernelView
from .divergence import V4CommViews
from .manifests import BlobSource
from .room import DOC_FRAMES, V4Room

if TYPE_CHECKING:
    from ..document import DocReplica
    from ..session_core import SessionCore

OPERATOR = "inspector"  # becomes this connection's actor label suffix: local:<user>/inspector


class V4Profile(Profile):
    """runtimed 2.9.0: notebook, RuntimeStateDoc, PoolDoc, CommsDoc, CommentsDoc; no CommSync feed."""

    version = 4
    name = "v4"
    doc_types = dict(DOC_FRAMES)
    typed_bootstrap = True
    sources = ("topology", "state", "echo")

    def __init__(self) -> None:
        self.room: V4Room | None = None
        self.sync_status: dict[str, Any] = {}  # the daemon's last `sync_status` session-control message

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

    def keepalive(self) -> tuple[int, bytes] | None:
        # runtimed drops a peer that sends no Request, Presence or PutBlob frame for 300 s
        # (peer_loop.rs). A presence heartbeat from a peer that never published presence only
        # touches a "last seen" the daemon does not hold for it: nothing is stored, nothing relayed.
        return FrameType.PRESENCE, encode_presence({"type": "heartbeat", "peer_id": "inspector"})

    def request_body(self, req: m.Request, n: int) -> bytes:
        return m.encode_json({"id": f"inspector-{n}", **m.to_builtins(req)})

    def comm_views(self, session: SessionCore) -> V4CommViews:
        return V4CommViews(session)

    # -- the join --------------------------------------------------------------------------------

    def control(self, session: SessionCore, message: dict[str, Any]) -> None:
        if message.get("type") == "sync_status":
            self.sync_status = message

    def waits_for(self, session: SessionCore, replica: DocReplica) -> bool:
        # A document the daemon never started to sync once it says the join is done is one this
        # daemon does not have (a v4 build before the comms or comments document), not one to wait for.
        return replica.messages_in > 0 or bool(self.join_gates(session))

    def join_gates(self, session: SessionCore) -> list[str]:
        """The daemon says the join is complete with `sync_status` (notebook interactive, runtime
        state ready), sent after the last document of the join."""
        st = self.sync_status
        if st.get("notebook_doc") == "interactive" and st.get("runtime_state") == "ready":
            return []
        return [f"the daemon's sync_status (notebook_doc={st.get('notebook_doc', 'not sent')}, "
                f"runtime_state={st.get('runtime_state', 'not sent')}; ready is interactive/ready)"]

    # -- the room ------------------------------------------------------------------------------

    def _room(self, session: SessionCore) -> V4Room:
        if self.room is None or self.room.replicas is not session.replicas:
            # first sync, or a reconnect gave the session fresh replicas
            self.room = V4Room(session.config.notebook_id, self._blob_source(session), replicas=session.replicas)
        return self.room

    @staticmethod
    def _blob_source(session: SessionCore) -> BlobSource | None:
        if not session.config.resolve_blobs:
            return None
        p = session.probe
        store = None
        exec_dir = (p.info.get("execution_store_dir") if p else None) or ""
        if exec_dir:
            store = os.path.join(os.path.dirname(exec_dir.rstrip("/")), "blobs")
        src = BlobSource(port=p.blob_port if p else None, store_dir=store)
        return src.get  # type: ignore[return-value]

    def doc_changed(self, session: SessionCore, replica: DocReplica, dirty: set[tuple[str, ...]]) -> set[str]:
        return self._room(session).apply(replica.frame_type, dirty)

    # -- snapshot parts -------------------------------------------------------------------------

    def cells(self, session: SessionCore) -> tuple[CellView, ...]:
        return self._room(session).cells()

    def comms(self, session: SessionCore) -> tuple[CommView, ...]:
        return self._room(session).comm_views()

    def metadata(self, session: SessionCore) -> Any:
        return self._room(session).notebook.metadata

    def schema_version(self, session: SessionCore) -> int | None:
        return self._room(session).notebook.schema_version

    def kernel(self, session: SessionCore) -> KernelView:
        return self._room(session).kernel()

    def documents(self, session: SessionCore) -> tuple[DocumentSummary, ...]:
        return self._room(session).documents()

    def warnings(self, session: SessionCore) -> list[str]:
        return list(self._room(session).notebook.warnings)

    def extra_root(self, session: SessionCore) -> dict[str, Any]:
        return dict(self._room(session).notebook.extra_root)

