"""Resolving output manifests and blobs through the daemon's blob HTTP server (loopback).

A tiny HTTP/1.1 GET over asyncio streams: the server is on 127.0.0.1 and serves
`/blob/<sha256>` only. Results are cached by hash (content-addressed, so never stale).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .snapshot import OutputView

HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_BLOB = 100 * 1024 * 1024
INLINE_PREVIEW = 256 * 1024


class BlobError(Exception):
    pass


@dataclass(frozen=True)
class Blob:
    hash: str
    content_type: str
    data: bytes


async def http_get_blob(port: int, digest: str, timeout: float = 5.0, host: str = "127.0.0.1") -> Blob:
    if not HEX64.match(digest):
        raise BlobError(f"not a blob hash: {digest!r}")
    # asyncio.timeout, not wait_for(coroutine): a loop stopping under us (the window closing)
    # then raises before a coroutine is made, instead of leaving one never awaited
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        raise BlobError(f"blob server 127.0.0.1:{port} unreachable: {exc}") from None
    try:
        writer.write(f"GET /blob/{digest} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if status != 200:
            raise BlobError(f"blob {digest[:12]}… answered HTTP {status}")
        length = int(headers.get("content-length", "-1"))
        if length > MAX_BLOB:
            raise BlobError(f"blob {digest[:12]}… is {length} bytes, over the 100 MiB limit")
        async with asyncio.timeout(timeout):
            body = await (reader.readexactly(length) if length >= 0 else reader.read(MAX_BLOB))
        return Blob(digest, headers.get("content-type", "application/octet-stream"), body)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError, ValueError) as exc:
        raise BlobError(f"blob {digest[:12]}…: {type(exc).__name__}: {exc}") from None
    finally:
        with contextlib.suppress(RuntimeError):  # the loop is closed (the app quit): it took the socket
            writer.close()


def _looks_base64(data: bytes) -> bool:
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def content_of(ref: Any, mime: str | None = None) -> dict[str, Any]:
    """Describe one ContentRef: inline text, or a blob reference still to fetch."""
    if isinstance(ref, dict) and "inline" in ref:
        text = ref["inline"]
        out: dict[str, Any] = {"inline": text if isinstance(text, str) else json.dumps(text)}
        if mime and (mime.endswith("+json") or mime == "application/json") and isinstance(text, str):
            try:
                out["json"] = json.loads(text)
            except ValueError:
                out["json_error"] = "inline JSON does not parse"
        return out
    if isinstance(ref, dict) and "blob" in ref:
        return {"blob": ref.get("blob"), "size": ref.get("size")}
    if isinstance(ref, str):  # nbformat-style raw value
        return {"inline": ref}
    return {"value": ref}


def manifest_contents(manifest: dict[str, Any]) -> dict[str, Any]:
    """Every content-bearing field of a manifest, by MIME type or field name."""
    out: dict[str, Any] = {}
    data = manifest.get("data")
    if isinstance(data, dict):
        for mime, ref in data.items():
            out[mime] = content_of(ref, mime)
    for fld in ("text", "traceback"):
        if fld in manifest:
            out[fld] = content_of(manifest[fld], "application/json" if fld == "traceback" else None)
    return out


class BlobResolver:
    """Fetch-once cache of manifests by hash; notifies when one arrives."""

    def __init__(self, port: int | None, on_resolved: Callable[[set[str]], None] | None = None) -> None:
        self.port = port
        self.on_resolved = on_resolved
        self.manifests: dict[str, OutputView] = {}
        self._pending: dict[str, asyncio.Task[None]] = {}
        self.fetches = 0
        self.failures = 0

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def lookup(self, ref: str) -> OutputView:
        """OutputView for a cell `outputs` entry; schedules a fetch for an unseen hash."""
        if not HEX64.match(ref):
            return raw_output(ref)
        hit = self.manifests.get(ref)
        if hit is not None:
            return hit
        if self.port is None:
            return OutputView(ref=ref, error="blob server port unknown (daemon did not report one)")
        if ref not in self._pending:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return OutputView(ref=ref, error="not fetched (no event loop)")
            self._pending[ref] = loop.create_task(self._fetch(ref))
        return OutputView(ref=ref, error="fetching from the blob server")

    async def _fetch(self, ref: str) -> None:
        self.fetches += 1
        try:
            blob = await http_get_blob(self.port or 0, ref)
            manifest = json.loads(blob.data)
            if not isinstance(manifest, dict):
                raise BlobError("manifest is not a JSON object")
            view = OutputView(ref=ref, manifest=manifest, output_type=manifest.get("output_type"),
                              resolved=manifest_contents(manifest))
        except (BlobError, ValueError) as exc:
            self.failures += 1
            view = OutputView(ref=ref, error=str(exc))
        except RuntimeError as exc:  # the loop stopped under us (app closing): fetch again next time
            self._pending.pop(ref, None)
            view = OutputView(ref=ref, error=f"fetch interrupted: {exc}")
            return
        self.manifests[ref] = view
        self._pending.pop(ref, None)
        if self.on_resolved:
            self.on_resolved({ref})

    async def fetch_content(self, digest: str) -> Blob:
        """A content blob on demand (detail pane); base64 text blobs of the v2 era are decoded."""
        if self.port is None:
            raise BlobError("blob server port unknown")
        blob = await http_get_blob(self.port, digest)
        if blob.content_type.startswith("image/") and not blob.content_type.endswith("+xml") \
                and _looks_base64(blob.data.strip()):
            return Blob(blob.hash, blob.content_type + ";base64-decoded", base64.b64decode(blob.data.strip()))
        return blob

    async def drain(self, timeout: float = 5.0) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending.values()), timeout=timeout)


def raw_output(ref: str) -> OutputView:
    try:
        raw = json.loads(ref)
    except ValueError as exc:
        return OutputView(ref="raw", error=f"neither a manifest hash nor JSON: {exc}")
    if not isinstance(raw, dict):
        return OutputView(ref="raw", error="raw output is not a JSON object")
    return OutputView(ref="raw", manifest=raw, output_type=raw.get("output_type"), resolved=manifest_contents(raw))
