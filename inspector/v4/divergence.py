"""Divergence on a v4 room (runtimed-v4 §15): the shared engine over v4 sources.

v4 has no CommSync feed. The views compared, each an engine `CommSource`:

* `topology`: the comm topology in the RuntimeStateDoc (`comms/{id}`: target, model, seq);
* `state`: widget state in the CommsDoc;
* `echo`: what the kernel accepted from a client, from `echo_update` broadcasts;
* `kernel`: the kernel's own messages, from a tap on its IOPub (when one runs).

Pairs: topology/state membership (`orphan_topology` / `orphan_state`) and model fields;
state against echo and against kernel for values. The echo and kernel views only know the
keys the kernel reported, so each is the CommsDoc state with those keys laid over it (an
overlay). A key the CommsDoc changed after the kernel reported it drops out of the overlay:
the kernel's next message decides. So a `send_comm` update, which the kernel applies and
echoes while the CommsDoc keeps the old value, is a `state_mismatch` on that key with the
kernel as the side that moved. Differences younger than the engine's settle window are
`pending`: the daemon writes topology and state in separate frames. `V4CommViews` is what the
v4 profile gives the session's one divergence binding.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..divergence import (
    CLOSED_BUT_IN_DOC,
    MISSING_IN_DOC,
    MISSING_IN_FEED,
    ORPHAN_STATE,
    ORPHAN_TOPOLOGY,
    CommSource,
    CommViews,
    DivergenceEngine,
    Pair,
    SettleConfig,
    ViewComm,
    json_equal,
)
from ..liveness import RESERVED_PREFIX
from ..protocol.framing import FrameType
from ..snapshot import Divergence

if TYPE_CHECKING:
    from .room import CommState, Topology, V4Room

log = logging.getLogger(__name__)

TOPOLOGY, STATE, ECHO, KERNEL = "topology", "state", "echo", "kernel"

V4_PAIRS = (
    Pair(TOPOLOGY, STATE, only_a=ORPHAN_TOPOLOGY, only_b=ORPHAN_STATE, closed_in_b=ORPHAN_TOPOLOGY,
         closed_in_a=ORPHAN_STATE, compare_state=False),
    Pair(STATE, ECHO, only_a=MISSING_IN_FEED, only_b=MISSING_IN_DOC, compare_model=False),
    Pair(STATE, KERNEL, only_a=MISSING_IN_FEED, only_b=MISSING_IN_DOC, closed_in_b=CLOSED_BUT_IN_DOC,
         compare_model=False),
)
# Output widgets' `outputs` are compared as output ids, in order, on every pair: the topology and
# the CommsDoc hold manifests, echoes and the kernel nbformat dicts, all carrying `output_id`.


def _is_blob_ref(value: Any) -> bool:
    return isinstance(value, dict) and "blob" in value and "size" in value


def _output_ids(value: Any) -> list[Any] | None:
    if not isinstance(value, list):
        return None
    return [o.get("output_id") if isinstance(o, dict) else o for o in value]


def _outputs_of(state: Any, model_name: str | None) -> tuple[Any, ...] | None:
    """An Output widget's outputs as output ids (None: not an Output widget, or not a list)."""
    if model_name != "OutputModel" or not isinstance(state, dict):
        return None
    ids = _output_ids(state.get("outputs"))
    return None if ids is None else tuple(ids)


# --------------------------------------------------------------------------- sources


