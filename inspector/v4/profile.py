"""The protocol v4 profile for `PeerSession`: handshake, bootstrap, five documents, and the
v4 divergence sources (topology, state, echo broadcasts).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import BadFrame, ProtocolMismatch
from ..profiles import PROFILES, Profile
from ..protocol import messages as m
from ..snapshot import CellView, CommView, DocumentSummary, KernelView, Snapshot
from .divergence import V4Divergence
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
        self.divergence = V4Divergence()
        self._session: PeerSession | None = None
        self._recheck: asyncio.TimerHandle | None = None

    def handshake(self, notebook_id: str) -> m.NotebookSync:
        # typed_bootstrap: the reply is a 0x07 frame like every later one; never working_dir /
        # initial_metadata (they seed or alter a room)
        return m.NotebookSync(notebook_id=notebook_id, protocol="v4", typed_bootstrap=True, operator=OPERATOR)

    def parse_bootstrap(self, payload: bytes) -> dict[str, Any]:
        try:
            raw = m.decode_json(payload)
        except m.MessageError as exc:
            raise BadFrame(f"the handshake reply is not JSON: {exc}") from None
        if not isinstance(raw, dict) or "protocol" not in raw:
            raise BadFrame(f"the handshake reply is not protocol capabilities: {str(raw)[:200]}")
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
            self.divergence = V4Divergence()
            if self._session is not session:
                self._session = session
                session.hooks.append(self._on_hook)
                session.snapshot_filters.append(self._with_divergence)
        return self.room

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
        if replica.frame_type == 0x09:
            self.divergence.observe_state({c: s.state for c, s in room.comms.comms.items()})
        if replica.frame_type == 0x05 and not room.runtime.comms and not room.comms.comms:
            self.divergence.observe_topology_cleared()
        return changed

    def _on_hook(self, what: str, payload: Any) -> None:
        if what == "broadcast" and isinstance(payload, m.Comm):
            data = payload.content.get("data") if isinstance(payload.content.get("data"), dict) else {}
            cid = payload.content.get("comm_id")
            if data.get("method") == "echo_update" and isinstance(cid, str):
                self.divergence.observe_echo(cid, data.get("state"))

    def _with_divergence(self, snap: Snapshot) -> Snapshot:
        if self.room is None:
            return snap
        found = self.divergence.evaluate(self.room.runtime.comms,
                                         {c: s.state for c, s in self.room.comms.comms.items()}, time.monotonic())
        sources = ("topology", "state", "echo") + (("kernel",) if self.divergence.kernel is not None else ())
        pending = [d.since_ms for d in found if d.status == "pending"]
        if pending and self._session is not None:
            # a pending difference matures without any frame arriving: wake the session then
            self._schedule_recheck(self.divergence.settle_s - max(pending) / 1000)
        return msgspec.structs.replace(snap, divergence=snap.divergence + found, sources=sources)

    def _schedule_recheck(self, delay: float) -> None:
        if self._recheck is not None and not self._recheck.cancelled():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        session = self._session

        def fire() -> None:
            self._recheck = None
            if session is not None:
                session._changed({"divergence"})

        self._recheck = loop.call_later(max(0.01, delay) + 0.01, fire)

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
