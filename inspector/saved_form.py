"""What a checkpoint holds of a document, its saved form, kept current without waiting for a
full save each time.

automerge loads a saved document followed by change chunks, so `SavedForm` keeps the last full
save with the raw changes applied since appended to it. A full save is taken again once the
appended bytes outweigh the last one (full saves grow rarer as the history grows): inline when
the last inline save was quick (`CHEAP_SAVE_S`), so a small room's checkpoints stay within twice
a full save (on the real 2.9.0, a 75 s slider recording's comms document: 9-15 KB full saves
against 218-459 KB of appended changes without this rule); otherwise, past `MIN_FULL_SAVE` as
well, in a forked child (`ForkedSave`) while the form keeps growing by appending. It is also
taken inline when nothing is known to append to (the first checkpoint, a history not followed
change by change) and where the platform cannot fork.

A slow full save needs a child because automerge's `Document.save()` holds the GIL for as
long as it takes, which grows with the history (about a third of a second at 30,000 changes on
a loaded machine): on the event loop that is a stall no thread can avoid. `fork()` gives a child a copy-on-write view of the document
as it is at that instant; the child saves it into an unnamed temporary file and exits, and the
parent picks the bytes up when it next asks (`result`), never blocking on it.

The child runs nothing but the binding's `save` and `os.write`, then `os._exit`: no Python
cleanup, no Qt, no event loop, no buffered output of the parent. That is what makes forking a
process that has other threads safe here (glibc's `fork` leaves malloc usable in the child;
nothing else the child touches takes a lock). Linux only: on macOS a forked child of a Cocoa
process may abort, so there `start` gives None and the caller saves inline."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any

MIN_FULL_SAVE = 128 * 1024  # a slow-to-save document's changes are appended up to this many bytes
CHEAP_SAVE_S = 0.010  # a full save this quick is taken inline again (the next is a little longer: < 16 ms)
FORK_SAVES = sys.platform.startswith("linux") and hasattr(os, "fork")


def _child(doc: Any, fd: int) -> None:
    status = 1
    try:
        view = memoryview(doc.save())
        while view:
            view = view[os.write(fd, view):]
        status = 0
    finally:
        os._exit(status)


def _reap(pid: int, file: Any) -> None:
    """The child is not wanted any more: stop it and collect its exit, so no zombie stays."""
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    file.close()


class ForkedSave:
    """One save running in a child; `result()` is None until it is done."""

    def __init__(self, pid: int, file: Any) -> None:
        self.pid = pid
        self._file = file
        self._status: int | None = None
        self._finalizer = weakref.finalize(self, _reap, pid, file)

    @classmethod
    def start(cls, doc: Any) -> ForkedSave | None:
        """Fork a child that saves `doc` as it is now; None where that cannot be done (not
        Linux, or the fork failed): the caller then saves inline."""
        if not FORK_SAVES:
            return None
        file = tempfile.TemporaryFile(prefix="inspector-save-")
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns on fork in a threaded process; the child above is safe
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError:
            file.close()
            return None
        if pid == 0:
            _child(doc, file.fileno())
        return cls(pid, file)

    @property
    def done(self) -> bool:
        """The child has exited (successfully or not); never blocks."""
        if self._status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 1  # reaped elsewhere: what it wrote cannot be trusted
            if pid == 0:
                return False
            self._status = status
            self._finalizer.detach()
        return True

    def result(self) -> bytes | None:
        """The saved bytes once the child is done; None while it runs. Raises OSError when the
        child failed (the caller saves inline)."""
        if not self.done:
            return None
        try:
            if self._status != 0:
                raise OSError(f"the saving child exited with status {self._status}")
            self._file.seek(0)
            data = self._file.read()
            if not data:
                raise OSError("the saving child wrote nothing")
            return data
        finally:
            self._file.close()

    def cancel(self) -> None:
        """Stop the child if it still runs and let its file go."""
        if self._status is None:
            self._finalizer()
        else:
            self._file.close()


class SavedForm:
    """The bytes `Document.load` turns into the document as it is: a full save plus the raw
    changes applied after it, in an order that respects their deps.

    The owner says when the document moves: `moving()` before it applies anything, then
    `moved(raws)` with exactly the changes applied (their raw bytes), or `moved(None)` when it
    does not know them. A move left unfinished (the apply raised) forgets the form."""

    def __init__(self) -> None:
        self._base: bytes | None = None  # the last full save (None: nothing to append to)
        self._after: list[bytes] = []  # raw changes applied since that save
        self._after_bytes = 0  # their total size, kept as they come
        self._pending: ForkedSave | None = None
        self._pending_at = 0  # len(_after) when the pending save was forked
        self._moving = False
        self._save_s: float | None = None  # how long the last inline full save took
        self.full_saves = 0  # inline
        self.forked_saves = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> SavedForm:
        # a copied replica (time travel) moves on its own: it starts with nothing to append
        # to, and never shares a saving child
        return SavedForm()

    def forget(self) -> None:
        """The document changed other than by changes told: the next `form` saves in full."""
        self._base, self._after, self._after_bytes = None, [], 0
        self._moving = False
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def moving(self) -> None:
        self._moving = True

    def moved(self, raws: Iterable[bytes] | None) -> None:
        self._moving = False
        if raws is None:
            self.forget()
        elif self._base is not None:
            for raw in raws:
                self._after.append(raw)
                self._after_bytes += len(raw)

    def form(self, doc: Any, save: Callable[[], bytes] | None = None) -> bytes:
        """The saved form of `doc` now. `save` saves it inline (default `doc.save`): the caller
        may wrap it to turn the binding's errors into its own."""
        if self._moving:
            self.forget()
        self._adopt_pending()
        save = save or doc.save
        if self._base is None:
            self._inline(save)
        elif self._pending is None and self._after_bytes > len(self._base):
            if self._save_s is not None and self._save_s <= CHEAP_SAVE_S:
                self._inline(save)  # quick: keep the form within twice a full save
            elif self._after_bytes > MIN_FULL_SAVE:
                self._pending = ForkedSave.start(doc)
                self._pending_at = len(self._after)
                if self._pending is None:  # cannot fork here: inline
                    self._inline(save)
        assert self._base is not None
        return b"".join([self._base, *self._after])

    def _adopt_pending(self) -> None:
        if self._pending is None:
            return
        try:
            data = self._pending.result()
        except OSError:
            self.forget()  # the child failed: save inline, now
            return
        if data is None:
            return  # still saving
        self._pending = None
        self._full(data, self._pending_at)
        self.forked_saves += 1

    def _inline(self, save: Callable[[], bytes]) -> None:
        t0 = time.perf_counter()
        data = save()
        self._save_s = time.perf_counter() - t0
        self._full(data, len(self._after))
        self.full_saves += 1

    def _full(self, data: bytes, at: int) -> None:
        """`data` is a full save of the document after the first `at` changes of `_after`."""
        self._base = data
        self._after = self._after[at:]
        self._after_bytes = sum(len(r) for r in self._after)
