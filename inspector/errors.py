"""Errors the CLI and GUI show, each with a one-line cause and a documented exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_DIVERGED = 1
EXIT_USAGE = 2
EXIT_NO_SOCKET = 3
EXIT_PERMISSION = 4
EXIT_NOT_RUNTIMED = 5
EXIT_PROTOCOL_VERSION = 6
EXIT_UNKNOWN_NOTEBOOK = 7
EXIT_BAD_FRAME = 8
EXIT_CLOSED = 9
EXIT_TIMEOUT = 10
EXIT_WOULD_LAUNCH = 11
EXIT_BAD_RECORDING = 12
EXIT_UNKNOWN = 13
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_DIVERGED: "check: something diverged",
    EXIT_USAGE: "bad command line",
    EXIT_NO_SOCKET: "no daemon socket at the path (missing, not a socket, or nothing listening)",
    EXIT_PERMISSION: "permission denied, or the socket belongs to another user",
    EXIT_NOT_RUNTIMED: "the socket does not speak the runtimed protocol",
    EXIT_PROTOCOL_VERSION: "the daemon speaks a protocol version this command cannot use",
    EXIT_UNKNOWN_NOTEBOOK: "no room with that notebook id",
    EXIT_BAD_FRAME: "malformed, oversized or unexpected data from the daemon",
    EXIT_CLOSED: "the daemon closed the connection",
    EXIT_TIMEOUT: "timed out",
    EXIT_WOULD_LAUNCH: "joining would make the daemon launch a kernel (pass --allow-kernel-launch)",
    EXIT_BAD_RECORDING: "the file is not a recording this version reads (or cannot be read)",
    EXIT_UNKNOWN: "check: nothing diverged, but a view could not speak for some comms (unknown) "
                  "or findings were still pending when the watch ended",
    EXIT_INTERRUPTED: "interrupted",
}


# Deepest nesting accepted in JSON, CBOR or an Automerge document from the daemon: widget
# states and metadata are a few levels deep; anything recursive over untrusted depth is bounded.
MAX_DEPTH = 100


class InspectorError(Exception):
    """A failure with a specific, user-facing cause."""

    exit_code = EXIT_BAD_FRAME

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class NoSocket(InspectorError):
    exit_code = EXIT_NO_SOCKET


class PermissionDenied(InspectorError):
    exit_code = EXIT_PERMISSION


class NotRuntimed(InspectorError):
    exit_code = EXIT_NOT_RUNTIMED


class ProtocolMismatch(InspectorError):
    exit_code = EXIT_PROTOCOL_VERSION

    def __init__(self, message: str, *, version: int | None = None, daemon_version: str | None = None) -> None:
        super().__init__(message)
        self.version = version
        self.daemon_version = daemon_version


class UnknownNotebook(InspectorError):
    exit_code = EXIT_UNKNOWN_NOTEBOOK


class BadFrame(InspectorError):
    exit_code = EXIT_BAD_FRAME


class BadRecording(InspectorError):
    """A recording file that cannot be opened (missing, not a recording, another format version)."""

    exit_code = EXIT_BAD_RECORDING


class BadContent(BadFrame):
    """Malformed content inside a well-formed frame (bad JSON, CBOR, a change, nesting too deep).

    The frame is recorded and skipped; the connection stays usable. `size` and `sha256` name the
    offending bytes so an event can point at them without holding them."""

    def __init__(self, message: str, *, data: bytes | None = None) -> None:
        import hashlib  # here, not at the top: every command imports this module, few raise this

        super().__init__(message)
        self.size = len(data) if data is not None else None
        self.sha256 = hashlib.sha256(data).hexdigest() if data is not None else None


class Closed(InspectorError):
    exit_code = EXIT_CLOSED


class Timeout(InspectorError):
    exit_code = EXIT_TIMEOUT


class WouldLaunchKernel(InspectorError):
    exit_code = EXIT_WOULD_LAUNCH
