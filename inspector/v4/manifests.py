"""v4 output manifests (runtimed-v4 §11): inline content refs shown as they are, blob refs
resolved through the daemon's blob HTTP server (or its blob store on disk), else marked with
the reason they could not be.

A manifest is a Map inside the RuntimeStateDoc (or the CommsDoc for Output widgets); its
content values are `{inline: str}` or `{blob: <sha256>, size: int}`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from ..snapshot import OutputView

HEX64 = re.compile(r"^[0-9a-f]{64}$")
TEXT_CAP = 256 * 1024  # a resolved text blob is cut here; the tree is a viewer, not a store
BINARY_CAP = 2 * 1024 * 1024


def is_json_mime(mime: str) -> bool:
    return mime == "application/json" or mime.endswith("+json")


def is_text_mime(mime: str) -> bool:
    return (mime.startswith("text/") or is_json_mime(mime) or mime in ("application/javascript", "image/svg+xml")
            or mime.endswith("+xml"))


class BlobSource:
    """Fetches blobs by hash: HTTP `GET /blob/<hash>` first, then the on-disk store.

    Blobs are immutable, so hits are cached for good; failures are cached briefly so a
    snapshot of a room with many unreachable blobs costs one connection attempt, not one each.
    """

    def __init__(self, port: int | None = None, store_dir: str | None = None, host: str = "127.0.0.1",
                 timeout: float = 1.0, retry_after: float = 5.0) -> None:
        self.base = f"http://{host}:{port}" if port else None
        self.store_dir = store_dir
        self.timeout = timeout
        self.retry_after = retry_after
        self._hits: dict[str, tuple[bytes, str | None]] = {}
        self._server_down_until = 0.0
        self._server_error: str | None = None

    def get(self, digest: str) -> tuple[bytes | None, str | None, str | None]:
        """(content, media_type, error)."""
        if not HEX64.match(digest):
            return None, None, f"malformed blob hash {digest[:20]!r}"
        hit = self._hits.get(digest)
        if hit is not None:
            return hit[0], hit[1], None
        errors: list[str] = []
        if self.base is not None:
            if time.monotonic() < self._server_down_until:
                errors.append(self._server_error or "blob server unreachable")
            else:
                try:
                    with urllib.request.urlopen(f"{self.base}/blob/{digest}", timeout=self.timeout) as resp:
                        data = resp.read()
                        mt = resp.headers.get("content-type")
                    self._hits[digest] = (data, mt)
                    return data, mt, None
                except urllib.error.HTTPError as exc:
                    errors.append(f"blob server answered {exc.code}")
                except (OSError, urllib.error.URLError) as exc:
                    reason = getattr(exc, "reason", exc)
                    self._server_error = f"blob server {self.base} unreachable ({reason})"
                    self._server_down_until = time.monotonic() + self.retry_after
                    errors.append(self._server_error)
        else:
            errors.append("blob server port unknown")
        if self.store_dir:
            path = os.path.join(self.store_dir, digest[:2], digest[2:])
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
                mt = None
                try:
                    with open(path + ".meta") as fh:
                        mt = json.load(fh).get("media_type")
                except (OSError, ValueError):
                    pass
                self._hits[digest] = (data, mt)
                return data, mt, None
            except OSError:
                errors.append("not in the blob store on disk")
        return None, None, "; ".join(errors)


BlobGetter = Callable[[str], tuple[bytes | None, str | None, str | None]]


def _resolve_ref(ref: Any, mime: str, blobs: BlobGetter | None) -> tuple[Any, str | None]:
    """One content ref -> (shown value, error)."""
    if not isinstance(ref, dict):
        return ref, None  # already plain (older shapes, nbformat lists)
    if "inline" in ref:
        val = ref["inline"]
        if isinstance(val, str) and is_json_mime(mime):
            try:
                return json.loads(val), None
            except ValueError as exc:
                return val, f"{mime}: inline JSON does not parse: {exc}"
        return val, None
    digest = ref.get("blob")
    if not isinstance(digest, str):
        return ref, None
    size = ref.get("size")
    if blobs is None:
        return {"blob": digest, "size": size}, f"{mime}: blob {digest[:12]}… not resolved: no blob source"
    data, media_type, err = blobs(digest)
    if data is None:
        return {"blob": digest, "size": size}, f"{mime}: blob {digest[:12]}… not resolved: {err}"
    if is_text_mime(mime) or mime in ("text", "traceback", "rich"):
        text = data[:TEXT_CAP].decode("utf-8", errors="replace")
        if is_json_mime(mime) or mime in ("traceback", "rich"):
            try:
                return json.loads(text), None
            except ValueError:
                pass
        return text, None
    if len(data) > BINARY_CAP:
        return {"blob": digest, "size": len(data), "media_type": media_type or mime}, None
    return {"base64": base64.b64encode(data).decode("ascii"), "media_type": media_type or mime,
            "size": len(data)}, None


CONTENT_FIELDS = ("text", "traceback", "rich")


def output_view(manifest: Any, blobs: BlobGetter | None, output_id: str | None = None) -> OutputView:
    """An inline v4 manifest (a plain dict) -> OutputView with its content resolved."""
    if not isinstance(manifest, dict):
        return OutputView(ref=output_id or "?", error=f"manifest is a {type(manifest).__name__}, not a Map")
    ref = str(manifest.get("output_id") or output_id or "?")
    resolved: dict[str, Any] = {}
    errors: list[str] = []
    data = manifest.get("data")
    if isinstance(data, dict):
        for mime, cref in data.items():
            val, err = _resolve_ref(cref, mime, blobs)
            resolved[mime] = val
            if err:
                errors.append(err)
    for fld in CONTENT_FIELDS:
        if fld in manifest:
            val, err = _resolve_ref(manifest[fld], fld, blobs)
            resolved[fld] = val
            if err:
                errors.append(err)
    return OutputView(ref=ref, manifest=manifest, error="; ".join(errors) or None,
                      output_type=manifest.get("output_type") if isinstance(manifest.get("output_type"), str) else None,
                      resolved=resolved or None)
