"""What the first bytes of an image say, read without Pillow: its format from the signature and, for PNG and
JPEG (the two types the endpoint advertises), its declared dimensions and bit depth.

The pixel limit is checked from these before any decoder sees the file, so a decompression bomb (a few
kilobytes declaring 30000x30000) costs a few reads, whatever `PIL.Image.MAX_IMAGE_PIXELS` is set to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

#: leading bytes -> format; enough to tell a truncated image from something that never was one
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)
HEAD_BYTES = 16
#: JPEG start-of-frame markers (C4 DHT, C8 JPG and CC DAC are not frames)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD9)))  # TEM, RST0-7, SOI: no length field
#: segments read before giving up on a JPEG header (real files have a dozen, a hostile one millions)
_MAX_SEGMENTS = 256


@dataclass(frozen=True)
class Header:
    format: str
    width: int
    height: int
    bits: int  # bits per sample: PNG's IHDR bit depth, JPEG's frame precision


def signature(head: bytes) -> str | None:
    """The format whose signature `head` starts with, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for sig, fmt in SIGNATURES if head.startswith(sig)), None)


def _png(fp: BinaryIO) -> Header | None:
    ihdr = fp.read(25)  # length, "IHDR", width, height, bit depth
    if len(ihdr) < 17 or ihdr[4:8] != b"IHDR":
        return None
    return Header("PNG", int.from_bytes(ihdr[8:12], "big"), int.from_bytes(ihdr[12:16], "big"), ihdr[16])


def _jpeg(fp: BinaryIO) -> Header | None:
    for _ in range(_MAX_SEGMENTS):
        if fp.read(1) != b"\xff":
            return None
        marker = fp.read(1)
        while marker == b"\xff":  # fill bytes
            marker = fp.read(1)
        if not marker or marker[0] in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        if marker[0] in _STANDALONE:
            continue
        length = int.from_bytes(fp.read(2), "big")
        if marker[0] in _SOF:
            frame = fp.read(5)  # precision, height, width
            if len(frame) < 5:
                return None
            height, width = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
            return Header("JPEG", width, height, frame[0])
        if length < 2:
            return None
        fp.seek(length - 2, 1)
    return None


#: PNG chunks that change what the pixels mean (transparency, animation, EXIF orientation): an image with one
#: of them takes Pillow's path, which applies them.
_PNG_SPECIAL = frozenset((b"tRNS", b"acTL", b"eXIf"))
#: chunks read before the first IDAT (real files have a handful, a hostile one could hold millions)
_MAX_PNG_CHUNKS = 64


def plain_png(data: bytes) -> tuple[Header, str] | None:
    """(header, Pillow's name of its mode) of a PNG whose pixels are all there is to it: 8-bit RGB or grey,
    no transparency, one frame, no EXIF orientation; None for any other file (or one whose chunks end before
    the image data)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    bits, colour = data[24], data[25]
    if bits != 8 or colour not in (0, 2) or data[26] or data[27]:  # compression and filter method 0
        return None
    pos = 8
    for _ in range(_MAX_PNG_CHUNKS):
        if pos + 8 > len(data):
            return None
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            return Header("PNG", width, height, bits), ("L" if colour == 0 else "RGB")
        if kind in _PNG_SPECIAL:
            return None
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")  # length, type, data, CRC
    return None


@dataclass(frozen=True)
class Probe:
    head: bytes  # the first HEAD_BYTES bytes, for messages about what the data is instead
    format: str | None  # by signature
    header: Header | None  # declared dimensions (PNG, JPEG); None for other formats or an incomplete header


def probe(fp: BinaryIO) -> Probe:
    """What the first bytes of `fp` (from its current position, restored after) declare.

    Without a header (other formats, or one cut short) Pillow reads the dimensions itself, still before it
    decodes, or says what is wrong.
    """
    start = fp.tell()
    try:
        head = fp.read(HEAD_BYTES)
        fmt = signature(head)
        header = None
        if fmt == "PNG":
            fp.seek(start + 8)
            header = _png(fp)
        elif fmt == "JPEG":
            fp.seek(start + 2)
            header = _jpeg(fp)
        return Probe(head, fmt, header)
    finally:
        fp.seek(start)
