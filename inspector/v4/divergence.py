"""Divergence sources of a v4 room (runtimed-v4 §15).

v4 has no CommSync feed. What can be compared: T, the comm topology (RuntimeStateDoc
`comms`); S, widget state (CommsDoc); E, the `echo_update` broadcasts (what the kernel
accepted from a client); K, the kernel's own view replayed from an IOPub tap. Checks:

* I1 `orphan_topology` / `orphan_state`: a comm in only one of T and S after the settle window;
* I2 `model_mismatch`: S `_model_name` differs from T `model_name`;
* I5/I7 `state_mismatch`: the kernel (E or K) holds a value S does not, and S did not change
  since the kernel moved: the kernel is the side that moved (a `send_comm` update does this).

A difference younger than the settle window is `pending`, older `diverged`: the daemon writes
T and S in separate frames and batches kernel writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..comm_table import CommTable
from ..snapshot import Divergence, KeyDiff

SETTLE_S = 0.5
_MISSING = object()


def _comparable(key: str, value: Any) -> Any:
    """Output widgets: S holds manifests, E nbformat dicts; both carry `output_id`."""
    if key == "outputs" and isinstance(value, list):
        return [o.get("output_id") if isinstance(o, dict) else o for o in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _is_blob_ref(value: Any) -> bool:
    return isinstance(value, dict) and "blob" in value and "size" in value


@dataclass
class V4Divergence:
    settle_s: float = SETTLE_S
    kernel: CommTable | None = None  # K, fed by an IOPub tap when one runs
    echo: dict[str, dict[str, tuple[Any, float]]] = field(default_factory=dict)
    state_changed: dict[tuple[str, str], float] = field(default_factory=dict)
    _last_state: dict[str, dict[str, Any]] = field(default_factory=dict)
    _one_sided: dict[str, tuple[str, float]] = field(default_factory=dict)
    _since: dict[tuple[str, str], float] = field(default_factory=dict)
    echo_orphans: dict[str, int] = field(default_factory=dict)

    # -- inputs -------------------------------------------------------------------------------

    def observe_state(self, states: dict[str, dict[str, Any]], now: float | None = None) -> None:
        """S after a CommsDoc change: note per key when its value last changed."""
        now = time.monotonic() if now is None else now
        for cid, st in states.items():
            old = self._last_state.get(cid)
            if old is st:
                continue
            for k, v in st.items():
                if old is None or old.get(k, _MISSING) != v:
                    self.state_changed[(cid, k)] = now
            self._last_state[cid] = st
        for cid in set(self._last_state) - set(states):
            del self._last_state[cid]
            self.echo.pop(cid, None)

    def observe_echo(self, comm_id: str, delta: Any, now: float | None = None) -> None:
        """E: an `echo_update` broadcast; the kernel now holds these values."""
        if not isinstance(delta, dict):
            return
        now = time.monotonic() if now is None else now
        per = self.echo.setdefault(comm_id, {})
        for k, v in delta.items():
            per[k] = (v, now)

    def observe_topology_cleared(self) -> None:
        """A kernel restart empties T and S: old echoes mean nothing any more."""
        self.echo.clear()

    # -- evaluation --------------------------------------------------------------------------

    def evaluate(self, topology: dict[str, Any], states: dict[str, dict[str, Any]],
                 now: float | None = None) -> tuple[Divergence, ...]:
        """`topology`: comm_id -> object with `model_name`; `states`: comm_id -> S map."""
        now = time.monotonic() if now is None else now
        out: list[Divergence] = []
        # I1: present in one view only
        for cid in set(topology) ^ set(states):
            kind = "orphan_topology" if cid in topology else "orphan_state"
            first = self._one_sided.get(cid)
            if first is None or first[0] != kind:
                first = self._one_sided[cid] = (kind, now)
            age = now - first[1]
            model = getattr(topology.get(cid), "model_name", None) or (states.get(cid) or {}).get("_model_name")
            detail = ("in the runtime-state topology but not in the comms document" if cid in topology
                      else "in the comms document but not in the runtime-state topology")
            out.append(Divergence(comm_id=cid, kind=kind, severity="error",
                                  status="diverged" if age >= self.settle_s else "pending",
                                  since_ms=age * 1000, detail=detail, sides=("topology", "state"),
                                  moved="topology" if cid in topology else "state", model_name=model))
        for cid in list(self._one_sided):
            if (cid in topology) == (cid in states):
                del self._one_sided[cid]
        # I2: the model names agree
        for cid in set(topology) & set(states):
            tm = getattr(topology[cid], "model_name", None)
            sm = states[cid].get("_model_name")
            if isinstance(sm, str) and tm and sm != tm:
                out.append(Divergence(comm_id=cid, kind="model_mismatch", severity="warning", status="diverged",
                                      detail=f"state _model_name {sm!r}, topology model_name {tm!r}",
                                      keys=(KeyDiff("_model_name", doc=sm, feed=tm, present=("state", "topology")),),
                                      sides=("topology", "state"), model_name=tm))
        # I5/I7: the kernel moved, the comms document did not follow
        for cid in sorted(set(self.echo) | (set(self.kernel.comms) if self.kernel else set())):
            d = self._kernel_vs_state(cid, topology, states, now)
            if d is not None:
                out.append(d)
        return tuple(out)

    def _kernel_vs_state(self, cid: str, topology: dict[str, Any], states: dict[str, dict[str, Any]],
                         now: float) -> Divergence | None:
        st = states.get(cid)
        if st is None:
            return None  # an orphan, reported above, or a comm that closed
        echo = self.echo.get(cid, {})
        krec = self.kernel.comms.get(cid) if self.kernel else None
        kstate = krec.state if krec is not None and isinstance(krec.state, dict) else None
        keys: list[KeyDiff] = []
        oldest = now
        for key in sorted(set(echo) | (set(kstate) if kstate else set())):
            sval = st.get(key, _MISSING)
            if _is_blob_ref(sval):
                continue  # binary buffers: S holds a blob ref, the kernel the bytes
            e = echo.get(key)
            kval = kstate.get(key, _MISSING) if kstate is not None else _MISSING
            moved_at = e[1] if e is not None else (krec.key_times.get(key, krec.opened_at) if krec else now)
            changed = self.state_changed.get((cid, key), 0.0)
            if changed > moved_at:
                # S moved after the kernel did: the kernel's next message decides; an old echo is void
                if e is not None and kstate is None:
                    echo.pop(key, None)
                    continue
            kernel_val = kval if kval is not _MISSING else (e[0] if e is not None else _MISSING)
            if kernel_val is _MISSING or _comparable(key, kernel_val) == _comparable(key, sval):
                self._since.pop((cid, key), None)
                continue
            since = self._since.setdefault((cid, key), moved_at)
            oldest = min(oldest, since)
            present = tuple(s for s, v in (("state", sval), ("echo", e[0] if e else _MISSING), ("kernel", kval))
                            if v is not _MISSING)
            keys.append(KeyDiff(key=key, doc=None if sval is _MISSING else sval,
                                feed=e[0] if e is not None else None,
                                kernel=None if kval is _MISSING else kval,
                                doc_age_ms=(now - changed) * 1000 if changed else None,
                                feed_age_ms=(now - e[1]) * 1000 if e is not None else None,
                                kernel_age_ms=(now - moved_at) * 1000 if kval is not _MISSING else None,
                                present=present))
        if not keys:
            return None
        age = now - oldest
        model = getattr(topology.get(cid), "model_name", None) or st.get("_model_name")
        shown = ", ".join(f"{k.key}: kernel {k.kernel if k.kernel is not None else k.feed!r}, "
                          f"comms document {k.doc!r}" for k in keys[:3])
        return Divergence(comm_id=cid, kind="state_mismatch", severity="error",
                          status="diverged" if age >= self.settle_s else "pending", keys=tuple(keys),
                          since_ms=age * 1000,
                          detail=f"the kernel moved and the comms document did not follow ({shown})",
                          sides=("state", "kernel" if kstate is not None else "echo"), moved="kernel",
                          model_name=model)
