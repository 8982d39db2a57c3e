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
`pending`: the daemon writes topology and state in separate frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
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
    DivergenceEngine,
    EngineTimer,
    Pair,
    SettleConfig,
    Transition,
    ViewComm,
    json_equal,
    transition_summary,
)
from ..snapshot import Divergence

if TYPE_CHECKING:
    from ..kernel_tap import KernelTap
    from .room import CommState, Topology, V4Room

log = logging.getLogger(__name__)

TOPOLOGY, STATE, ECHO, KERNEL = "topology", "state", "echo", "kernel"

V4_PAIRS = (
    Pair(TOPOLOGY, STATE, only_a=ORPHAN_TOPOLOGY, only_b=ORPHAN_STATE, closed_in_b=ORPHAN_TOPOLOGY,
         closed_in_a=ORPHAN_STATE, compare_state=False, compare_outputs=False),
    Pair(STATE, ECHO, only_a=MISSING_IN_FEED, only_b=MISSING_IN_DOC, compare_model=False, compare_outputs=False),
    Pair(STATE, KERNEL, only_a=MISSING_IN_FEED, only_b=MISSING_IN_DOC, closed_in_b=CLOSED_BUT_IN_DOC,
         compare_model=False, compare_outputs=False),
)


def _is_blob_ref(value: Any) -> bool:
    return isinstance(value, dict) and "blob" in value and "size" in value


def _output_ids(value: Any) -> list[Any] | None:
    if not isinstance(value, list):
        return None
    return [o.get("output_id") if isinstance(o, dict) else o for o in value]


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
                              outputs=None, writer=t.writer), now)
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
        changed = set()
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
                opened_at=prev.opened_at if prev is not None else now, outputs=None, writer=s.writer,
                updates=(prev.updates + 1) if prev is not None else 0), now)
        return changed


@dataclass
class _Reported:
    keys: dict[str, tuple[Any, float]] = field(default_factory=dict)  # key -> (value, when reported)
    opened: dict[str, Any] | None = None  # full state when the view saw the comm opened
    target_name: str | None = None


class OverlaySource(CommSource):
    """What the kernel reported (echoes or its IOPub), laid over the CommsDoc state."""

    def __init__(self, name: str, state: StateSource) -> None:
        super().__init__(name, partial=True)
        self.state_src = state
        self.reported: dict[str, _Reported] = {}

    def note(self, cid: str, delta: dict[str, Any], now: float) -> None:
        rep = self.reported.setdefault(cid, _Reported())
        for k, v in delta.items():
            rep.keys[k] = (v, now)

    def report(self, cid: str, delta: dict[str, Any], now: float) -> None:
        self.note(cid, delta, now)
        self.rebuild(cid, now)

    def opened(self, cid: str, state: dict[str, Any], target: str | None, now: float) -> None:
        self.reported[cid] = _Reported({k: (v, now) for k, v in state.items()}, dict(state), target)
        self.rebuild(cid, now)

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
                              changed_at=now, opened_at=now), now)
            return
        sstate = base.state if isinstance(base.state, dict) else {}
        s_times = self.state_src.changed_keys.get(cid, {})
        state = dict(sstate)
        key_times = dict(base.key_times)
        for k, (v, t) in list(rep.keys.items()):
            if s_times.get(k, 0.0) > t:
                del rep.keys[k]  # the CommsDoc moved after the kernel did: its next message decides
                continue
            sval = sstate.get(k)
            if _is_blob_ref(sval):
                continue  # binary buffers: the CommsDoc holds a blob ref, the kernel the bytes
            if k == "outputs" and _output_ids(v) == _output_ids(sval):
                continue  # Output widgets: manifests in the CommsDoc, nbformat dicts from the kernel
            state[k] = v
            key_times[k] = t
        prev = self.comms.get(cid)
        if prev is not None and json_equal(prev.state, state) and prev.model_name == base.model_name:
            return
        self.put(ViewComm(comm_id=cid, order=None, target_name=base.target_name, model_module=base.model_module,
                          model_name=base.model_name, state=state, key_times=key_times, changed_at=now,
                          opened_at=prev.opened_at if prev is not None else now), now)


# --------------------------------------------------------------------------- the binding


