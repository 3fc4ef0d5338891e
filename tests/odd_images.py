"""Odd images made in memory (Pillow, numpy, hand-written PNG chunks) for the decoder's and the model
server's tests: bombs whose header lies about their size, 16-bit RGB (Pillow cannot write it), EXIF blocks."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, depth: int, colour_type: int, idat: bytes) -> bytes:
    """A PNG written by hand: Pillow cannot write 16-bit RGB, nor a header that lies about the size."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def png_rgb16(samples: np.ndarray) -> bytes:
    """A 48-bit RGB PNG of HxWx3 uint16 samples."""
    height, width = samples.shape[:2]
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in samples)
    return png(width, height, 16, 2, zlib.compress(rows))


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A few hundred bytes declaring width x height grey pixels (the first rows of zeros follow)."""
    return png(width, height, 8, 0, zlib.compress(b"\0" * (width + 1) * 16, 9))


def jpeg_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A 16x16 JPEG whose frame header is rewritten to declare width x height."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (90, 90, 90)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A GIF header declaring width x height: a format without our header probe, so Pillow's guard decides."""
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b"\x3b"


def exif_block(*entries: tuple[int, int, int, bytes]) -> bytes:
    """A big-endian EXIF block written by hand: (tag, type, count, 4-byte value) per entry."""
    ifd = struct.pack(">H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack(">HHI", tag, kind, count) + value
    return b"Exif\0\0MM\0*" + struct.pack(">I", 8) + ifd + struct.pack(">I", 0)


#: Orientation 6 beside an XPosition (a rational) stored as text: Pillow reads the block, but rewriting it,
#: as ImageOps.exif_transpose does, raises struct.error.
CORRUPT_EXIF = exif_block((0x0112, 3, 1, b"\0\x06\0\0"), (0x011E, 2, 4, b"Cam\0"))


def orientation_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


#: EXIF orientation -> quarter turns (np.rot90's k, counter-clockwise) that make the stored image upright
QUARTER_TURNS = {6: 3, 8: 1, 3: 2}


def stored_for(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for `upright` when it writes EXIF `orientation` instead of turning them."""
    return np.ascontiguousarray(np.rot90(upright, -QUARTER_TURNS[orientation]))


def jpeg_lossless_ish(rgb: np.ndarray, exif: bytes | None = None) -> bytes:
    """JPEG at quality 100 without chroma subsampling: turning it changes almost nothing but the order."""
    kwargs = {"exif": exif} if exif is not None else {}
    return encode(Image.fromarray(rgb), "JPEG", quality=100, subsampling=0, **kwargs)


def frames_of(rgb: np.ndarray, count: int = 3) -> list[Image.Image]:
    """`count` different frames of few colours (a GIF keeps them exactly); the first is `rgb` posterised."""
    base = (rgb // 64 * 64).astype(np.uint8)
    return [Image.fromarray(np.roll(base, 7 * i, axis=1)) for i in range(count)]


def animated(rgb: np.ndarray, fmt: str, count: int = 3) -> bytes:
    frames = frames_of(rgb, count)
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:])
