"""Image decoding within limits: bytes or a file in, HxWx3 uint8 RGB out, or an `ImageError` that names the
image and the reason (the CLI and the model server show those messages to users)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ivadas_contract.limits import MAX_PIXELS
from model_server.errors import ImageError

GREY_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _label(source: str | Path | bytes, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, bytes | bytearray | memoryview):
        return "<image bytes>"
    return str(source)


def _readable(source: str | Path | bytes, label: str) -> io.BytesIO | Path:
    """What PIL can open, once an empty input, a folder or an unreadable file has been refused."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if not data:
            raise ImageError(f"{label}: empty image (0 bytes)")
        return io.BytesIO(data)
    fp = Path(source)
    try:
        size = fp.stat().st_size
    except OSError as exc:
        raise ImageError(f"{label}: cannot read file ({exc.strerror or exc})") from None
    if fp.is_dir():
        raise ImageError(f"{label}: is a folder, not an image file")
    if size == 0:
        raise ImageError(f"{label}: empty file (0 bytes)")
    return fp


def _decoded(fp: io.BytesIO | Path, label: str, max_pixels: int) -> Image.Image:
    """Open, size-check and decode; raises `ImageError` (and only that) for anything wrong with the data."""
    img = result = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
        width, height = img.size
        if width * height > max_pixels:
            raise ImageError(
                f"{label}: image is {width}x{height} = {width * height:,} pixels, over the limit of "
                f"{max_pixels:,} pixels"
            )
        img.load()  # decode now, so truncated or corrupt pixel data fails here and not later
        result = ImageOps.exif_transpose(img)
        return result
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{label}: image is too large ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{label}: not an image, or a format that cannot be read") from None
    except (OSError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{label}: truncated or corrupt image data ({exc})") from None
    except Exception as exc:  # hostile files make decoders raise anything (struct.error, IndexError, ...)
        raise ImageError(f"{label}: cannot decode image ({type(exc).__name__}: {exc})") from None
    finally:
        if img is not None and img is not result:
            img.close()


def open_image(
    source: str | Path | bytes, name: str | None = None, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Open, size-check and fully decode an image, turning every failure into an `ImageError`.

    The size is checked from the header, before the pixels are decoded, so a decompression bomb costs nothing.
    PIL's own bomb guard (a warning above `Image.MAX_IMAGE_PIXELS`, an error above twice that) stays in place
    as a backstop; its warning is silenced here because the explicit limit already refuses the image.
    """
    label = _label(source, name)
    return _decoded(_readable(source, label), label, max_pixels)


def _to_rgb(img: Image.Image, label: str) -> np.ndarray:
    """Any PIL mode to HxWx3 uint8. 16-bit and 32-bit grey map 0..65535 linearly onto 0..255, not per image
    min-max: a stretch per image would hide defects that change overall brightness."""
    mode = img.mode
    if mode in GREY_16BIT_MODES or mode == "I":
        grey = np.asarray(img).astype(np.int64)
        grey = ((np.clip(grey, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    try:
        if mode in ("P", "PA"):  # via RGBA so palette transparency is handled, then alpha dropped
            img = img.convert("RGBA")
        if img.mode != "RGB":
            img = img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(f"{label}: unsupported colour mode {mode} ({exc})") from None
    return np.array(img, dtype=np.uint8)


def read_image(
    source: str | Path | bytes, name: str | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode an image file or encoded bytes into an HxWx3 uint8 RGB array, in its EXIF display orientation.

    Accepts whatever PIL reads (PNG, JPEG, BMP, TIFF, ...) in grey, grey+alpha, RGBA (alpha dropped), palette
    and 16-bit grey. Raises `ImageError` naming the file (or `name`, e.g. an S3 key for bytes) and the reason.
    """
    img = open_image(source, name, max_pixels)
    try:
        return _to_rgb(img, _label(source, name))
    finally:
        img.close()
