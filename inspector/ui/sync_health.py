"""Per-document sync health in the status bar: frames and bytes per second, sync rounds and
changes waiting, for each document the session keeps a replica of.

Read from what the session already holds: the event log's frame records (each names its
document) for the rates, each replica's message counters for the sync rounds, and its
`unapplied` changes (sent by the daemon, not applied: waiting on a dependency, or corrupt) for
the changes waiting. A document not at the daemon's advertised heads is marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QMainWindow, QSizePolicy

WINDOW_S = 2.0  # rates over the last two seconds


@dataclass(frozen=True)
class DocHealth:
    name: str
    frames_per_s: float
    bytes_per_s: float
    rounds: int  # sync messages received (each answered: one round)
    waiting: int  # changes the daemon sent that the replica does not hold yet
    converged: bool


def doc_health(session: Any, now: float, window_s: float = WINDOW_S) -> list[DocHealth]:
    """Each replica's health at `now` (the session's clock)."""
    frames: dict[str, list[int]] = {}
    for rec in reversed(session.log.frames()):
        if rec.t < now - window_s:
            break
        if rec.direction == "in" and rec.doc:
            c = frames.setdefault(rec.doc, [0, 0])
            c[0] += 1
            c[1] += rec.size
    out = []
    for rep in session.replicas.values():
        n, size = frames.get(rep.name, (0, 0))
        out.append(DocHealth(rep.name, n / window_s, size / window_s, rep.messages_in, len(rep.unapplied),
                             rep.converged))
    return out


def _rate(b: float) -> str:
    return f"{b / 1024:.1f} KiB/s" if b >= 1024 else f"{b:.0f} B/s"


def health_text(docs: list[DocHealth]) -> tuple[str, str]:
    """(the status-bar text, its tooltip: one line per document)."""
    short, lines = [], []
    for d in docs:
        mark = "" if d.converged else " ⟳"
        wait = f" · {d.waiting} waiting" if d.waiting else ""
        short.append(f"{d.name} {d.frames_per_s:.1f}/s{wait}{mark}")
        lines.append(f"{d.name}: {d.frames_per_s:.1f} frames/s, {_rate(d.bytes_per_s)}, {d.rounds} sync rounds, "
                     f"{d.waiting} change(s) waiting{'' if d.converged else ', not at the daemon heads'}")
    return " · ".join(short), "\n".join(lines)


class SyncHealthLabel(QLabel):
    """Refreshed once a second while a session is attached."""

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.window_ = window
        self.docs: list[DocHealth] = []
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()

    def refresh(self) -> None:
        session = self.window_.controller.session
        if session is None or not getattr(session, "replicas", None):
            self.docs = []
            self.setText("")
            return
        self.docs = doc_health(session, session.clock())
        text, tip = health_text(self.docs)
        self.setText(text)
        self.setToolTip("Sync health per document (last 2 s)\n" + tip)


def install(window: QMainWindow) -> SyncHealthLabel:
    label = SyncHealthLabel(window)
    # beside the room summary, clipped before the verdict and traffic are (the tooltip has it all)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    window.statusBar().addWidget(label, 2)
    return label
