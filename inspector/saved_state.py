"""The saved notebook as one more view: the widget state a reopened notebook would restore.

`save_notebook` writes `metadata.widgets["application/vnd.jupyter.widget-state+json"]`:
`{version_major, version_minor, state: {<model id>: {model_name, model_module,
model_module_version, state: {...}, buffers?: [{path, encoding: "base64", data}]}}}`
(runtimed-v4 §15 view F). `read_saved_state` reads it tolerantly: a file that cannot be read
or is not a JSON object is an error (one line); anything malformed inside is skipped and
named in `problems`. `compare_saved` sets it against the live room's comms, per comm and key.

Normalisation, so that only what a reopened notebook would restore differently counts:
numbers compare by value; a saved binary buffer equals a room blob ref whose hash is the
sha256 of the buffer's bytes (v2 rooms hold no bytes in state: such keys are `unverifiable`);
Output widget `outputs` compare as (output_type, stream name, MIME types, inline text) since
the room holds manifests and the file nbformat outputs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from typing import Any

import msgspec

from .errors import EXIT_USAGE, InspectorError
from .snapshot import CommView, Snapshot

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class SavedStateError(InspectorError):
    exit_code = EXIT_USAGE


class SavedModel(msgspec.Struct, frozen=True):
    model_id: str
    model_name: str | None
    model_module: str | None
    model_module_version: str | None
    state: dict[str, Any]
    buffers: dict[tuple[str, ...], str] = {}  # path -> sha256 of the decoded bytes


class SavedView(msgspec.Struct, frozen=True):
    """A widget-view output saved in a cell: what a reopened notebook tries to render."""

    cell_id: str
    output_index: int
    model_id: str


class SavedState(msgspec.Struct, frozen=True):
    source: str
    models: dict[str, SavedModel] = {}
    version: str | None = None  # "2.0"
    present: bool = False  # the notebook has widget-state metadata at all
    problems: tuple[str, ...] = ()
    views: tuple[SavedView, ...] = ()

    @property
    def unrestorable_views(self) -> tuple[SavedView, ...]:
        """Saved views of models the saved state lacks: "model not found" on reopening."""
        return tuple(v for v in self.views if v.model_id not in self.models)


class KeyDifference(msgspec.Struct, frozen=True):
    key: str
    saved: Any = None
    room: Any = None
    status: str = "differs"  # differs | missing_in_saved | missing_in_room | unverifiable


class CommComparison(msgspec.Struct, frozen=True):
    comm_id: str
    model_name: str | None
    status: str  # same | differs | missing_in_saved | missing_in_room | no_room_state (not loaded yet)
    keys: tuple[KeyDifference, ...] = ()


class SavedComparison(msgspec.Struct, frozen=True):
    source: str
    comms: tuple[CommComparison, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def differences(self) -> tuple[CommComparison, ...]:
        return tuple(c for c in self.comms if c.status not in ("same", "no_room_state"))

    def to_json(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


# --------------------------------------------------------------------------- reading


def read_saved_state(source: str | os.PathLike[str] | bytes | dict[str, Any]) -> SavedState:
    """The widget state of a saved `.ipynb` (a path, its bytes, or the parsed notebook)."""
    name = "<notebook>"
    if isinstance(source, dict):
        nb: Any = source
    else:
        if isinstance(source, bytes):
            raw = source
        else:
            name = os.fspath(source)
            try:
                with open(name, "rb") as fh:
                    raw = fh.read()
            except OSError as exc:
                raise SavedStateError(f"cannot read saved notebook {name}: {exc.strerror or exc}") from None
        try:
            nb = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SavedStateError(f"saved notebook {name} is not JSON: {exc}") from None
    if not isinstance(nb, dict):
        raise SavedStateError(f"saved notebook {name} is not a JSON object")
    problems: list[str] = []
    views = _views(nb)
    meta = nb.get("metadata")
    widgets = meta.get("widgets") if isinstance(meta, dict) else None
    block = widgets.get(WIDGET_STATE) if isinstance(widgets, dict) else None
    if block is None:
        return SavedState(name, present=False, views=views)
    if not isinstance(block, dict):
        return SavedState(name, present=True, problems=(f"{WIDGET_STATE} is not an object",), views=views)
    version = None
    if isinstance(block.get("version_major"), int):
        version = f"{block['version_major']}.{block.get('version_minor', 0)}"
    state = block.get("state")
    if not isinstance(state, dict):
        return SavedState(name, version=version, present=True, problems=("widget state has no `state` object",),
                          views=views)
    models: dict[str, SavedModel] = {}
    for mid, entry in state.items():
        if not isinstance(entry, dict):
            problems.append(f"model {mid}: entry is not an object")
            continue
        st = entry.get("state")
        if not isinstance(st, dict):
            problems.append(f"model {mid}: `state` is not an object")
            st = {}
        models[mid] = SavedModel(mid, _str(entry.get("model_name")), _str(entry.get("model_module")),
                                 _str(entry.get("model_module_version")), st, _buffers(mid, entry, problems))
    return SavedState(name, models, version, True, tuple(problems), views)


def _views(nb: dict[str, Any]) -> tuple[SavedView, ...]:
    out = []
    cells = nb.get("cells")
    for i, cell in enumerate(cells if isinstance(cells, list) else []):
        outs = cell.get("outputs") if isinstance(cell, dict) else None
        cid = cell.get("id") if isinstance(cell, dict) and isinstance(cell.get("id"), str) else f"#{i}"
        for j, o in enumerate(outs if isinstance(outs, list) else []):
            data = o.get("data") if isinstance(o, dict) else None
            view = data.get(WIDGET_VIEW) if isinstance(data, dict) else None
            if isinstance(view, dict) and isinstance(view.get("model_id"), str):
                out.append(SavedView(cid, j, view["model_id"]))
    return tuple(out)


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _buffers(mid: str, entry: dict[str, Any], problems: list[str]) -> dict[tuple[str, ...], str]:
    raw = entry.get("buffers")
    if raw is None:
        return {}
    if not isinstance(raw, list):
        problems.append(f"model {mid}: `buffers` is not a list")
        return {}
    out = {}
    for i, b in enumerate(raw):
        if not isinstance(b, dict) or not isinstance(b.get("path"), list) or not isinstance(b.get("data"), str):
            problems.append(f"model {mid}: buffer {i} lacks path or data")
            continue
        try:
            data = base64.b64decode(b["data"], validate=True) if b.get("encoding", "base64") == "base64" \
                else b["data"].encode()
        except (binascii.Error, ValueError):
            problems.append(f"model {mid}: buffer {i} is not valid base64")
            continue
        out[tuple(str(p) for p in b["path"])] = hashlib.sha256(data).hexdigest()
    return out


# --------------------------------------------------------------------------- comparing


def _outputs_form(outs: Any) -> Any:
    if not isinstance(outs, list):
        return outs
    form = []
    for o in outs:
        if not isinstance(o, dict):
            form.append(o)
            continue
        data = o.get("data") if isinstance(o.get("data"), dict) else {}
        text = o.get("text")
        if isinstance(text, dict):  # a manifest content ref
            text = text.get("inline")
        elif isinstance(text, list):
            text = "".join(str(t) for t in text)
        form.append((o.get("output_type"), o.get("name"), tuple(sorted(data)), text))
    return form


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _at(state: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        if isinstance(state, dict):
            state = state.get(p)
        elif isinstance(state, list) and p.isdigit() and int(p) < len(state):
            state = state[int(p)]
        else:
            return None
    return state


_ABSENT = object()


def _with_saved_buffers(key: str, saved: Any, room: Any, nested: set[tuple[str, ...]]) -> Any:
    """`room` with the saved value put back at each nested buffer path under `key` (those
    paths were compared by hash already)."""
    paths = [p[1:] for p in nested if p[0] == key]
    if not paths:
        return room
    room = json.loads(json.dumps(room))
    for path in paths:
        parent = _at(room, path[:-1])
        if isinstance(parent, dict):
            parent[path[-1]] = _at(saved, path)
        elif isinstance(parent, list) and path[-1].isdigit() and int(path[-1]) < len(parent):
            parent[int(path[-1])] = _at(saved, path)
    return room


def _compare_model(saved: SavedModel, room: CommView) -> tuple[KeyDifference, ...]:
    diffs: list[KeyDifference] = []
    rstate = room.state if isinstance(room.state, dict) else {}
    if saved.model_name and room.model_name and saved.model_name != room.model_name:
        diffs.append(KeyDifference("(model_name)", saved.model_name, room.model_name))
    whole = {p[0] for p in saved.buffers if len(p) == 1}  # keys that are a buffer entirely
    nested = {p for p in saved.buffers if len(p) > 1}
    for path, digest in saved.buffers.items():
        val = _at(rstate, path)
        key = "/".join(path)
        if isinstance(val, dict) and isinstance(val.get("blob"), str):
            if val["blob"] != digest:
                diffs.append(KeyDifference(key, {"sha256": digest}, {"blob": val["blob"]}))
        else:
            diffs.append(KeyDifference(key, {"sha256": digest}, val, status="unverifiable"))
    for key in sorted(set(saved.state) | set(rstate)):
        if key in whole:
            continue  # compared above, by hash
        s, r = saved.state.get(key, _ABSENT), rstate.get(key, _ABSENT)
        if s is _ABSENT:
            diffs.append(KeyDifference(key, None, r, "missing_in_saved"))
        elif r is _ABSENT:
            diffs.append(KeyDifference(key, s, None, "missing_in_room"))
        elif key == "outputs" and room.model_name == "OutputModel":
            if not _equal(_outputs_form(s), _outputs_form(r)):
                diffs.append(KeyDifference(key, s, r))
        elif not _equal(s, _with_saved_buffers(key, s, r, nested)):
            diffs.append(KeyDifference(key, s, r))
    return tuple(diffs)


def compare_saved(saved: SavedState, snapshot: Snapshot) -> SavedComparison:
    """Per comm and key: what the saved notebook would restore against the live room."""
    room = {c.comm_id: c for c in snapshot.comms}
    out: list[CommComparison] = []
    for cid, c in room.items():
        model = saved.models.get(cid)
        if model is None:
            out.append(CommComparison(cid, c.model_name, "missing_in_saved"))
            continue
        if not isinstance(c.state, dict):  # v4 topology whose state has not arrived: nothing to compare yet
            out.append(CommComparison(cid, c.model_name, "no_room_state"))
            continue
        keys = _compare_model(model, c)
        real = tuple(k for k in keys if k.status != "unverifiable")
        out.append(CommComparison(cid, c.model_name, "differs" if real else "same", keys))
    for mid, model in saved.models.items():
        if mid not in room:
            out.append(CommComparison(mid, model.model_name, "missing_in_room"))
    return SavedComparison(saved.source, tuple(out), saved.problems)
