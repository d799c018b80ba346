"""Tiny but real files for generated images and videos, built from the task id. Pure.

Clients download the URLs that task polling returns (§2.3, ``b64_json`` conversion), so the bytes
must be genuine enough to sniff: a valid PNG (signature, IHDR, IDAT, IEND with correct CRCs) and
an MP4 that starts with a well-formed ``ftyp`` box.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_SIDE = 8


def colour_for(task_id: str) -> tuple[int, int, int]:
    """A stable colour per task, so two tasks of one request give visibly different images."""
    digest = hashlib.sha256(task_id.encode()).digest()
    return digest[0], digest[1], digest[2]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def solid_png(rgb: tuple[int, int, int], side: int = PNG_SIDE) -> bytes:
    """A ``side`` x ``side`` 8-bit RGB PNG of one colour."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # depth 8, colour type 2 (RGB)
    row = b"\x00" + bytes(rgb) * side  # filter byte 0 (None) before every scanline
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row * side))
        + _png_chunk(b"IEND", b"")
    )


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def fake_mp4(task_id: str) -> bytes:
    """An ``ftyp`` box (isom, minor 0x200, brands isom/iso2/avc1/mp41), a ``free`` box naming the
    task, and an empty ``mdat``: enough for MIME sniffers, not a playable video."""
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41")
    return ftyp + _box(b"free", f"genspark2api simulator {task_id}".encode()) + _box(b"mdat", b"")
