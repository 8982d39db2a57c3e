"""Content-addressed blob store, output manifests and the loopback HTTP blob server.

Layout and HTTP rules follow the daemon: `<dir>/<hash[0:2]>/<hash[2:]>` plus a `.meta`
sidecar; `GET /blob/<64 hex>` and `GET /health` only, 404 for anything else, 405 for any
method but GET.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import tempfile
from typing import Any

log = logging.getLogger("inspector.testbed.blobs")

MANIFEST_MEDIA_TYPE = "application/x-jupyter-output+json"
INLINE_LIMIT = 8192  # ContentRef is inline below this many UTF-8 bytes
BLOB_MAX = 100 * 1024 * 1024
_HASH_RE = re.compile(r"^[0-9a-fA-F]{64}$")


class BlobStore:
    def __init__(self, root: str | None = None) -> None:
        self.owned = root is None
        self.root = root or tempfile.mkdtemp(prefix="testbed-blobs-")
        os.makedirs(self.root, exist_ok=True)

    def _path(self, digest: str) -> str:
        return os.path.join(self.root, digest[:2], digest[2:])

    def put(self, data: bytes, media_type: str) -> str:
        if len(data) > BLOB_MAX:
            raise ValueError(f"blob too large: {len(data)} bytes")
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            # atomic: temp file + rename, as the daemon writes
            for target, payload in (
                (path + ".meta", json.dumps({
                    "media_type": media_type,
                    "size": len(data),
                    "created_at": _dt.datetime.now(_dt.UTC).isoformat().replace("+00:00", "Z"),
                }).encode()),
                (path, data),
            ):
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
                with os.fdopen(fd, "wb") as fh:
                    fh.write(payload)
                os.replace(tmp, target)
        return digest

    def get(self, digest: str) -> bytes | None:
        if not _HASH_RE.match(digest):
            return None
        try:
            with open(self._path(digest.lower()), "rb") as fh:
                return fh.read()
        except OSError:
            return None

    def media_type(self, digest: str) -> str:
        try:
            with open(self._path(digest.lower()) + ".meta", "rb") as fh:
                return str(json.load(fh).get("media_type") or "application/octet-stream")
        except (OSError, ValueError):
            return "application/octet-stream"

    def get_json(self, digest: str) -> Any:
        data = self.get(digest)
        return None if data is None else json.loads(data)

    # -- output manifests (wire-protocol §9.6) ---------------------------------------------

    def content_ref(self, text: str, media_type: str) -> dict[str, Any]:
        raw = text.encode("utf-8")
        if len(raw) < INLINE_LIMIT:
            return {"inline": text}
        return {"blob": self.put(raw, media_type), "size": len(raw)}

    def create_manifest(self, output: dict[str, Any]) -> dict[str, Any]:
        """nbformat output dict -> manifest dict (MIME values stored as strings)."""
        otype = output.get("output_type")
        manifest: dict[str, Any] = {"output_type": otype}
        if otype in ("display_data", "execute_result"):
            data = {}
            for mime, value in (output.get("data") or {}).items():
                # strings stay; anything else (objects, nbformat line lists) becomes JSON text
                text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
                data[mime] = self.content_ref(text, mime)
            manifest["data"] = data
            if output.get("metadata"):
                manifest["metadata"] = output["metadata"]
            if otype == "execute_result":
                manifest["execution_count"] = output.get("execution_count")
            display_id = (output.get("transient") or {}).get("display_id")
            if display_id:
                manifest["transient"] = {"display_id": display_id}
        elif otype == "stream":
            text = output.get("text", "")
            if isinstance(text, list):
                text = "".join(text)
            manifest["name"] = output.get("name", "stdout")
            manifest["text"] = self.content_ref(text, "text/plain")
        elif otype == "error":
            manifest["ename"] = output.get("ename", "")
            manifest["evalue"] = output.get("evalue", "")
            manifest["traceback"] = self.content_ref(json.dumps(output.get("traceback", [])), "application/json")
        else:
            raise ValueError(f"unknown output_type {otype!r}")
        return manifest

    def store_manifest(self, output: dict[str, Any]) -> str:
        """Store one output's manifest; return the hash (or the raw JSON on failure, as the daemon)."""
        try:
            manifest = self.create_manifest(output)
            return self.put(json.dumps(manifest, separators=(",", ":")).encode(), MANIFEST_MEDIA_TYPE)
        except (ValueError, OSError, TypeError) as exc:
            log.warning("manifest creation failed (%s); storing raw output JSON", exc)
            return json.dumps(output, separators=(",", ":"))


class BlobServer:
    """HTTP/1.1 on 127.0.0.1 with asyncio streams; one request per connection."""

    def __init__(self, store: BlobStore, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = store
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 10)
            while True:  # headers (ignored)
                line = await asyncio.wait_for(reader.readline(), 10)
                if line in (b"\r\n", b"\n", b""):
                    break
            parts = request_line.decode("latin-1").split()
            if len(parts) < 2:
                await self._respond(writer, 400, b"Bad Request", "text/plain")
                return
            method, target = parts[0], parts[1].split("?", 1)[0]
            if method != "GET":
                await self._respond(writer, 405, b"Method Not Allowed", "text/plain")
            elif target == "/health":
                await self._respond(writer, 200, b"OK", "text/plain")
            elif target.startswith("/blob/"):
                digest = target[len("/blob/"):]
                data = self.store.get(digest) if _HASH_RE.match(digest) else None
                if data is None:
                    await self._respond(writer, 404, b"Not Found", "text/plain")
                else:
                    await self._respond(writer, 200, data, self.store.media_type(digest), {
                        "Cache-Control": "public, max-age=31536000, immutable",
                        "Access-Control-Allow-Origin": "*",
                        "X-Content-Type-Options": "nosniff",
                    })
            else:
                await self._respond(writer, 404, b"Not Found", "text/plain")
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str,
                       extra: dict[str, str] | None = None) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}[status]
        headers = {"Content-Type": ctype, "Content-Length": str(len(body)), "Connection": "close", **(extra or {})}
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
