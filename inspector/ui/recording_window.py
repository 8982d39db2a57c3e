"""The window on a recording (`runtimed-inspector open FILE`): the room's tree, the detail of the
selected row and the divergences as of the event the scrubber selects, "Diff two points" and
"Report a bug" (the bundle, optionally redacted).

The window opens at once: the recording's pass through the session core (`inspector.time_travel`)
runs in slices on the event loop, the scrubber grows as it goes and the status bar says how far
it got. A position is the nearest copy of the core the pass kept at or before it, replayed to the
event; forward moves continue from the last position.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStatusBar,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from ..replay_driver import Replay, parse_at
from ..time_travel import TimeTravel
from .detail import DetailPane
from .scrubber import Scrubber
from .tree_model import LIVENESS_COL, WRITER_COL, DocumentTreeModel


class RecordingWindow(QMainWindow):
    """`loaded` once the pass has replayed the whole recording."""

    loaded = Signal()
    SLICE_S = 0.012  # replay work per turn of the event loop while the pass runs

    def __init__(self, path: str, preload_s: float = 0.5) -> None:
        super().__init__()
        self.path = path
        self.setWindowTitle(f"Runtimed Inspector — recording {path}")
        self.tt = TimeTravel(path)
        self.meta = self.tt.meta
        # a short recording is whole before the window shows; a long one goes on in slices
        self.tt.advance(preload_s)
        self.events = self.tt.events[:]
        self.mark_a: int | None = None
        self._follow = True  # show the pass's end until somebody picks an event
        self._setting = False

        self.model = DocumentTreeModel(self)
        self.tree = QTreeView(self)
        self.tree.setModel(self.model)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        hh = self.tree.header()
        hh.setStretchLastSection(False)
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)  # the values get the room
        for col, width in ((0, 160), (2, 96), (WRITER_COL, 90), (LIVENESS_COL, 84)):
            hh.resizeSection(col, width)
        self.tree.setColumnHidden(3, True)  # the object id: in the detail pane, not worth a column here
        self.detail = DetailPane(self)
        self.divergence = QLabel(self)
        self.divergence.setObjectName("divergence")
        self.divergence.setWordWrap(True)
        self.divergence.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.scrubber = Scrubber(self.events, self.meta.start_mono, self)
        self.events = self.scrubber.events  # one list, extended as the pass goes
        self.status = QStatusBar(self)
        self.setStatusBar(self.status)
        self.progress = QLabel(self)
        self.progress.setObjectName("replay-progress")
        self.status.addWidget(self.progress, 1)

        self.diff_button = QPushButton("Diff two points", self)
        self.diff_button.setToolTip("the first press marks this event; the second shows what changed since it")
        self.report_button = QPushButton("Report a bug…", self)
        self.redact = QCheckBox("Redact (no sources, outputs or strings)", self)
        self.redact.setChecked(True)
        buttons = QHBoxLayout()
        for w in (self.diff_button, self.report_button, self.redact):
            buttons.addWidget(w)
        buttons.addStretch(1)

        right = QSplitter(Qt.Orientation.Vertical, self)
        right.addWidget(self.detail)
        right.addWidget(self.divergence)
        panes = QSplitter(Qt.Orientation.Horizontal, self)
        panes.addWidget(self.tree)
        panes.addWidget(right)
        panes.setSizes([660, 440])
        body = QSplitter(Qt.Orientation.Vertical, self)
        body.addWidget(panes)
        body.addWidget(self.scrubber)
        body.setSizes([440, 260])
        central = QWidget(self)
        lay = QVBoxLayout(central)
        lay.addLayout(buttons)
        lay.addWidget(body, 1)
        self.setCentralWidget(central)
        self.resize(1100, 760)

        self.scrubber.seqChanged.connect(self.show_seq)
        self.tree.selectionModel().currentChanged.connect(lambda cur, _prev: self.detail.show_node(self.model.node(cur)))
        self.diff_button.clicked.connect(self._diff_clicked)
        self.report_button.clicked.connect(self._report_clicked)
        self.last_diff: dict[str, Any] | None = None
        self._pump = QTimer(self)
        self._pump.setInterval(0)
        self._pump.timeout.connect(self._advance)
        self._show_end()
        self._update_progress()
        if self.tt.done:
            QTimer.singleShot(0, self.loaded.emit)
        else:
            self._pump.start()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        self._pump.stop()
        self.tt.close()
        super().closeEvent(event)

    # -- the pass -----------------------------------------------------------------------------------

    @property
    def is_loaded(self) -> bool:
        return self.tt.done

    def _advance(self) -> None:
        done = self.tt.advance(self.SLICE_S)
        new = self.tt.events[len(self.events):]
        if new:
            self.scrubber.extend(new)
        self._update_progress()
        if done:
            self._pump.stop()
            if self._follow:
                self._show_end()
            self.loaded.emit()

    def _update_progress(self) -> None:
        tt = self.tt
        n = len(tt.replay)
        if tt.done:
            text = f"{n:,} records, {len(self.events):,} events; {tt.copies} restore points"
        else:
            text = f"replaying the recording: {100 * tt.progress:.0f} % ({tt.records:,} of {n:,} records)"
        self.progress.setText(text)

    def _show_end(self) -> None:
        if self.events:
            self._setting = True
            try:
                self.scrubber.select_seq(self.events[-1].seq)
            finally:
                self._setting = False

    # -- time travel -------------------------------------------------------------------------------

    def show_seq(self, seq: int) -> None:
        """The room as of event `seq`: tree, detail of the selected row, divergences."""
        if not self._setting:
            self._follow = False
        core = self.tt.seek_seq(seq)
        # no key-history findings here (this window has no history dock): their detectors would
        # first read the whole key history of a restored core, 225 ms at the end of 30 minutes
        snap = core.snapshot(taken_at=self.tt.wall_of(core.now or self.meta.start_mono), history=False)
        self.model.set_snapshot(snap)
        self.detail.show_node(self.model.node(self.tree.currentIndex()), force=True)
        divs = [d for d in snap.divergence if d.status != "pending"]
        pending = [d for d in snap.divergence if d.status == "pending"]
        lines = [f"{d.comm_id}  {d.model_name or '-'}  {d.kind}  [{d.severity}]  "
                 + ", ".join(k.key for k in d.keys) for d in divs]
        self.divergence.setText("<b>Divergences as of this event</b><br>"
                                + ("<br>".join(lines) if lines else "none")
                                + (f"<br>{len(pending)} pending" if pending else ""))

    # -- diff and report ---------------------------------------------------------------------------

    def _diff_clicked(self) -> None:
        if self.mark_a is None:
            self.mark_a = self.scrubber.seq
            self.diff_button.setText(f"Diff from event {self.mark_a} to…")
            return
        a, b = sorted((self.mark_a, self.scrubber.seq))
        self.mark_a = None
        self.diff_button.setText("Diff two points")
        self.show_diff(a, b)

    def show_diff(self, a: int, b: int) -> dict[str, Any]:
        from ..recording_diff import diff_points

        self.last_diff = diff_points(self.path, parse_at(str(a), self.meta), parse_at(str(b), self.meta))
        dlg = QDialog(self)
        dlg.setWindowTitle(f"What changed from event {a} to event {b}")
        text = QPlainTextEdit(dlg)
        text.setReadOnly(True)
        text.setPlainText(json.dumps(self.last_diff, indent=2, default=str))
        QVBoxLayout(dlg).addWidget(text)
        dlg.resize(700, 600)
        dlg.show()
        self.diff_dialog = dlg
        return self.last_diff

    def _report_clicked(self) -> None:
        out, _ = QFileDialog.getSaveFileName(self, "Save the bug report", "widget-sync-bug.zip", "Zip (*.zip)")
        if out:
            self.write_report(out)

    def write_report(self, out: str) -> dict[str, Any]:
        import msgspec

        from ..recording.report import build_report

        rp = Replay(self.path)
        core = rp.run()
        divs = ([msgspec.to_builtins(d) for d in core.divergence.divergences(include_pending=False, now=core.now)]
                if core.divergence is not None else [])
        snap = core.snapshot(taken_at=rp.wall_of(core.now or self.meta.start_mono)).to_json()
        return build_report(self.path, out, snapshot=snap, divergences=divs, redact=self.redact.isChecked())


def add_parser(subparsers: Any) -> None:
    from .. import cli

    p = subparsers.add_parser("open", help=cli.PLUGIN_HELP["open"])
    p.add_argument("recording", metavar="FILE")
    p.add_argument("--at", metavar="N", default=None, help="select this event first (a seq as `watch FILE` prints it)")
    p.add_argument("--screenshot", metavar="FILE", help="write a PNG of the window (at --quit-after)")
    p.add_argument("--quit-after", metavar="S", type=float, help="close the app after S seconds")
    p.set_defaults(func=run_recording_window)


def run_recording_window(args: argparse.Namespace) -> int:
    """`open FILE`: the window on a recording until it closes (or --quit-after)."""
    from PySide6.QtCore import QTimer

    from ..replay_driver import open_recording
    from .app import make_app, save_screenshot

    open_recording(args.recording).close()  # a bad file: one line, exit 12, before any window
    app = make_app(sys.argv[:1])
    window = RecordingWindow(args.recording)
    if args.at is not None:
        at = parse_at(args.at, window.meta)
        if at.seq is not None:
            seq = at.seq
            if window.is_loaded:
                window.scrubber.select_seq(seq)
            else:  # the event may not be replayed yet
                window.loaded.connect(lambda: window.scrubber.select_seq(seq))
    window.show()
    if args.quit_after is not None:
        def finish() -> None:
            if args.screenshot:
                save_screenshot(window, args.screenshot)
            window.close()
            app.quit()

        QTimer.singleShot(int(args.quit_after * 1000), finish)
    app.exec()
    return 0
