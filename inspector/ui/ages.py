"""Ages that keep counting while the room is idle.

A session hands out the same cached snapshot while nothing changes, so the ages inside it
(how long a divergence has lasted, how long ago each side changed a key) are those of the
moment it was taken. Nothing changed since then, so each age is simply older by the time
elapsed: `aged` returns the snapshot with every age moved on to `now`.
"""

from __future__ import annotations

import time

import msgspec

from ..snapshot import Divergence, KeyDiff, Snapshot


def aged(snap: Snapshot, now: float | None = None) -> Snapshot:
    """`snap` with its divergence ages as they are at `now` (wall clock); `snap` itself when
    it has no divergence or no time (`taken_at`) to count from."""
    if not snap.divergence or not snap.taken_at:
        return snap
    elapsed_ms = max(0.0, ((time.time() if now is None else now) - snap.taken_at) * 1000.0)
    if elapsed_ms < 1.0:
        return snap
    return msgspec.structs.replace(snap, divergence=tuple(_aged_div(d, elapsed_ms) for d in snap.divergence),
                                   taken_at=snap.taken_at + elapsed_ms / 1000.0)


def _aged_div(d: Divergence, ms: float) -> Divergence:
    return msgspec.structs.replace(d, since_ms=round(d.since_ms + ms, 1),
                                   keys=tuple(_aged_key(k, ms) for k in d.keys))


def _aged_key(k: KeyDiff, ms: float) -> KeyDiff:
    def on(age: float | None) -> float | None:
        return None if age is None else round(age + ms, 1)  # None: held at the join, no age

    return msgspec.structs.replace(k, doc_age_ms=on(k.doc_age_ms), feed_age_ms=on(k.feed_age_ms),
                                   kernel_age_ms=on(k.kernel_age_ms),
                                   ages_ms={s: round(a + ms, 1) for s, a in k.ages_ms.items()})
