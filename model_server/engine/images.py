"""Image decoding within limits: bytes or a file in, HxWx3 uint8 RGB out with a note of what was done to it,
or an `ImageError` that names the image and the reason (the CLI and the model server show those messages to
users; each error class's `kind` is the error type the server answers with).

Every odd input has one result:
- empty, not an image (no known signature), a format outside `FORMATS`, truncated or corrupt: `ImageError`;
- more than `max_pixels`, judged from the header before any pixel is decoded: `ImageTooLargeError`;
- a side under `min_side` (`MIN_IMAGE_SIDE`, see limits.py for why): `ImageTooSmallError`;
- several frames (animated GIF or PNG, multi-page TIFF): the first is inspected, and the note says so;
- an EXIF orientation: turned upright; a corrupt EXIF block is ignored, never a reason to refuse the image;
- grey, palette, CMYK, 16-bit: converted to 8-bit RGB; transparency: composited on black (`_to_rgb`).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyspng
from PIL import ExifTags, Image

from ivadas_contract.limits import MAX_PIXELS, MIN_IMAGE_SIDE
from model_server.engine.image_header import Probe, plain_png, probe
from model_server.errors import ImageError, ImageTooLargeError, ImageTooSmallError

GREY_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
#: The decoders Pillow may use. Others are refused as "not an image": fewer decoders face hostile input, and
#: none of them shells out (Pillow's EPS plugin runs Ghostscript). JPEG includes MPO (multi-picture JPEG);
#: PPM covers the PGM files of machine vision.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
#: What transparent pixels become (see `_to_rgb`).
ALPHA_BACKGROUND = (0, 0, 0)
#: EXIF orientation -> the transpose that makes the image upright (as `ImageOps.exif_transpose` maps them)
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)  # the warning, where made an error
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass
class ImageInput:
    """What was decoded and what was done to it: the model server returns it as `input` with every score,
    so a caller sees that only the first of several frames was inspected, or that the image was turned."""

    format: str  # as Pillow names it: PNG, JPEG, GIF, TIFF...
    mode: str  # as stored: RGB, L, P, RGBA, CMYK, I;16...
    frames: int  # frames or pages in the file; only the first is inspected
    orientation: int  # the EXIF orientation applied (1: none)
    notes: list[str] = field(default_factory=list)  # every conversion that changed what the model sees

    def to_dict(self) -> dict:
        return asdict(self)


def _label(source: str | Path | bytes, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, bytes | bytearray | memoryview):
        return "<image bytes>"
    return str(source)


def _readable(source: str | Path | bytes, label: str) -> BinaryIO:
    """An open binary file of the image, once an empty input, a folder or an unreadable file is refused."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if not data:
            raise ImageError(f"{label}: empty image (0 bytes)")
        return io.BytesIO(data)
    fp = Path(source)
    if fp.is_dir():
        raise ImageError(f"{label}: is a folder, not an image file")
    try:
        if fp.stat().st_size == 0:
            raise ImageError(f"{label}: empty file (0 bytes)")
        return fp.open("rb")
    except OSError as exc:
        raise ImageError(f"{label}: cannot read file ({exc.strerror or exc})") from None


def _check_size(width: int, height: int, label: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{label}: image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} pixels"
        )


def _unidentified(label: str, probed: Probe) -> ImageError:
    if probed.format:  # it starts like an image: cut short or damaged before its header ends
        return ImageError(f"{label}: truncated or corrupt {probed.format} data (its header cannot be read)")
    return ImageError(
        f"{label}: not an image, or a format that cannot be read here (readable: {', '.join(FORMATS)}); "
        f"the data starts with {probed.head[:8]!r}"
    )


def _upright(img: Image.Image) -> tuple[Image.Image, int, list[str]]:
    """The image turned to its EXIF display orientation, the orientation applied, and a note if any.

    Only the orientation tag is read: the rest of a corrupt block is ignored instead of refusing the image.
    Unlike `ImageOps.exif_transpose` this does not rewrite the EXIF block (which raises on some corrupt
    values) and makes no copy of an image that is already upright.
    """
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - EXIF parsers raise anything on a damaged block; the pixels are fine
        return img, 1, ["EXIF block unreadable: inspected as stored"]
    if value == 1:
        return img, 1, []
    method = _UPRIGHT.get(value) if isinstance(value, int) else None
    if method is None:
        return img, 1, [f"EXIF orientation {value!r} is not 1-8: inspected as stored"]
    return img.transpose(method), value, [f"turned upright from EXIF orientation {value}"]


def _open(fp: BinaryIO, label: str, max_pixels: int, min_side: int) -> tuple[Image.Image, ImageInput]:
    """Size-check from the header, open, then decode the first frame only."""
    probed = probe(fp)
    if probed.header is not None:  # PNG and JPEG: refused before Pillow sees the file
        _check_size(probed.header.width, probed.header.height, label, max_pixels)
    try:
        img = Image.open(fp, formats=FORMATS)
    except Image.UnidentifiedImageError:
        raise _unidentified(label, probed) from None
    _check_size(img.width, img.height, label, max_pixels)  # the other formats, from Pillow's header parse
    if min(img.size) < min_side:
        raise ImageTooSmallError(
            f"{label}: image is {img.width}x{img.height}, a side is under the minimum of {min_side} pixels"
        )
    info = ImageInput(img.format or "?", img.mode, int(getattr(img, "n_frames", 1)), 1)
    if probed.header is not None and probed.header.bits == 16 and img.mode not in GREY_16BIT_MODES:
        info.notes.append("16-bit samples reduced to 8 bits")
    if info.frames > 1:
        info.notes.append(f"first of {info.frames} frames inspected")
    img.load()  # decode now, so truncated or corrupt pixel data fails here and not later
    upright, info.orientation, notes = _upright(img)
    info.notes.extend(notes)
    if upright is not img:
        img.close()
    return upright, info


