"""The flight recorder: recordings of a session (format, writer, reader), the in-memory ring,
redaction for bug reports, the report bundle and the Wireshark export."""

from .recorder import Recorder, doc_state
from .recording_file import RecordingError, RecordingReader, RecordingWriter, Tail
from .records import Checkpoint, Connection, DocState, Frame, Kernel, Mark, Meta, Record, Timer
from .ring import RecordingRing

__all__ = [
    "Checkpoint", "Connection", "DocState", "Frame", "Kernel", "Mark", "Meta", "Record", "Recorder",
    "RecordingError", "RecordingReader", "RecordingRing", "RecordingWriter", "Tail", "Timer", "doc_state",
]
