"""Test helpers for waiting on conditions (never on fixed sleeps) and for a Qt asyncio loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any


async def wait_until(pred: Callable[[], Any], what: str = "", timeout: float = 30.0, poll: float = 0.02) -> Any:
    """Poll `pred` on the running loop until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or pred}")
        await asyncio.sleep(poll)


def until(loop: asyncio.AbstractEventLoop, pred: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """`wait_until` from synchronous test code: runs `loop` while waiting."""
    return loop.run_until_complete(wait_until(pred, what, timeout))


def qt_loop(qapp: Any) -> Iterator[asyncio.AbstractEventLoop]:
    """A qasync loop for a fixture: `yield from qt_loop(qapp)`. On teardown, what sessions left
    behind (blob fetches, timers) is finished while the loop still runs, then it is closed."""
    import qasync

    lp = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(lp)
    try:
        yield lp
    finally:
        pending = [t for t in asyncio.all_tasks(lp) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            lp.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        lp.close()
        asyncio.set_event_loop(None)
