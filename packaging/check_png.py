"""Check that a PNG is a real rendering, not a blank or tiny image (stdlib only).

usage: python check_png.py FILE [--min-width N] [--min-height N] [--min-colours N]
Exit 0 and print a one-line summary when it looks real, exit 1 with the reason otherwise.
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib
from pathlib import Path

CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # grey, RGB, grey+alpha, RGBA


def decode(path: Path) -> tuple[int, int, int, list[bytes]]:
    """Return width, height, bytes per pixel and unfiltered rows of an 8-bit PNG."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, header = 8, bytearray(), None
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    if header is None:
        raise ValueError("no IHDR chunk")
    width, height, depth, colour_type, _, _, interlace = header
    if depth != 8 or colour_type not in CHANNELS or interlace:
        raise ValueError(f"unsupported PNG layout {header}")
    bpp = CHANNELS[colour_type]
    stride = width * bpp
    raw = zlib.decompress(bytes(idat))
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 0xFF
            elif ftype == 2:
                line[x] = (line[x] + b) & 0xFF
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--min-width", type=int, default=320)
    parser.add_argument("--min-height", type=int, default=200)
    parser.add_argument("--min-colours", type=int, default=16)
    args = parser.parse_args(argv)
    try:
        width, height, bpp, rows = decode(args.file)
    except (OSError, ValueError, zlib.error) as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 1
    colours = {row[i : i + bpp] for row in rows[::2] for i in range(0, len(row), bpp * 2)}
    summary = f"{args.file}: {width}x{height}, {len(colours)} distinct colours (sampled)"
    if width < args.min_width or height < args.min_height:
        print(f"{summary}: smaller than {args.min_width}x{args.min_height}", file=sys.stderr)
        return 1
    if len(colours) < args.min_colours:
        print(f"{summary}: looks blank (fewer than {args.min_colours} colours)", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
