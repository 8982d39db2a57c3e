"""Malformed data from the daemon is said, not only logged: a broadcast that is not valid JSON
(fed to the core on top of the real 2.9.0 join) lands in the snapshot's `warnings` and in the
one line `check` and `snapshot` print on stderr."""

from __future__ import annotations

from test_v4_session_replay import JOINED_AT, ROOM, interactive_status, join

from inspector import events as ev
from inspector.divergence import DivergenceOptions, SettleConfig
from inspector.protocol.framing import FrameType
from inspector.session_core import SessionConfig, SessionCore


def test_an_invalid_json_broadcast_is_a_snapshot_warning_and_one_stderr_line() -> None:
    core = SessionCore(SessionConfig("replay.sock", ROOM, resolve_blobs=False,
                                     divergence=DivergenceOptions(SettleConfig())))
    drv, _rest = join(core)
    drv.feed(interactive_status(), JOINED_AT)
    assert core.malformed_line() is None
    before = core.snapshot().warnings
    assert not any("malformed" in w for w in before)
    for i in range(3):
        drv.feed(bytes([FrameType.BROADCAST]) + b'{"event": "comm", "content": {' + str(i).encode(), JOINED_AT + 1 + i)
    snap = core.snapshot()
    bad = [w for w in snap.warnings if w.startswith("malformed data from the daemon: broadcast with")]
    assert len(bad) == 3 and all("kept, ignored" in w for w in bad)
    line = core.malformed_line()
    assert line is not None and "\n" not in line
    assert line.startswith("warning: malformed data from the daemon, kept and ignored: broadcast with")
    assert line.endswith("(and 2 more)")
    # still an error event in the log, as before
    assert sum(1 for e in core.log.events() if e.kind == ev.ERROR and "broadcast with" in e.summary) == 3


def test_the_warnings_stay_bounded() -> None:
    core = SessionCore(SessionConfig("replay.sock", ROOM, resolve_blobs=False))
    drv, _rest = join(core)
    for i in range(50):
        drv.feed(bytes([FrameType.BROADCAST]) + b"\xff" + str(i).encode(), JOINED_AT + i * 0.01)
    warnings = [w for w in core.snapshot().warnings if w.startswith("malformed data")]
    assert len(warnings) == 21 and warnings[-1] == "malformed data from the daemon: 30 more"
