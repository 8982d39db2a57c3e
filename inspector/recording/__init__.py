"""The flight recorder: recordings of a session (format, writer, reader), the in-memory ring,
redaction for bug reports, the report bundle and the Wireshark export."""

from .recorder import Recorder
from .recording_file import RecordingError, RecordingReader, RecordingWriter, Tail
from .records import Checkpoint, Connection, DocState, Frame, Kernel, Manifest, Mark, Meta, Record, Timer
from .replicas import Replicas, doc_state
from .ring import RecordingRing
from .seek import Seeker

__all__ = [
    "Checkpoint", "Connection", "DocState", "Frame", "Kernel", "Manifest", "Mark", "Meta", "Record", "Recorder",
    "RecordingError", "RecordingReader", "RecordingRing", "RecordingWriter", "Replicas", "Seeker", "Tail", "Timer", "doc_state",
]
