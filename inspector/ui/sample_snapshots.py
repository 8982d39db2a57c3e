"""Synthetic snapshots: a realistic notebook with widgets, used by the benchmark, the tests
of the widgets themselves and the `--demo` screenshots. Nothing here talks to a daemon.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..snapshot import (
    CellView,
    CommView,
    DaemonView,
    Divergence,
    FeedCommView,
    FeedView,
    KernelView,
    KeyDiff,
    OutputView,
    Snapshot,
)

_MODELS = [
    ("IntSliderModel", "IntSliderView", {"value": 50, "min": 0, "max": 100, "step": 1, "description": "x"}),
    ("FloatTextModel", "FloatTextView", {"value": 2.5, "description": "rate"}),
    ("DropdownModel", "DropdownView", {"index": 0, "_options_labels": ["red", "green", "blue"]}),
    ("ButtonModel", "ButtonView", {"description": "Run", "button_style": "primary"}),
    ("OutputModel", "OutputView", {"outputs": [], "msg_id": ""}),
    ("LayoutModel", "LayoutView", {"width": "auto", "padding": None}),
]


def comm_id(i: int) -> str:
    return f"{i:08x}-7c1e-4a55-9b1f-{i * 7919 % 0xFFFFFFFFFFFF:012x}"


def cell_id(i: int) -> str:
    return f"cell-{i:04d}-{(i * 2654435761) % 0xFFFFFF:06x}"


def make_comm(i: int, seq: int | None = None, **state_over: Any) -> CommView:
    name, view, base = _MODELS[i % len(_MODELS)]
    state = {"_model_module": "@jupyter-widgets/controls" if name != "LayoutModel" else "@jupyter-widgets/base",
             "_model_name": name, "_view_name": view, **base, **state_over}
    if name == "LayoutModel":
        state["_model_module"] = "@jupyter-widgets/base"
    return CommView(comm_id=comm_id(i), seq=i if seq is None else seq, target_name="jupyter.widget",
                    model_module=state["_model_module"], model_name=name, state=state, state_error=None,
                    outputs=(), obj_id=f"{i + 40}@a1b2c3d4", writer="daemon:a1b2c3d4")


def feed_of(c: CommView) -> FeedCommView:
    return FeedCommView(comm_id=c.comm_id, target_name=c.target_name or "", model_module=c.model_module,
                        model_name=c.model_name, state=c.state, source="comm_sync")


def make_cell(i: int, n_comms: int = 0) -> CellView:
    kind = "markdown" if i % 5 == 0 else "code"
    if kind == "markdown":
        src = f"## Section {i // 5 + 1}\n\nNotes about step {i}."
        return CellView(id=cell_id(i), cell_type=kind, position=f"{0x80 + i:04X}", source=src, execution_count=None,
                        outputs=(), metadata={}, key=cell_id(i), obj_id=f"{i * 3 + 2}@a1b2c3d4")
    outputs: tuple[OutputView, ...] = ()
    if i % 3 == 1:
        outputs = (OutputView(ref=f"{i:064x}", output_type="stream",
                              manifest={"output_type": "stream", "name": "stdout", "text": {"inline": f"step {i}\n"}},
                              resolved={"text": {"inline": f"step {i} done\n"}}),)
    elif i % 3 == 2 and n_comms:
        cid = comm_id(i % n_comms)
        outputs = (OutputView(ref=f"{i + 7:064x}", output_type="display_data",
                              manifest={"output_type": "display_data", "data": {
                                  "application/vnd.jupyter.widget-view+json": {"inline": {"model_id": cid}}}},
                              resolved={"application/vnd.jupyter.widget-view+json": {
                                  "inline": f'{{"model_id": "{cid}", "version_major": 2, "version_minor": 0}}',
                                  "json": {"model_id": cid, "version_major": 2, "version_minor": 0}},
                                  "text/plain": {"inline": "IntSlider(value=50)"}}),)
    src = f"slider_{i} = widgets.IntSlider(value=50)\nslider_{i}" if i % 3 == 2 else f"result_{i} = compute({i})\nprint('step', {i})"
    return CellView(id=cell_id(i), cell_type=kind, position=f"{0x80 + i:04X}", source=src, execution_count=i,
                    outputs=outputs, metadata={"tags": ["widget"]} if i % 7 == 0 else {}, key=cell_id(i),
                    obj_id=f"{i * 3 + 2}@a1b2c3d4")


def make_snapshot(n_cells: int = 12, n_comms: int = 6, divergence: tuple[Divergence, ...] = (),
                  connection: str = "live") -> Snapshot:
    comms = tuple(make_comm(i) for i in range(n_comms))
    return Snapshot(
        daemon=DaemonView(socket="/run/user/1000/runtimed/runtimed.sock", protocol="v2", protocol_version=2,
                          daemon_version="0.9.1"),
        notebook_id="/home/ada/analysis/widgets.ipynb",
        schema_version=3,
        heads=("9f2c1e0b7d4a3c21",),
        cells=tuple(make_cell(i, n_comms) for i in range(n_cells)),
        metadata={"runtime": "python", "kernelspec": {"name": "python3", "display_name": "Python 3",
                                                      "language": "python"}},
        comms=comms,
        feed=FeedView(received_comm_sync=True, comms=tuple(feed_of(c) for c in comms), baseline="comm_sync"),
        kernel=KernelView(status="idle"),
        divergence=divergence,
        sources=("doc", "feed"),
        connection=connection,
        taken_at=time.time(),
    )


def set_comm_value(snap: Snapshot, i: int, value: Any, feed_value: Any = None) -> Snapshot:
    """A new snapshot where comm i's `value` changed in the doc (and in the feed, unless given)."""
    comms = list(snap.comms)
    c = comms[i]
    comms[i] = msgspec.structs.replace(c, state={**c.state, "value": value})
    feed = list(snap.feed.comms)
    for j, f in enumerate(feed):
        if f.comm_id == c.comm_id:
            fv = value if feed_value is None else feed_value
            feed[j] = msgspec.structs.replace(f, state={**f.state, "value": fv})
    return msgspec.structs.replace(snap, comms=tuple(comms), feed=msgspec.structs.replace(snap.feed, comms=tuple(feed)),
                                   taken_at=time.time())


def diverge(snap: Snapshot, i: int, doc_value: Any, feed_value: Any, status: str = "diverged",
            since_ms: float = 4200.0) -> Snapshot:
    """Comm i's `value` differs between doc and feed, reported with the given status."""
    snap = set_comm_value(snap, i, doc_value, feed_value)
    c = snap.comms[i]
    d = Divergence(comm_id=c.comm_id, kind="state_mismatch", severity="error" if status == "diverged" else "transient",
                   status=status, since_ms=since_ms, sides=("doc", "feed"), moved="feed", model_name=c.model_name,
                   detail="doc behind feed by 3 updates" if status == "diverged" else "",
                   keys=(KeyDiff(key="value", doc=doc_value, feed=feed_value, doc_age_ms=since_ms + 900,
                                 feed_age_ms=120.0, present=("doc", "feed"),
                                 values={"doc": doc_value, "feed": feed_value},
                                 ages_ms={"doc": since_ms + 900, "feed": 120.0}),))
    others = tuple(x for x in snap.divergence if x.comm_id != c.comm_id)
    return msgspec.structs.replace(snap, divergence=others + (d,))