class V4SessionDivergence(EngineTimer):
    """The engine inside a v4 `PeerSession`, fed by the v4 profile.

    Same surface as the v2 binding (`engine`, `tap`, `run`, `sources`), so `check`, `watch`
    and the GUI use either without knowing the protocol.
    """

    def __init__(self, session: Any, config: SettleConfig | None = None,
                 kernel_connection: str | None = None, tap: KernelTap | None = None) -> None:
        self.session = session
        self.engine = DivergenceEngine(config, pairs=V4_PAIRS, seq_checks=(), ref_check=(STATE, TOPOLOGY),
                                       ref_open_order=(TOPOLOGY,), on_transition=self._emit)
        self.topology = TopologySource()
        self.state = StateSource()
        self.echo = OverlaySource(ECHO, self.state)
        self.kernel = OverlaySource(KERNEL, self.state)
        for src in (self.topology, self.state, self.echo, self.kernel):
            src.ready = False  # until the join converged
            self.engine.add_source(src)
        self.kernel_connection = kernel_connection  # a path, "auto", or None
        self.tap: KernelTap | None = None
        self._tap_task: asyncio.Task[Any] | None = None
        self._tap_agent: str | None = None  # runtime agent the auto tap belongs to
        self._tap_note: str | None = None
        self._joined = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self._lifecycle: str | None = None
        if tap is not None:
            self._use_tap(tap)
        session.add_listener(self._on_session_change)
        session.snapshot_filters.append(self._filter)
        session.divergence = self

    def detach(self) -> None:
        """Stop taking input (a reconnect made a new room)."""
        with contextlib.suppress(ValueError):
            self.session._listeners.remove(self._on_session_change)
        with contextlib.suppress(ValueError):
            self.session.snapshot_filters.remove(self._filter)
        if self._timer is not None:
            self._timer.cancel()
        self._stop_tap()

    # -- inputs from the profile ----------------------------------------------------------------

    def on_runtime(self, room: V4Room, changed: set[str], now: float | None = None) -> None:
        if not self._joined:
            return  # the views are loaded in one go once the join converged (`_load`)
        now = time.monotonic() if now is None else now
        topo = room.runtime.comms
        ids = None if ("comms" in changed or "runtime/comms" in changed) else \
            {p[6:] for p in changed if p.startswith("comms/")}
        if ids is None or ids:
            touched = self.topology.refresh(topo, ids, now)
            # the state view borrows the topology's target name
            self.state.refresh(room.comms.comms, topo, set(), now, force={c for c in touched if c in self.state.comms})
        lifecycle = room.runtime.kernel.get("lifecycle") if isinstance(room.runtime.kernel, dict) else None
        if lifecycle != self._lifecycle:
            was, self._lifecycle = self._lifecycle, lifecycle
            if was is not None and lifecycle in ("Shutdown", "Launching", "Connecting"):
                # a restart empties topology and state: old echoes and kernel reports mean nothing
                for src in (self.topology, self.state):
                    src.mark_clear("starting", now)
                self.echo.clear_all("starting", now)
                self.kernel.clear_all("starting", now)
        if self.kernel_connection == "auto" and self._joined:
            self._ensure_auto_tap(room)
        self.run(now)

    def on_state(self, room: V4Room, changed: set[str], now: float | None = None) -> None:
        if not self._joined:
            return
        now = time.monotonic() if now is None else now
        ids = None if "state/comms" in changed else {p[12:] for p in changed if p.startswith("state/comms/")}
        touched = self.state.refresh(room.comms.comms, room.runtime.comms, ids, now)
        for cid in touched:
            if cid in self.echo.reported:
                self.echo.rebuild(cid, now)
            if cid in self.kernel.reported:
                self.kernel.rebuild(cid, now)
        self.run(now)

    def on_broadcast(self, bc: Any, now: float | None = None) -> None:
        content = getattr(bc, "content", None)
        if not isinstance(content, dict):
            return
        data = content.get("data") if isinstance(content.get("data"), dict) else {}
        cid = content.get("comm_id")
        if data.get("method") == "echo_update" and isinstance(cid, str) and isinstance(data.get("state"), dict):
            now = time.monotonic() if now is None else now
            if not self._joined:
                self.echo.note(cid, data["state"], now)  # applied when the views are loaded
                return
            self.echo.report(cid, data["state"], now)
            self.run(now)

    # -- the kernel tap ---------------------------------------------------------------------------

    def _use_tap(self, tap: KernelTap) -> None:
        self.tap = tap
        tap.listener = self._on_tap
        tap.comm_listener = self._on_tap_comm

    def start_tap(self, path: str) -> None:
        from ..kernel_tap import KernelTap, TapError

        try:
            tap = KernelTap(path)
        except TapError as exc:
            self._note(f"kernel tap: {exc}", error=True)
            return
        self._use_tap(tap)
        self._tap_task = asyncio.get_running_loop().create_task(self._run_tap(tap))

    async def _run_tap(self, tap: KernelTap) -> None:
        from .. import events as ev
        from ..kernel_tap import TapError

        self.session.log.emit(ev.CONNECTION, f"kernel tap: subscribing to {tap.connection.iopub_url}",
                              {"kernel_tap": tap.summary()})
        try:
            await tap.run()
        except TapError as exc:
            self.session.log.emit(ev.ERROR, f"kernel tap: {exc}", {"kernel_tap": tap.summary()})

    def _stop_tap(self) -> None:
        if self.tap is not None:
            self.tap.stop()
        self._tap_task = None

    def _ensure_auto_tap(self, room: V4Room) -> None:
        kernel = room.runtime.kernel if isinstance(room.runtime.kernel, dict) else {}
        agent = kernel.get("runtime_agent_id")
        if not isinstance(agent, str) or not agent or kernel.get("lifecycle") != "Running":
            return
        if agent == self._tap_agent:
            return
        path = find_connection_file(runtime_cache_dir(self.session), agent)
        if path is None:
            self._note(f"kernel tap: no connection file found for {agent} (runtime-agents manifest, /proc)")
            return
        self._tap_agent = agent
        self._stop_tap()
        self.kernel.clear_all("starting", time.monotonic())
        self.start_tap(path)

    def _note(self, text: str, error: bool = False) -> None:
        from .. import events as ev

        if text != self._tap_note:
            self._tap_note = text
            self.session.log.emit(ev.ERROR if error else ev.CONNECTION, text, {})

    def _on_tap_comm(self, msg_type: str, content: dict[str, Any], now: float) -> None:
        cid = content.get("comm_id")
        if not isinstance(cid, str):
            return
        data = content.get("data") if isinstance(content.get("data"), dict) else {}
        if msg_type == "comm_open" and isinstance(data.get("state"), dict):
            self.kernel.opened(cid, data["state"], content.get("target_name"), now)
        elif msg_type == "comm_close":
            self.kernel.closed(cid, now)
        elif msg_type == "comm_msg" and data.get("method") in ("update", "echo_update") \
                and isinstance(data.get("state"), dict):
            self.kernel.report(cid, data["state"], now)
        else:
            return
        self.run(now)

    def _on_tap(self, what: str, payload: Any) -> None:
        now = time.monotonic()
        self._log_tap(what, payload)
        if what == "shutdown":
            self.kernel.clear_all("shutdown_request", now)
        elif what == "dead":
            self.kernel.dead = True
            self.kernel.mark_clear("dead", now)
        else:
            return
        self.run(now)

    # -- session state ------------------------------------------------------------------------------

    def _on_session_change(self, paths: set[str]) -> None:
        if "connection" not in paths:
            return
        state = self.session.state
        if state == "live" and not self._joined:
            self._joined = True  # the initial sync converged: compare from now on
            if self.kernel_connection not in (None, "auto") and self.tap is None:
                self.start_tap(os.path.expanduser(self.kernel_connection))
            # Load the views just after the tree is shown: nothing can be more than `pending`
            # before the settle window has passed anyway.
            try:
                asyncio.get_running_loop().call_soon(self._load)
            except RuntimeError:
                self._load()
        elif state in ("connecting", "disconnected"):
            self._joined = False
            for src in (self.topology, self.state, self.echo, self.kernel):
                src.ready = False
        if state in ("closed", "error"):
            self._stop_tap()

    def _load(self) -> None:
        room = getattr(self.session.profile, "room", None)
        if room is None or not self._joined:
            return
        now = time.monotonic()
        self.topology.refresh(room.runtime.comms, None, now)
        self.state.refresh(room.comms.comms, room.runtime.comms, None, now, initial=True)
        for cid in list(self.echo.reported):  # echoes that arrived during the join
            self.echo.rebuild(cid, now)
        for src in (self.topology, self.state, self.echo, self.kernel):
            src.ready = True
            src.notify(set(src.comms))
        lifecycle = room.runtime.kernel.get("lifecycle") if isinstance(room.runtime.kernel, dict) else None
        self._lifecycle = lifecycle if isinstance(lifecycle, str) else None
        if self.kernel_connection == "auto":
            self._ensure_auto_tap(room)
        self.run(now)

    # -- evaluation ---------------------------------------------------------------------------------

    def _emit(self, tr: Transition) -> None:
        from .. import events as ev

        tr.divergences = tuple(v4_view(d) for d in tr.divergences)
        self.session.log.emit(ev.DIVERGENCE, transition_summary(tr), tr.to_json(),
                              target=f"comms/{tr.comm_id}", t=tr.t)

    def sources(self) -> tuple[str, ...]:
        out = [TOPOLOGY, STATE, ECHO]
        if self.tap is not None or self.kernel.comms:
            out.append(KERNEL)
        return tuple(out)

    def key_views(self, comm_id: str, now: float | None = None) -> dict[str, dict[str, tuple[Any, float | None]]]:
        """What each view holds for one comm, key by key, with the age of the value in ms (None:
        set before the join, when nobody saw it change). The topology holds no state, only the
        model it names (compared against the CommsDoc's `_model_*`) and its target and seq.
        Echo and kernel list only the keys they reported since the join."""
        now = time.monotonic() if now is None else now

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

    def divergences(self, include_pending: bool = True) -> tuple[Divergence, ...]:
        self.engine.update()
        return tuple(v4_view(d) for d in self.engine.divergences(include_pending=include_pending))

    def _filter(self, snap: Any) -> Any:
        return msgspec.structs.replace(snap, divergence=self.divergences(), sources=self.sources())


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