def _decoded(
    source: str | Path | bytes, name: str | None, max_pixels: int, min_side: int
) -> tuple[Image.Image, ImageInput]:
    """`_open` with every failure turned into an `ImageError` (or a subclass) naming the image."""
    label = _label(source, name)
    fp = _readable(source, label)
    try:
        return _open(fp, label, max_pixels, min_side)
    except ImageError:
        raise
    except _BOMB as exc:  # Pillow's own guard, for a format without a header probe
        message = f"{label}: image is over the limit of {max_pixels:,} pixels ({exc})"
        raise ImageTooLargeError(message) from None
    except (OSError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{label}: truncated or corrupt image data ({exc})") from None
    except Exception as exc:  # hostile files make decoders raise anything (struct.error, IndexError, ...)
        raise ImageError(f"{label}: cannot decode image ({type(exc).__name__}: {exc})") from None
    finally:
        fp.close()  # the first frame is decoded: nothing reads the file again


def open_image(
    source: str | Path | bytes, name: str | None = None, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Open, size-check and fully decode an image (its first frame, upright), turning every failure into an
    `ImageError`. No minimum side: masks and other auxiliary images may be small."""
    return _decoded(source, name, max_pixels, 1)[0]


def _composited(img: Image.Image) -> tuple[Image.Image, list[str]]:
    """RGB of an image with transparency, composited on `ALPHA_BACKGROUND` where it is not opaque."""
    rgba = img.convert("RGBA")  # LA, PA, palette or colour-key transparency: all become an alpha band
    alpha = rgba.getchannel("A")
    if alpha.getextrema()[0] == 255:  # opaque everywhere: nothing hidden, nothing to composite
        return rgba.convert("RGB"), []
    out = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
    out.paste(rgba, mask=alpha)
    return out, ["transparent pixels composited on black"]


def _to_rgb(img: Image.Image, label: str) -> tuple[np.ndarray, list[str]]:
    """Any PIL mode to HxWx3 uint8, and a note of each conversion that changes what the model sees.

    16-bit and 32-bit grey map 0..65535 linearly onto 0..255, not per image min-max: a stretch per image would
    hide defects that change overall brightness. Transparent pixels are composited on black, the same rule at
    training and inspection: a transparent pixel sends no light (premultiplied alpha), whatever colour the
    encoder left under it (PNG leaves it undefined), so masked-out background is the same in every image.
    """
    mode = img.mode
    if mode in GREY_16BIT_MODES or mode == "I":
        grey = np.asarray(img).astype(np.int64)
        grey = ((np.clip(grey, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        rgb = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
        return rgb, [f"{mode} grey mapped linearly from 0-65535 to 0-255"]
    notes = [f"{mode} converted to RGB"] if mode == "CMYK" else []
    try:
        if mode in _ALPHA_MODES or "transparency" in img.info:
            img, composited = _composited(img)
            notes.extend(composited)
        elif mode != "RGB":
            img = img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(f"{label}: unsupported colour mode {mode} ({exc})") from None
    return np.array(img, dtype=np.uint8), notes


def _png_bytes(source: str | Path | bytes) -> bytes | None:
    """The bytes of a PNG source (a file is read only when it starts like one); None otherwise."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    try:
        with Path(source).open("rb") as fp:
            if fp.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            fp.seek(0)
            return fp.read()
    except OSError:
        return None  # Pillow's path says what is wrong with it


def _plain_png(
    source: str | Path | bytes, max_pixels: int, min_side: int
) -> tuple[np.ndarray, ImageInput] | None:
    """A plain PNG (image_header.plain_png) decoded by libspng: the same pixels as Pillow's, measured 1.8x as
    fast here on 900x900 RGB. None sends the image down Pillow's path, which also words every refusal."""
    data = _png_bytes(source)
    plain = plain_png(data) if data else None
    if plain is None:
        return None
    header, mode = plain
    if header.width * header.height > max_pixels or min(header.width, header.height) < min_side:
        return None
    try:
        rgb = pyspng.load(data, "RGB")
    except Exception:  # noqa: BLE001 - damaged data: Pillow's path decodes what it can or names the fault
        return None
    if rgb.shape != (header.height, header.width, 3) or rgb.dtype != np.uint8:
        return None
    return rgb, ImageInput("PNG", mode, 1, 1)


def decode_image(
    source: str | Path | bytes,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_IMAGE_SIDE,
) -> tuple[np.ndarray, ImageInput]:
    """Decode an image file or encoded bytes into HxWx3 uint8 RGB in its display orientation, with what was
    decoded and done (`ImageInput`). Raises `ImageError` (`kind` says which) naming the file (or `name`, e.g.
    an S3 key for bytes) and the reason. One decode, of the first frame; every check before it reads headers.
    """
    fast = _plain_png(source, max_pixels, min_side)
    if fast is not None:
        return fast
    img, info = _decoded(source, name, max_pixels, min_side)
    try:
        rgb, notes = _to_rgb(img, _label(source, name))
    finally:
        img.close()
    info.notes.extend(notes)
    return rgb, info


def read_image(
    source: str | Path | bytes,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_IMAGE_SIDE,
) -> np.ndarray:
    """`decode_image`'s RGB array alone (training, the CLI): PNG, JPEG, BMP, TIFF, GIF, WebP, PGM/PPM, in
    grey, palette, CMYK, 16-bit grey, with or without alpha."""
    return decode_image(source, name, max_pixels, min_side)[0]
