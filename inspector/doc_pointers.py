"""Are the documents we joined the ones the notebook document names?

Notebook doc schema 5 (upstream `notebook-doc/src/lib.rs`, #3695) carries two root pointers,
`runtime_state_doc_id` and `comms_doc_id`, stamped by the daemon and repaired on load to the
defaults `runtime:<notebook_id>` / `comms:<notebook_id>`. What each joined document says
about itself:

* the RuntimeStateDoc names itself at its root (`runtime_state_doc_id`): compared directly;
* the CommsDoc (schema 1: `schema_version`, `comms`) carries no identity; the daemon serves
  the room's `comms:<notebook_id>` on frame 0x09, so the pointer is compared with that id
  (`derived`);
* the CommentsDoc names itself (`comments_doc_id`), as does the bootstrap's
  `comments_doc_id`: compared with each other (the notebook doc has no pointer to it).

A pointer that differs from the joined document is `mismatch`; a missing one on schema 5 is
`missing` (upstream repairs it on load, so a live room should never show it); before
schema 5 the pointers do not exist (`not_applicable`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .snapshot import Snapshot

OK, MISMATCH, MISSING, NOT_APPLICABLE, DERIVED = "ok", "mismatch", "missing", "not_applicable", "derived"


class PointerCheck(msgspec.Struct, frozen=True):
    name: str  # notebook_id | runtime_state_doc_id | comms_doc_id | comments_doc_id
    status: str  # ok | derived | mismatch | missing | not_applicable
    pointer: str | None = None  # what the notebook doc (or bootstrap) says
    joined: str | None = None  # what the joined document says (or the id it is served as)
    detail: str = ""


class PointerReport(msgspec.Struct, frozen=True):
    checks: tuple[PointerCheck, ...] = ()

    @property
    def ok(self) -> bool:
        return all(c.status in (OK, DERIVED, NOT_APPLICABLE) for c in self.checks)

    @property
    def findings(self) -> tuple[PointerCheck, ...]:
        return tuple(c for c in self.checks if c.status in (MISMATCH, MISSING))

    def to_json(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


def _s(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def check_doc_pointers(joined_notebook_id: str, notebook_root: Mapping[str, Any],
                       runtime_state_root: Mapping[str, Any] | None,
                       comments_root: Mapping[str, Any] | None = None,
                       capabilities: Mapping[str, Any] | None = None,
                       schema_version: int | None = None) -> PointerReport:
    """Compare the notebook doc's pointers with the joined documents.

    `notebook_root`: the notebook doc's root keys (`notebook_id`, `runtime_state_doc_id`,
    `comms_doc_id`, ...); `runtime_state_root` / `comments_root`: those documents' root keys
    (None when not joined); `capabilities`: the bootstrap reply; `schema_version`: the
    notebook doc's (read from `notebook_root` when None)."""
    if schema_version is None:
        sv = notebook_root.get("schema_version")
        schema_version = int(sv) if isinstance(sv, int) else None
    nb_id = _s(notebook_root.get("notebook_id"))
    checks = [PointerCheck("notebook_id", OK if nb_id == joined_notebook_id else (MISSING if nb_id is None else MISMATCH),
                           nb_id, joined_notebook_id,
                           "" if nb_id == joined_notebook_id else "the notebook doc names another notebook")]
    v5 = schema_version is not None and schema_version >= 5
    rs_ptr = _s(notebook_root.get("runtime_state_doc_id"))
    rs_self = _s(runtime_state_root.get("runtime_state_doc_id")) if runtime_state_root is not None else None
    if rs_ptr is None:
        checks.append(PointerCheck("runtime_state_doc_id", MISSING if v5 else NOT_APPLICABLE, None, rs_self,
                                   "schema 5 notebook doc without the pointer" if v5 else "before schema 5"))
    elif runtime_state_root is None:
        checks.append(PointerCheck("runtime_state_doc_id", MISSING, rs_ptr, None, "no runtime-state document joined"))
    elif rs_self is None:
        checks.append(PointerCheck("runtime_state_doc_id", DERIVED if rs_ptr == f"runtime:{joined_notebook_id}"
                                   else MISMATCH, rs_ptr, f"runtime:{joined_notebook_id}",
                                   "the runtime-state document does not name itself"))
    else:
        checks.append(PointerCheck("runtime_state_doc_id", OK if rs_ptr == rs_self else MISMATCH, rs_ptr, rs_self,
                                   "" if rs_ptr == rs_self else "the joined runtime-state document is another one"))
    cm_ptr = _s(notebook_root.get("comms_doc_id"))
    served = f"comms:{joined_notebook_id}"
    if cm_ptr is None:
        checks.append(PointerCheck("comms_doc_id", MISSING if v5 else NOT_APPLICABLE, None, served,
                                   "schema 5 notebook doc without the pointer" if v5 else "before schema 5"))
    else:
        checks.append(PointerCheck("comms_doc_id", DERIVED if cm_ptr == served else MISMATCH, cm_ptr, served,
                                   "the comms document does not name itself: compared with the id the room serves"
                                   if cm_ptr == served else "the notebook doc points at another comms document"))
    cap = _s((capabilities or {}).get("comments_doc_id"))
    own = _s(comments_root.get("comments_doc_id")) if comments_root is not None else None
    if cap is not None and own is not None:
        checks.append(PointerCheck("comments_doc_id", OK if cap == own else MISMATCH, cap, own,
                                   "" if cap == own else "the joined comments document is not the one announced"))
    return PointerReport(tuple(checks))


def check_snapshot_pointers(snapshot: Snapshot, joined_notebook_id: str | None = None,
                            capabilities: Mapping[str, Any] | None = None) -> PointerReport:
    """The same check from a `Snapshot` alone: its root keys and the raw trees of its
    `documents` (the runtime-state tree keeps `runtime_state_doc_id`, the comments tree is
    whole). A v2 snapshot has no secondary documents: every pointer is `not_applicable`."""
    trees = {d.name: d.tree for d in snapshot.documents}
    root = {**snapshot.extra_root, "notebook_id": snapshot.notebook_id}
    rs = trees.get("runtime_state")
    cm = trees.get("comments")
    return check_doc_pointers(joined_notebook_id or snapshot.notebook_id, root,
                              rs if isinstance(rs, dict) else None, cm if isinstance(cm, dict) else None,
                              capabilities, snapshot.schema_version)
