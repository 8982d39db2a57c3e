"""Process-wide logging: a rotating file in the user log directory plus stderr.

The file always gets INFO (DEBUG with -vv) so a user reporting a problem has
something to attach even when the terminal showed nothing; stderr stays quiet
(WARNING) unless asked for more with -v / -vv.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import tempfile
from pathlib import Path

import platformdirs

from inspector import APP_NAME, __version__

LOG_DIR_ENV = "RUNTIMED_INSPECTOR_LOG_DIR"
LOG_FILE_NAME = "runtimed-inspector.log"
MAX_BYTES = 2 * 1024 * 1024
BACKUP_COUNT = 3

FILE_FORMAT = "%(asctime)s %(process)d %(levelname)-7s %(name)s: %(message)s"
STDERR_FORMAT = "%(levelname)s %(name)s: %(message)s"

# Marks the handlers installed here so a second call replaces them instead of
# stacking duplicates (tests and the GUI may call setup_logging more than once).
_OWNED = "_runtimed_inspector_handler"


def default_log_dir() -> Path:
    """The log directory: $RUNTIMED_INSPECTOR_LOG_DIR, else the platform's user log dir."""
    override = os.environ.get(LOG_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_log_dir(APP_NAME))


def stderr_level(verbosity: int) -> int:
    """Map the count of -v flags to the stderr level (negative means quieter)."""
    if verbosity < 0:
        return logging.ERROR
    if verbosity == 0:
        return logging.WARNING
    if verbosity == 1:
        return logging.INFO
    return logging.DEBUG


def _writable_dir(preferred: Path) -> Path:
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        probe = preferred / LOG_FILE_NAME
        with open(probe, "a", encoding="utf-8"):
            pass
        return preferred
    except OSError:
        # A read-only home or a bad override must not stop the tool from running.
        fallback = Path(tempfile.gettempdir()) / f"{APP_NAME}-logs"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def setup_logging(verbosity: int = 0) -> Path:
    """Configure the root logger and return the path of the log file.

    verbosity 0: stderr WARNING, file INFO; 1 (-v): stderr INFO; 2+ (-vv): DEBUG on both.
    Safe to call again: the handlers from an earlier call are replaced.
    """
    console_level = stderr_level(verbosity)
    file_level = logging.DEBUG if verbosity >= 2 else logging.INFO

    directory = _writable_dir(default_log_dir())
    path = directory / LOG_FILE_NAME

    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OWNED, False):
            root.removeHandler(handler)
            handler.close()

    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8"
    )
    file_handler.setLevel(file_level)
    file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
    setattr(file_handler, _OWNED, True)

    console = logging.StreamHandler(sys.stderr)
    console.setLevel(console_level)
    console.setFormatter(logging.Formatter(STDERR_FORMAT))
    setattr(console, _OWNED, True)

    root.addHandler(file_handler)
    root.addHandler(console)
    root.setLevel(min(file_level, console_level))
    logging.captureWarnings(True)

    logging.getLogger("inspector").info(
        "%s %s starting (pid %d, python %s, argv %s)",
        APP_NAME,
        __version__,
        os.getpid(),
        sys.version.split()[0],
        sys.argv,
    )
    return path
