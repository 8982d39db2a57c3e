"""The process's cyclic garbage collector over a long session.

Python's full collections walk every container object alive, and a joined room is hundreds
of thousands of them (the replica's reads, the snapshot, the tree, the key history): at 60
updates a second each full pass stalled the event loop 100-300 ms. After each join the
process collects once (a pause inside the join, which is long anyway) and freezes what is
alive: later passes walk only what was made since. Objects frozen that die later are still
freed by their reference counts; a frozen cycle waits for the next join's collection, which
unfreezes first. The window and `watch` call this; one-shot commands do not."""

from __future__ import annotations

import gc
import time


def settle_after_join() -> float:
    """Collect everything once, then keep what survives out of later full passes. Returns
    the pause in milliseconds."""
    t0 = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return (time.perf_counter() - t0) * 1000.0


def freeze_survivors() -> float:
    """Keep every object alive now out of later full passes, without a collection first (a
    window whose session core runs in another process makes little garbage while it fills its
    tree; collecting there would be the longest pause of the join). Returns milliseconds."""
    t0 = time.perf_counter()
    gc.freeze()
    return (time.perf_counter() - t0) * 1000.0