class TopologySource(CommSource):
    """RuntimeStateDoc `comms`: membership, seq order, target and model."""

    def __init__(self) -> None:
        super().__init__(TOPOLOGY)
        self._seen: dict[str, Topology] = {}

    def refresh(self, topo: dict[str, Topology], ids: set[str] | None, now: float) -> set[str]:
        """Re-read `ids` (None: every comm); return the ids whose entry changed."""
        self.touch(now)
        wanted = set(topo) | set(self._seen) if ids is None else ids
        changed = set()
        with self.batch():  # one notification for the whole refresh
            for cid in wanted:
                t = topo.get(cid)
                old = self._seen.get(cid)
                if t is old:
                    continue
                changed.add(cid)
                if t is None:
                    del self._seen[cid]
                    self.remove(cid, "close", now)
                    continue
                self._seen[cid] = t
                prev = self.comms.get(cid)
                reopened = prev is None or prev.order != t.seq
                self.put(ViewComm(comm_id=cid, order=t.seq, target_name=t.target_name or None,
                                  model_module=t.model_module or None, model_name=t.model_name or None,
                                  state=None, changed_at=now, opened_at=now if reopened else prev.opened_at,
                                  outputs=tuple(t.output_ids) if t.model_name == "OutputModel" else None,
                                  writer=t.writer), now)
        return changed


class StateSource(CommSource):
    """CommsDoc widget state, with per-key change times."""

    def __init__(self) -> None:
        super().__init__(STATE)
        self._seen: dict[str, CommState] = {}
        self.changed_keys: dict[str, dict[str, float]] = {}  # comm -> key -> when the CommsDoc changed it

    def refresh(self, states: dict[str, CommState], topo: dict[str, Topology], ids: set[str] | None,
                now: float, force: set[str] = frozenset(), initial: bool = False) -> set[str]:
        """`initial`: the state at join, whose keys changed at an unknown time before it (0.0)."""
        self.touch(now)
        key_now = 0.0 if initial else now
        wanted = (set(states) | set(self._seen) if ids is None else set(ids)) | set(force)
        changed: set[str] = set()
        with self.batch():  # one notification for the whole refresh
            for cid in wanted:
                s = states.get(cid)
                old = self._seen.get(cid)
                if s is old and cid not in force:
                    continue
                changed.add(cid)
                if s is None:
                    self._seen.pop(cid, None)
                    self.changed_keys.pop(cid, None)
                    self.remove(cid, "close", now)
                    continue
                self._seen[cid] = s
                prev = self.comms.get(cid)
                times = self.changed_keys.setdefault(cid, {})
                old_state = prev.state if prev is not None and isinstance(prev.state, dict) else None
                key_times = {}
                for k, v in s.state.items():
                    if old_state is not None and k in old_state and json_equal(old_state[k], v):
                        key_times[k] = times.get(k, prev.opened_at)
                    else:
                        key_times[k] = times[k] = key_now
                t = topo.get(cid)
                mm, mn = s.state.get("_model_module"), s.state.get("_model_name")
                self.put(ViewComm(
                    comm_id=cid, order=None,
                    # the CommsDoc holds no target: borrowed from the topology so only the model fields differ
                    target_name=(t.target_name or None) if t is not None else None,
                    model_module=mm if isinstance(mm, str) and mm else None,
                    model_name=mn if isinstance(mn, str) and mn else None,
                    state=s.state, key_times=key_times, changed_at=now,
                    opened_at=prev.opened_at if prev is not None else now,
                    outputs=_outputs_of(s.state, mn if isinstance(mn, str) else None), writer=s.writer,
                    updates=(prev.updates + 1) if prev is not None else 0), now)
        return changed


@dataclass
class _Reported:
    keys: dict[str, tuple[Any, float]] = field(default_factory=dict)  # key -> (value, when reported)
    opened: dict[str, Any] | None = None  # full state when the view saw the comm opened
    target_name: str | None = None
    # key -> (value, when): the view's last word, kept when the CommsDoc moves later (blame reads it)
    last: dict[str, tuple[Any, float]] = field(default_factory=dict)


