"""Filling a big tree in slices, so no single callback builds thousands of rows.

A join hands the window a whole room at once: 10,000 cells and 2,000 comms are ~33,000 rows,
and building them in one callback froze the window for a third of a second even with the session
core in its own process. `FillPlan.next_part` gives the part of the newest snapshot to show next:
what the tree already shows plus at most `slice` more cells (then comms), and says whether more
is to come. The slice adapts to the time each step took, aiming at `budget_ms` per callback.

A part is the snapshot itself cut to a prefix of its cells and comms; the feed comms and the
divergences of comms not shown yet wait with them (they would otherwise appear as comms of their
own). The window keeps judging and reporting on the whole snapshot: only the tree fills in.
"""

from __future__ import annotations

import msgspec

from ..snapshot import Snapshot

MIN_SLICE = 10
MAX_SLICE = 5_000


class FillPlan:
    def __init__(self, budget_ms: float = 8.0, threshold: int = 300) -> None:
        self.budget_ms = budget_ms
        self.threshold = threshold  # fewer new entries than this go at once (small rooms, updates)
        # a comm (state keys, views, liveness) costs several cells' rows: each has its own slice
        self.slices = {"cells": 150, "comms": 30}
        self._last: str | None = None

    @property
    def slice(self) -> int:
        return self.slices["cells"]

    def next_part(self, snap: Snapshot, shown: Snapshot | None) -> tuple[Snapshot, bool]:
        """(the snapshot to show now, whether a later step shows more of `snap`)."""
        n_cells = len(shown.cells) if shown is not None else 0
        n_comms = len(shown.comms) if shown is not None else 0
        missing = max(0, len(snap.cells) - n_cells) + max(0, len(snap.comms) - n_comms)
        if not missing or missing <= self.threshold and self._last is None:  # mid-fill, the rest goes in slices too
            self._last = None
            return snap, False
        cells, comms = n_cells, n_comms
        if n_cells < len(snap.cells):
            cells, self._last = min(len(snap.cells), n_cells + self.slices["cells"]), "cells"
        else:  # cells done: comms next
            comms, self._last = min(len(snap.comms), n_comms + self.slices["comms"]), "comms"
        if cells >= len(snap.cells) and comms >= len(snap.comms):
            return snap, False
        return cut(snap, cells, comms), True

    def took(self, ms: float) -> None:
        """The last step took `ms`: size the next one of its kind to the budget."""
        if ms > 0 and self._last is not None:
            n = self.slices[self._last]
            self.slices[self._last] = max(MIN_SLICE, min(MAX_SLICE, int(n * self.budget_ms / ms)))


def cut(snap: Snapshot, n_cells: int, n_comms: int) -> Snapshot:
    comms = snap.comms[:n_comms]
    ids = {c.comm_id for c in comms}
    feed = msgspec.structs.replace(snap.feed, comms=tuple(f for f in snap.feed.comms if f.comm_id in ids))
    return msgspec.structs.replace(snap, cells=snap.cells[:n_cells], comms=comms, feed=feed,
                                   divergence=tuple(d for d in snap.divergence if d.comm_id in ids))
