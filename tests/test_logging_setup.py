"""Logging goes to a rotating file in the user log dir; -v/-vv turn up stderr."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from inspector.logging_setup import LOG_DIR_ENV, LOG_FILE_NAME, setup_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    logging.captureWarnings(False)


def _flush() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


def test_default_keeps_stderr_quiet_but_file_records_info(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(LOG_DIR_ENV, str(tmp_path / "logs"))
    path = setup_logging(0)
    assert path == tmp_path / "logs" / LOG_FILE_NAME

    log = logging.getLogger("inspector.test")
    log.debug("debug-line")
    log.info("info-line")
    log.warning("warning-line")
    _flush()

    err = capsys.readouterr().err
    assert "warning-line" in err
    assert "info-line" not in err and "debug-line" not in err

    text = path.read_text(encoding="utf-8")
    assert "starting" in text  # the startup banner names version and pid
    assert "info-line" in text and "warning-line" in text
    assert "debug-line" not in text


@pytest.mark.parametrize(
    ("verbosity", "stderr_has_info", "stderr_has_debug", "file_has_debug"),
    [(1, True, False, False), (2, True, True, True)],
)
def test_verbose_flags_raise_detail(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    verbosity: int,
    stderr_has_info: bool,
    stderr_has_debug: bool,
    file_has_debug: bool,
) -> None:
    monkeypatch.setenv(LOG_DIR_ENV, str(tmp_path))
    path = setup_logging(verbosity)
    log = logging.getLogger("inspector.test")
    log.info("info-line")
    log.debug("debug-line")
    _flush()

    err = capsys.readouterr().err
    assert ("info-line" in err) is stderr_has_info
    assert ("debug-line" in err) is stderr_has_debug
    assert ("debug-line" in path.read_text(encoding="utf-8")) is file_has_debug


def test_calling_twice_does_not_duplicate_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(LOG_DIR_ENV, str(tmp_path))
    setup_logging(0)
    path = setup_logging(0)
    logging.getLogger("inspector.test").warning("once-only")
    _flush()
    assert capsys.readouterr().err.count("once-only") == 1
    assert path.read_text(encoding="utf-8").count("once-only") == 1


def test_platform_user_log_dir_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv(LOG_DIR_ENV, raising=False)
    # platformdirs honours XDG_STATE_HOME on Linux; elsewhere compare with what it reports.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = setup_logging(0)
    assert path.parent == Path(platformdirs.user_log_dir("runtimed-inspector"))
    assert path.is_file()


def test_unwritable_override_falls_back_instead_of_crashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log dir should be", encoding="utf-8")
    monkeypatch.setenv(LOG_DIR_ENV, str(blocker / "logs"))
    path = setup_logging(0)
    logging.getLogger("inspector.test").warning("still-logged")
    _flush()
    assert "still-logged" in path.read_text(encoding="utf-8")