class OverlaySource(CommSource):
    """What the kernel reported (echoes or its IOPub), laid over the CommsDoc state."""

    def __init__(self, name: str, state: StateSource) -> None:
        super().__init__(name, partial=True)
        self.state_src = state
        self.reported: dict[str, _Reported] = {}

    def note(self, cid: str, delta: dict[str, Any], now: float) -> None:
        rep = self.reported.setdefault(cid, _Reported())
        for k, v in delta.items():
            rep.keys[k] = rep.last[k] = (v, now)

    def report(self, cid: str, delta: dict[str, Any], now: float) -> None:
        self.note(cid, delta, now)
        self.rebuild(cid, now)

    def opened(self, cid: str, state: dict[str, Any], target: str | None, now: float) -> None:
        said = {k: (v, now) for k, v in state.items()}
        self.reported[cid] = _Reported(said, dict(state), target, dict(said))
        self.rebuild(cid, now)

    def saw_open(self, comm_id: str) -> bool:
        rep = self.reported.get(comm_id)
        return rep is not None and rep.opened is not None

    def last_word(self, comm_id: str, key: str) -> tuple[Any, float] | None:
        rep = self.reported.get(comm_id)
        return rep.last.get(key) if rep is not None else None

    def closed(self, cid: str, now: float) -> None:
        self.reported.pop(cid, None)
        if cid in self.comms:
            self.remove(cid, "close", now)

    def clear_all(self, reason: str, now: float) -> None:
        self.reported.clear()
        self.clear(reason, now)

    def rebuild(self, cid: str, now: float) -> None:
        """Re-derive one comm's view (after a report or a CommsDoc change)."""
        rep = self.reported.get(cid)
        base = self.state_src.comms.get(cid)
        if rep is None:
            if cid in self.comms:
                self.remove(cid, "clear", now)
            return
        if base is None:
            if rep.opened is None:
                # never seen opened, and the CommsDoc dropped it: nothing left to compare
                del self.reported[cid]
                if cid in self.comms:
                    self.remove(cid, "clear", now)
                return
            state = {k: v for k, (v, _t) in rep.keys.items()}
            mm, mn = state.get("_model_module"), state.get("_model_name")
            self.put(ViewComm(comm_id=cid, order=None, target_name=rep.target_name, model_module=mm or None,
                              model_name=mn or None, state=state, key_times={k: t for k, (_v, t) in rep.keys.items()},
                              changed_at=now, opened_at=now, outputs=_outputs_of(state, mn or None),
                              known=frozenset(state)), now)
            return
        sstate = base.state if isinstance(base.state, dict) else {}
        s_times = self.state_src.changed_keys.get(cid, {})
        state = dict(sstate)
        key_times = dict(base.key_times)
        # Keys the view heard itself; the others are the CommsDoc's values, filled in so that the
        # comparison has a whole state, never shown or used as this view's word.
        known: set[str] = set()
        outputs: tuple[Any, ...] | None = None
        for k, (v, t) in list(rep.keys.items()):
            if s_times.get(k, 0.0) > t:
                del rep.keys[k]  # the CommsDoc moved after the kernel did: its next message decides
                continue
            sval = sstate.get(k)
            if _is_blob_ref(sval):
                continue  # binary buffers: the CommsDoc holds a blob ref, the kernel the bytes
            known.add(k)
            key_times[k] = t
            if k == "outputs" and base.model_name == "OutputModel" and _output_ids(v) is not None:
                # Output widgets: manifests in the CommsDoc, nbformat dicts from the kernel; both
                # carry output ids, compared in order as the comm's outputs
                outputs = tuple(_output_ids(v) or ())
                continue
            state[k] = v
        prev = self.comms.get(cid)
        frozen = frozenset(known)
        if prev is not None and json_equal(prev.state, state) and prev.model_name == base.model_name \
                and prev.outputs == outputs and prev.known == frozen:
            return
        self.put(ViewComm(comm_id=cid, order=None, target_name=base.target_name, model_module=base.model_module,
                          model_name=base.model_name, state=state, key_times=key_times, changed_at=now,
                          opened_at=prev.opened_at if prev is not None else now, outputs=outputs,
                          known=frozen), now)


# --------------------------------------------------------------------------- the views


