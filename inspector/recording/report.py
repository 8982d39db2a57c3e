"""The bug-report bundle (`runtimed-inspector report`): one zip with the recording, the final
snapshot, the versions of everything involved and a generated summary of the divergences."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

from .. import __version__
from .recording_file import RecordingReader
from .redact import Redactor, redact_file

PACKAGES = ("automerge", "msgspec", "cbor2", "jupyter_client", "pyzmq", "ipykernel", "ipywidgets",
            "PySide6-Essentials", "qasync")


def versions(meta: Any = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The inspector's, the daemon's (from the recording), Python's, the platform's and the
    installed libraries' versions (read from package metadata, nothing imported)."""
    libs: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            libs[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            libs[name] = None
    out: dict[str, Any] = {
        "inspector": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": libs,
    }
    if meta is not None:
        out["recorded_by"] = meta.inspector_version
        out["daemon"] = {"version": meta.daemon_version, "protocol": meta.protocol,
                         "protocol_version": meta.protocol_version}
    out.update(extra or {})
    return out


def summarize(divergences: Iterable[Mapping[str, Any]]) -> str:
    """A short text on what diverged: one line per comm and kind, with the keys."""
    rows = list(divergences)
    if not rows:
        return "No divergence was reported.\n"
    lines = [f"{len(rows)} divergence{'s' if len(rows) != 1 else ''} reported:", ""]
    for d in rows:
        keys = [k.get("key") if isinstance(k, Mapping) else str(k) for k in d.get("keys") or ()]
        since = d.get("since_ms")
        line = f"- comm {d.get('comm_id')}: {d.get('kind')}"
        if keys:
            line += f" on {', '.join(str(k) for k in keys)}"
        if isinstance(since, int | float):
            line += f" (for {since / 1000:.1f} s)"
        if d.get("detail"):
            line += f": {d['detail']}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def build_report(recording: str, out_zip: str, *, snapshot: Mapping[str, Any] | None = None,
                 divergences: Iterable[Mapping[str, Any]] = (), redact: bool = False,
                 extra_versions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the bundle; returns its manifest. With `redact`, the recording, the snapshot and
    the divergence details go through one `Redactor` (same value, same hash across the files)."""
    with RecordingReader(recording) as reader:
        meta, records, tail = reader.meta, len(reader), reader.tail
    redactor = Redactor() if redact else None
    divs = [dict(d) for d in divergences]
    snap = dict(snapshot) if snapshot is not None else None
    if redactor is not None:
        divs = [redactor.value(d) for d in divs]
        snap = redactor.value(snap) if snap is not None else None
    with tempfile.TemporaryDirectory(prefix="rti-report-") as tmp:
        rec_path = recording
        if redactor is not None:
            rec_path = os.path.join(tmp, "recording.rtirec")
            redact_file(recording, rec_path, redactor)
        files: dict[str, bytes] = {}
        with open(rec_path, "rb") as fh:
            files["recording.rtirec"] = fh.read()
        if snap is not None:
            files["snapshot.json"] = json.dumps(snap, indent=2, sort_keys=True).encode()
        files["versions.json"] = json.dumps(versions(meta, extra_versions), indent=2).encode()
        files["summary.txt"] = summarize(divs).encode()
        files["divergences.json"] = json.dumps(divs, indent=2).encode()
        manifest = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "redacted": redact,
            "notebook_id": meta.notebook_id,
            "recording": {"records": records, "tail": str(tail) if tail else None},
            "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                      for name, data in files.items()},
        }
        with zipfile.ZipFile(out_zip, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("manifest.json", json.dumps(manifest, indent=2))
            for name, data in files.items():
                z.writestr(name, data)
    return manifest
