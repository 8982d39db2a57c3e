"""The window's flight recorder: a Record button (the session from now to a file) and "Save the
last N minutes" (the always-on ring, for the bug you just saw), with the ring's bounds shown."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QFileDialog, QLabel, QPushButton, QSpinBox, QToolBar, QWidget

from ..recording.session_recording import RecordingOptions

PathAsker = Callable[[str, str], str | None]  # (title, suggested name) -> path or None


def ask_path(parent: QWidget) -> PathAsker:
    def ask(title: str, name: str) -> str | None:
        path, _ = QFileDialog.getSaveFileName(parent, title, name, "Recordings (*.rtirec)")
        return path or None

    return ask


class RecorderBar(QToolBar):
    """Bound to whatever session the window shows now (`session()`); `ask` picks a file."""

    def __init__(self, parent: QWidget, session: Callable[[], Any], notify: Callable[[str], None],
                 ask: PathAsker | None = None) -> None:
        super().__init__("Recorder", parent)
        self.setObjectName("recorder")
        self.setMovable(False)
        self.session = session
        self.notify = notify
        self.ask = ask or ask_path(parent)
        self.record = QPushButton("● Record", self)
        self.record.setCheckable(True)
        self.record.setToolTip("Record the session to a file from now (replay it with `runtimed-inspector open FILE`)")
        self.minutes = QSpinBox(self)
        self.minutes.setRange(1, 60)
        self.minutes.setValue(5)
        self.minutes.setSuffix(" min")
        self.save = QPushButton("Save the last", self)
        self.save.setToolTip("Write what the in-memory ring holds of the last N minutes as a recording")
        self.limits = QLabel(self)
        self.addWidget(self.record)
        self.addSeparator()
        self.addWidget(self.save)
        self.addWidget(self.minutes)
        self.addWidget(self.limits)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pending: asyncio.Task[Any] | None = None  # the last start, stop or save (tests await it)
        self.record.toggled.connect(self._on_record)
        self.save.clicked.connect(self.save_ring)
        self.refresh()

    def _recording(self) -> Any:
        s = self.session()
        return getattr(s, "recording", None)

    def refresh(self) -> None:
        """Enable what the shown session allows and show the ring's bounds."""
        rec = self._recording()
        self.record.setEnabled(rec is not None)
        self.save.setEnabled(rec is not None)
        opts = rec.options if rec is not None else RecordingOptions()
        held = ""
        if rec is not None and rec.recorder.ring is not None:
            held = f" · holds {rec.recorder.ring.size / (1 << 20):.1f} MiB"
        self.limits.setText(f"  ring: {opts.limits()}{held}")
        self.minutes.setMaximum(max(1, int(opts.ring_age // 60)))
        with_file = rec is not None and rec.file is not None
        if self.record.isChecked() != with_file:
            self.record.blockSignals(True)
            self.record.setChecked(with_file)
            self.record.blockSignals(False)
        self.record.setText("■ Stop recording" if with_file else "● Record")

    def _on_record(self, on: bool) -> None:
        self.pending = self._spawn(self._record(on))

    async def _record(self, on: bool) -> None:
        rec = self._recording()
        if rec is None:
            self.refresh()
            return
        if on:
            path = self.ask("Record the session to", time.strftime("session-%Y%m%d-%H%M%S.rtirec"))
            if path is None:
                self.refresh()
                return
            try:
                await _settled(rec.start_file(path))
            except (OSError, ValueError) as exc:
                self.notify(f"Cannot record to {path}: {exc}")
            else:
                self.notify(f"Recording to {os.path.basename(path)}")
        else:
            path = await _settled(rec.stop_file())
            if path:
                self.notify(f"Recording saved: {path}")
        self.refresh()

    def save_ring(self) -> asyncio.Task[str | None]:
        """Ask for a file and write the ring's last N minutes to it; the task gives the path
        written (None: not written). The session's core may be in another process, so it waits."""
        self.pending = self._spawn(self._save_ring())
        return self.pending

    async def _save_ring(self) -> str | None:
        rec = self._recording()
        if rec is None:
            return None
        minutes = self.minutes.value()
        path = self.ask(f"Save the last {minutes} min to", time.strftime(f"last-{minutes}min-%Y%m%d-%H%M%S.rtirec"))
        if path is None:
            return None
        try:
            n = await _settled(rec.save_ring(path, last=minutes * 60.0))
        except (OSError, ValueError) as exc:
            self.notify(f"Cannot save the ring to {path}: {exc}")
            return None
        self.notify(f"Saved the last {minutes} min ({n} records) to {os.path.basename(path)}")
        self.refresh()
        return path

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_event_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


async def _settled(value: Any) -> Any:
    """A recorder's answer: at once in the window's process, awaited from a child's."""
    return await value if inspect.isawaitable(value) else value