class V4CommViews(CommViews):
    """The v4 profile's comm views for the session's divergence binding."""

    names = (TOPOLOGY, STATE, ECHO, KERNEL)
    meta = frozenset({TOPOLOGY})

    def __init__(self, core: Any) -> None:
        super().__init__(core)
        self.topology = TopologySource()
        self.state = StateSource()
        self.echo = OverlaySource(ECHO, self.state)
        self.kernel = OverlaySource(KERNEL, self.state)
        for src in (self.topology, self.state, self.echo, self.kernel):
            src.ready = False  # until the join is complete
        self._lifecycle: str | None = None
        self._tap_agent: str | None = None  # runtime agent the auto tap belongs to
        self._tap_file: str | None = None
        self._tap_note: str | None = None
        # kernel comms in the reserved nteract.dx.* namespace: the runtime agent keeps them out of
        # topology, state and broadcasts by design, so the kernel view must not report them missing
        self._reserved: set[str] = set()

    def engine(self, config: SettleConfig, on_transition: Any) -> DivergenceEngine:
        eng = DivergenceEngine(config, pairs=V4_PAIRS, seq_checks=(), ref_check=(STATE, TOPOLOGY),
                               ref_open_order=(TOPOLOGY,), on_transition=on_transition)
        for src in (self.topology, self.state, self.echo, self.kernel):
            eng.add_source(src)
        return eng

    def _room(self) -> V4Room | None:
        return getattr(self.core.profile, "room", None)

    # -- inputs ---------------------------------------------------------------------------------

    def on_doc(self, frame_type: int, changed: set[str], now: float) -> None:
        room = self._room()
        if not self.joined or room is None or not changed:
            return  # the views are loaded in one go once the join is complete (`on_join`)
        if frame_type == FrameType.RUNTIME_STATE_SYNC:
            self._on_runtime(room, changed, now)
        elif frame_type == FrameType.COMMS_SYNC:
            self._on_state(room, changed, now)

    def _on_runtime(self, room: V4Room, changed: set[str], now: float) -> None:
        topo = room.runtime.comms
        ids = None if ("comms" in changed or "runtime/comms" in changed) else \
            {p[6:] for p in changed if p.startswith("comms/")}
        if ids is None or ids:
            touched = self.topology.refresh(topo, ids, now)
            # the state view borrows the topology's target name
            self.state.refresh(room.comms.comms, topo, set(), now, force={c for c in touched if c in self.state.comms})
        lifecycle = _lifecycle(room)
        if lifecycle != self._lifecycle:
            was, self._lifecycle = self._lifecycle, lifecycle
            if was is not None and lifecycle in ("Shutdown", "Launching", "Connecting"):
                # a restart empties topology and state: old echoes and kernel reports mean nothing
                for src in (self.topology, self.state):
                    src.mark_clear("starting", now)
                self.echo.clear_all("starting", now)
                self.kernel.clear_all("starting", now)
        self._follow_agent(room, now)

    def _on_state(self, room: V4Room, changed: set[str], now: float) -> None:
        ids = None if "state/comms" in changed else {p[12:] for p in changed if p.startswith("state/comms/")}
        touched = self.state.refresh(room.comms.comms, room.runtime.comms, ids, now)
        for cid in touched:
            if cid in self.echo.reported:
                self.echo.rebuild(cid, now)
            if cid in self.kernel.reported:
                self.kernel.rebuild(cid, now)

    def on_broadcast(self, bc: Any, now: float) -> None:
        content = getattr(bc, "content", None)
        if not isinstance(content, dict):
            return
        data = content.get("data") if isinstance(content.get("data"), dict) else {}
        cid = content.get("comm_id")
        if data.get("method") == "echo_update" and isinstance(cid, str) and isinstance(data.get("state"), dict):
            if not self.joined:
                self.echo.note(cid, data["state"], now)  # applied when the views are loaded
                return
            self.echo.report(cid, data["state"], now)

    def on_kernel_comm(self, msg_type: str, content: dict[str, Any], buffers: list[bytes], now: float) -> None:
        cid = content.get("comm_id")
        if not isinstance(cid, str):
            return
        target = content.get("target_name")
        if msg_type == "comm_open" and isinstance(target, str) and target.startswith(RESERVED_PREFIX):
            self._reserved.add(cid)
            return
        if cid in self._reserved:
            if msg_type == "comm_close":
                self._reserved.discard(cid)
            return
        data = content.get("data") if isinstance(content.get("data"), dict) else {}
        if msg_type == "comm_open" and isinstance(data.get("state"), dict):
            self.kernel.opened(cid, data["state"], content.get("target_name"), now)
        elif msg_type == "comm_close":
            self.kernel.closed(cid, now)
        elif msg_type == "comm_msg" and data.get("method") in ("update", "echo_update") \
                and isinstance(data.get("state"), dict):
            self.kernel.report(cid, data["state"], now)

    def on_kernel_event(self, what: str, payload: Any, now: float) -> None:
        if what == "shutdown":
            self.kernel.clear_all("shutdown_request", now)
        elif what == "dead":
            self.kernel.dead = True
            self.kernel.mark_clear("dead", now)

    def on_join(self, now: float) -> None:
        room = self._room()
        if room is None:
            return
        sources = (self.topology, self.state, self.echo, self.kernel)
        for src in sources:  # every comm is put at once here: the engine hears of each once
            src.hold()
        try:
            self.topology.refresh(room.runtime.comms, None, now)
            self.state.refresh(room.comms.comms, room.runtime.comms, None, now, initial=True)
            for cid in list(self.echo.reported):  # echoes that arrived during the join
                self.echo.rebuild(cid, now)
        finally:
            held = [src.release() for src in sources]
        for src, ids in zip(sources, held, strict=True):
            src.ready = True
            src.notify(ids | set(src.comms))
        self._lifecycle = _lifecycle(room)
        self._follow_agent(room, now)

    def on_leave(self) -> None:
        for src in (self.topology, self.state, self.echo, self.kernel):
            src.ready = False

    # -- the kernel tap: `--kernel-connection auto` -------------------------------------------------

    def _follow_agent(self, room: V4Room, now: float) -> None:
        opts = self.core.config.divergence
        if opts is None or opts.kernel_connection != "auto":
            return
        kernel = room.runtime.kernel if isinstance(room.runtime.kernel, dict) else {}
        agent = kernel.get("runtime_agent_id")
        if kernel.get("lifecycle") != "Running" and self._tap_file is not None:
            # a restart keeps the runtime agent but not the kernel: drop the tap, resolve it again
            # once the new kernel runs (its connection file is a new one)
            self._tap_agent = self._tap_file = None
        if not isinstance(agent, str) or not agent or kernel.get("lifecycle") != "Running" or agent == self._tap_agent:
            return
        path = find_connection_file(runtime_cache_dir(self.core), agent)
        if path is None:
            self._note(f"kernel tap: no connection file found for {agent} (runtime-agents manifest, /proc)")
            return
        self._tap_agent, self._tap_file = agent, path
        self.kernel.clear_all("starting", now)  # a new kernel: the old one's reports mean nothing

    def _note(self, text: str) -> None:
        from .. import events as ev

        if text != self._tap_note:
            self._tap_note = text
            self.core.log.emit(ev.CONNECTION, text, {}, t=self.core.clock())

    def auto_tap(self) -> str | None:
        return self._tap_file

    # -- output ---------------------------------------------------------------------------------

    def shown(self, tapping: bool) -> tuple[str, ...]:
        return (TOPOLOGY, STATE, ECHO, KERNEL) if tapping or self.kernel.comms else (TOPOLOGY, STATE, ECHO)

    def key_views(self, comm_id: str, now: float) -> dict[str, dict[str, tuple[Any, float | None]]]:
        """The topology holds no state, only the model it names (compared against the CommsDoc's
        `_model_*`) and its target and seq. Echo and kernel list only the keys they reported."""
        def age(t: float) -> float | None:
            return round((now - t) * 1000.0, 1) if t else None

        out: dict[str, dict[str, tuple[Any, float | None]]] = {}
        topo = self.topology.comms.get(comm_id)
        if topo is not None:
            a = age(topo.changed_at)
            out[TOPOLOGY] = {"_model_module": (topo.model_module, a), "_model_name": (topo.model_name, a),
                             "target_name": (topo.target_name, a), "seq": (topo.order, a)}
        st = self.state.comms.get(comm_id)
        if st is not None and isinstance(st.state, dict):
            out[STATE] = {k: (v, age(st.key_times.get(k, 0.0))) for k, v in st.state.items()}
        for src in (self.echo, self.kernel):
            rep = src.reported.get(comm_id)
            if rep is not None and rep.keys:
                out[src.name] = {k: (v, age(t)) for k, (v, t) in rep.keys.items()}
        return out

    def present(self, d: Divergence) -> Divergence:
        return v4_view(d)


