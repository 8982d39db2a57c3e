"""Binary buffers and content references in widget state: where they sit, what they are.

Shapes (runtimed-v4 §10.3, upstream `output_prep.rs` / `runtime_agent.rs`, comm-semantics §2.4):

* v4 **content ref** `{blob, size, media_type}` (exactly these keys) at a buffer's path in
  the comms document: an ipywidgets binary buffer (`application/octet-stream`) or a large
  state value the kernel side externalised (`_esm` as `text/javascript`, `_css`, JSON). A
  frontend writes the same shape (its upload lands as a blob, its CommsDoc write under its own
  actor), so both are read alike; `author` says which side wrote the key.
* an output content ref `{blob, size}` inside an Output widget's `outputs` manifests.
* the later v2-era placeholder `{"$blob": "<sha256>"}`.
* v2 (seed era) **open-time buffers**: the doc state lacks the binary keys; the bytes came with
  the `comm_open` (`data.buffer_paths` names where they belong). `from_comm_message` reads them.

`resolve` fetches blob refs through the blob resolver and states size, sha256, the media type
sniffed from the bytes (PNG, JPEG, GIF, WebP, SVG) and whether the bytes hash to the ref.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from .blobs import HEX64, BlobError, BlobResolver
from .snapshot import CommView, Snapshot

HEX_DUMP_LIMIT = 4096


class BufferRef(msgspec.Struct, frozen=True):
    comm_id: str
    path: tuple[str, ...]  # into the comm's state
    origin: str  # content_ref | output_content | placeholder | open_buffer
    blob: str | None = None  # the hash the ref declares
    declared_size: int | None = None
    declared_media_type: str | None = None
    writer: str | None = None  # actor label of the state key holding it
    author: str | None = None  # kernel | frontend | None (unknown)
    size: int | None = None  # of the bytes, once known
    sha256: str | None = None
    media_type: str | None = None  # sniffed from the bytes
    served_media_type: str | None = None  # what the blob server said
    width: int | None = None  # images whose header says so (PNG, GIF)
    height: int | None = None
    hash_matches: bool | None = None  # sha256(bytes) == blob
    error: str | None = None

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        return (self.comm_id, self.path)


def author_of(writer: str | None) -> str | None:
    """Kernel side (runtime agent, kernel actor, the daemon) or a frontend client."""
    if not writer:
        return None
    if writer.startswith(("rt:kernel:", "runtime-agent:", "runtimed")):
        return "kernel"
    if writer.startswith("nteract:"):
        return None  # schema seed
    return "frontend"


def _content_ref(value: Any) -> tuple[str, str, int | None, str | None] | None:
    """(origin, hash, size, media type) when `value` is a blob reference."""
    if not isinstance(value, dict):
        return None
    blob = value.get("blob")
    if isinstance(blob, str) and set(value) == {"blob", "size", "media_type"}:
        size = value["size"] if isinstance(value["size"], int) else None
        mt = value["media_type"] if isinstance(value["media_type"], str) else None
        return "content_ref", blob, size, mt
    if isinstance(blob, str) and set(value) == {"blob", "size"}:
        return "output_content", blob, value["size"] if isinstance(value["size"], int) else None, None
    if set(value) == {"$blob"} and isinstance(value["$blob"], str):
        return "placeholder", value["$blob"], None, None
    return None


def _walk(state: Any) -> list[tuple[tuple[str, ...], tuple[str, str, int | None, str | None]]]:
    out = []
    stack: list[tuple[tuple[str, ...], Any]] = [((), state)]
    while stack:  # iterative, containers only: most state values are scalars
        path, value = stack.pop()
        if isinstance(value, dict):
            ref = _content_ref(value) if ("blob" in value or "$blob" in value) else None
            if ref is not None:
                out.append((path, ref))
            else:
                stack.extend(reversed([((*path, str(k)), v) for k, v in value.items() if isinstance(v, dict | list)]))
        elif isinstance(value, list):
            stack.extend(reversed([((*path, str(i)), v) for i, v in enumerate(value) if isinstance(v, dict | list)]))
    return out


def _comm_buffer_refs(c: CommView) -> tuple[BufferRef, ...]:
    if not isinstance(c.state, dict):
        return ()
    out = []
    for path, (origin, blob, size, mt) in _walk(c.state):
        writer = (c.key_writers.get(path[0]) if path else None) or c.writer
        err = None if HEX64.match(blob) else f"not a blob hash: {blob[:20]!r}"
        out.append(BufferRef(c.comm_id, path, origin, blob, size, mt, writer, author_of(writer), error=err))
    return tuple(out)


def find_buffer_refs(snapshot: Snapshot,
                     cache: dict[str, tuple[CommView, tuple[BufferRef, ...]]] | None = None) -> tuple[BufferRef, ...]:
    """Every blob reference in the comms' state, in comm order (not yet resolved). `cache`
    (kept by the caller across snapshots) skips comms whose view object did not change."""
    out: list[BufferRef] = []
    for c in snapshot.comms:
        hit = cache.get(c.comm_id) if cache is not None else None
        if hit is None or hit[0] is not c:
            hit = (c, _comm_buffer_refs(c))
            if cache is not None:
                cache[c.comm_id] = hit
        out.extend(hit[1])
    if cache is not None and len(cache) > len(snapshot.comms) + 64:
        keep = {c.comm_id for c in snapshot.comms}
        for gone in [k for k in cache if k not in keep]:
            del cache[gone]
    return tuple(out)


def from_comm_message(comm_id: str, content: dict[str, Any], buffers: Sequence[bytes]) -> tuple[BufferRef, ...]:
    """The binary buffers of one Jupyter comm message (v2 `comm_open`/`update`, or a kernel
    tap's), paired with `data.buffer_paths`; a buffer without a path keeps its index."""
    data = content.get("data") if isinstance(content.get("data"), dict) else {}
    paths = data.get("buffer_paths")
    if not isinstance(paths, list):
        state = data.get("state") if isinstance(data.get("state"), dict) else {}
        paths = state.get("buffer_paths") if isinstance(state.get("buffer_paths"), list) else []
    out = []
    for i, raw in enumerate(buffers):
        p = paths[i] if i < len(paths) and isinstance(paths[i], list) else None
        path = tuple(str(x) for x in p) if p else (f"<buffer {i}>",)
        out.append(describe(BufferRef(comm_id, path, "open_buffer", author="kernel"), bytes(raw)))
    return tuple(out)


# --------------------------------------------------------------------------- bytes


def sniff_media_type(data: bytes) -> str | None:
    """Image types by their magic bytes; None when nothing matches."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (head.startswith((b"<?xml", b"<!--", b"<!doctype svg")) and b"<svg" in head):
        return "image/svg+xml"
    return None


def image_size(data: bytes, media_type: str | None) -> tuple[int | None, int | None]:
    if media_type == "image/png" and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if media_type == "image/gif" and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    return None, None


def describe(ref: BufferRef, data: bytes, served_media_type: str | None = None) -> BufferRef:
    """`ref` with the facts of its bytes."""
    digest = hashlib.sha256(data).hexdigest()
    mt = sniff_media_type(data)
    w, h = image_size(data, mt)
    matches = None if ref.blob is None or ref.origin == "open_buffer" else digest == ref.blob
    error = ref.error
    if matches is False and error is None and ref.blob:
        error = f"bytes hash to {digest[:12]}…, not the referenced {ref.blob[:12]}…"
    return msgspec.structs.replace(ref, size=len(data), sha256=digest, media_type=mt, served_media_type=served_media_type,
                                   width=w, height=h, hash_matches=matches, error=error)


def hex_dump(data: bytes, offset: int = 0, limit: int = HEX_DUMP_LIMIT, width: int = 16) -> str:
    """`xxd`-style lines for at most `limit` bytes from `offset`, and a line for what is left."""
    offset = max(0, offset)
    chunk = data[offset:offset + max(0, limit)]
    lines = []
    for i in range(0, len(chunk), width):
        row = chunk[i:i + width]
        hexes = " ".join(f"{b:02x}" for b in row)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{offset + i:08x}  {hexes:<{width * 3 - 1}}  {text}")
    rest = len(data) - offset - len(chunk)
    if rest > 0:
        lines.append(f"… {rest} more byte{'s' if rest != 1 else ''}")
    return "\n".join(lines)


async def resolve(refs: Iterable[BufferRef], resolver: BlobResolver) -> tuple[tuple[BufferRef, bytes | None], ...]:
    """Fetch every blob ref through the resolver: (described ref, bytes or None on failure)."""
    out: list[tuple[BufferRef, bytes | None]] = []
    for ref in refs:
        if ref.blob is None or ref.error is not None:
            out.append((ref, None))
            continue
        try:
            blob = await resolver.fetch_content(ref.blob)
        except BlobError as exc:
            out.append((msgspec.structs.replace(ref, error=str(exc)), None))
            continue
        # the resolver decodes the seed era's base64 image blobs; the hash is of what is stored
        served = blob.content_type.removesuffix(";base64-decoded")
        described = describe(ref, blob.data, served)
        if blob.content_type.endswith(";base64-decoded") and described.hash_matches is False:
            described = msgspec.structs.replace(described, hash_matches=None, error=None)
        out.append((described, blob.data))
    return tuple(out)
