"""The window on a recording (`open FILE`), offscreen: the scrubber and the timeline move
together, the tree and the divergence pane show the room as of the selected event, "Diff two
points" and "Report a bug" work from the window. The recording is of the testbed (real kernel)
with the doc-drop-update fault, recorded by the inspector's session option."""

from __future__ import annotations

import asyncio
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtTest import QAbstractItemModelTester
from test_replay_testbed import SLIDER, recorded

from inspector.ui.recording_window import RecordingWindow

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def recording(tmp_path_factory: Any) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("rec") / "s.rtirec"

    async def main() -> dict[str, Any]:
        async with recorded("doc-drop-update:IntSliderModel") as r:
            await r.tb.run_cell(r.nid, "# SOURCE_SECRET_77\n" + SLIDER)
            await r.settle()
            slider = {c.model_name: c.comm_id for c in r.tb.comm_state(r.nid)}["IntSliderModel"]
            await r.tb.run_cell(r.nid, "s.value = 7")
            await r.settle()
            r.session.tick(time.monotonic())
            shutil.copy(r.path, out)
            return {"path": str(out), "slider": slider}

    return asyncio.run(main())


def test_scrubber_travels_in_time(qtbot: Any, recording: dict[str, Any], tmp_path: Path) -> None:
    w = RecordingWindow(recording["path"])
    qtbot.addWidget(w)
    QAbstractItemModelTester(w.model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    w.show()
    slider = recording["slider"]
    settled = [e for e in w.events if e.kind == "divergence"
               and any(d["status"] != "pending" for d in e.data["divergences"])]
    assert settled
    # at the end (the window opens there) the slider diverges
    assert slider in w.divergence.text()
    assert w.model.snapshot is not None and slider in {c.comm_id for c in w.model.snapshot.comms}
    # back before the slider existed: the tree lacks it and nothing diverges
    first = min(e.seq for e in w.events if slider in f"{e.target} {e.data}")
    with qtbot.waitSignal(w.scrubber.seqChanged):
        w.scrubber.select_seq(first - 1)
    assert slider not in {c.comm_id for c in w.model.snapshot.comms}
    assert "none" in w.divergence.text()
    # the timeline and the scrubber in step: selecting a timeline row moves the slider there
    row = next(i for i, e in enumerate(w.events) if e.seq == settled[0].seq)
    with qtbot.waitSignal(w.scrubber.seqChanged) as sig:
        w.scrubber.select_row(row)
    assert sig.args == [settled[0].seq] and w.scrubber.slider.value() == row
    assert slider in w.divergence.text()
    # and the slider moves the timeline selection
    w.scrubber.slider.setValue(0)
    assert w.scrubber.current_row() == 0
    # diff two points: the cell run in between, with its writer
    w.scrubber.select_seq(first - 1)
    w._diff_clicked()
    w.scrubber.select_seq(w.events[-1].seq)
    w._diff_clicked()
    diff = w.last_diff
    assert diff is not None
    assert slider in diff["comms"] and diff["comms"][slider]["change"] == "added"
    assert any(c["writers"] for c in diff["cells"].values())
    # report a bug, redacted: no source text in the bundle
    out = tmp_path / "bug.zip"
    w.redact.setChecked(True)
    w.write_report(str(out))
    with zipfile.ZipFile(out) as z:
        assert b"SOURCE_SECRET_77" not in b"".join(z.read(n) for n in z.namelist())