def _lifecycle(room: V4Room) -> str | None:
    lc = room.runtime.kernel.get("lifecycle") if isinstance(room.runtime.kernel, dict) else None
    return lc if isinstance(lc, str) else None


def v4_view(d: Divergence) -> Divergence:
    """Name the sides as users read them: an echo is the kernel's value; `doc` is the CommsDoc,
    `feed` the echo and `kernel` the IOPub value in each key's columns."""
    if not d.keys and d.moved != ECHO:
        return d
    keys = tuple(msgspec.structs.replace(k, doc=k.values.get(STATE), feed=k.values.get(ECHO),
                                         kernel=k.values.get(KERNEL),
                                         doc_age_ms=k.ages_ms.get(STATE), feed_age_ms=k.ages_ms.get(ECHO),
                                         kernel_age_ms=k.ages_ms.get(KERNEL)) for k in d.keys)
    moved = KERNEL if d.moved in (ECHO, KERNEL) else d.moved
    return msgspec.structs.replace(d, keys=keys, moved=moved)


# --------------------------------------------------------------------------- connection files


def runtime_cache_dir(session: Any) -> Path:
    """The daemon's `…/runt` cache dir: the parent of its execution store, else the socket's dir."""
    probe = getattr(session, "probe", None)
    info = probe.info if probe is not None and isinstance(probe.info, dict) else {}
    exec_dir = info.get("execution_store_dir")
    if isinstance(exec_dir, str) and exec_dir:
        return Path(exec_dir.rstrip("/")).parent
    sock = Path(session.config.socket_path)
    if sock.parent.name.startswith("runt"):
        return sock.parent
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runt"


def find_connection_file(cache_dir: Path, runtime_agent_id: str, proc: Path = Path("/proc")) -> str | None:
    """The Jupyter connection file of a room's kernel (runtimed-v4 §12).

    `runtime-agents/<id>.json` names the agent's process group; the kernel is its child and
    was started with `-f <connection file>`.
    """
    manifest = cache_dir / "runtime-agents" / (runtime_agent_id.replace(":", "_") + ".json")
    try:
        raw = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    named = raw.get("connection_file")
    if isinstance(named, str) and os.path.isfile(named):
        return named
    pgid = raw.get("pgid")
    if not isinstance(pgid, int):
        return None
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            stat = (proc / pid / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            ppid, pgrp = int(fields[1]), int(fields[2])
            if ppid != pgid and pgrp != pgid:
                continue
            argv = (proc / pid / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        for i, arg in enumerate(argv[:-1]):
            if arg == b"-f":
                path = argv[i + 1].decode(errors="replace")
                if path.endswith(".json") and os.path.isfile(path):
                    return path
    return None
