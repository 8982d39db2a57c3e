"""The window on a recording (`runtimed-inspector open FILE`): the room's tree, the detail of the
selected row and the divergences as of the event the scrubber selects, "Diff two points" and
"Report a bug" (the bundle, optionally redacted).

Each position is the recording replayed through the session core up to that event
(`inspector.replay_driver`): forward moves continue the replay, backward moves start over.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from ..replay_driver import Replay, parse_at
from .detail import DetailPane
from .scrubber import Scrubber
from .tree_model import DocumentTreeModel


class RecordingWindow(QMainWindow):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.setWindowTitle(f"Runtimed Inspector — recording {path}")
        full = Replay(path)
        self.meta = full.meta
        # one pass gives the timeline and, per record, the last event seq once it was applied
        self.table = [0]
        full.run(on_step=lambda _i, _rec: self.table.append(full.core.log._seq))
        self.events = [e for e in full.core.log.events() if e.kind != "frame"]
        self._replay: Replay | None = None
        self.mark_a: int | None = None

        self.model = DocumentTreeModel(self)
        self.tree = QTreeView(self)
        self.tree.setModel(self.model)
        self.tree.setUniformRowHeights(True)
        self.detail = DetailPane(self)
        self.divergence = QLabel(self)
        self.divergence.setObjectName("divergence")
        self.divergence.setWordWrap(True)
        self.divergence.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.scrubber = Scrubber(self.events, self.meta.start_mono, self)

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
        panes.setSizes([520, 480])
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
        if self.events:
            self.scrubber.select_seq(self.events[-1].seq)

    # -- time travel -------------------------------------------------------------------------------

    def show_seq(self, seq: int) -> None:
        """The room as of event `seq`: tree, detail of the selected row, divergences."""
        stop = bisect.bisect_right(self.table, seq)
        rp = self._replay
        if rp is None or rp.index > stop:
            rp = self._replay = Replay(self.path)  # backwards: start over
        core = rp.run_to(stop)
        snap = core.snapshot(taken_at=rp.wall_of(core.now or self.meta.start_mono))
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
            window.scrubber.select_seq(at.seq)
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
