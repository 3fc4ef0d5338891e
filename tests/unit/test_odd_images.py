"""Odd images at the decoder: each case has one expected result (refused with a kind and a clear reason, or
converted with a note of what was done). Every image is made here with Pillow/numpy; no data files."""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from ivadas_contract.errors import TYPES
from ivadas_contract.limits import MAX_PIXELS, MAX_REQUEST_BYTES, MIN_IMAGE_SIDE
from model_server.engine.images import ImageInput, decode_image, open_image
from model_server.errors import ImageError, ImageTooLargeError, ImageTooSmallError
from tests.odd_images import (
    CORRUPT_EXIF,
    QUARTER_TURNS,
    animated,
    encode,
    exif_block,
    frames_of,
    gif_bomb,
    jpeg_bomb,
    jpeg_lossless_ish,
    orientation_exif,
    png,
    png_bomb,
    png_rgb16,
    stored_for,
)

H, W = 48, 64


def _rgb(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def refused(source, kind: type[ImageError], match: str, **kwargs) -> ImageError:
    with pytest.raises(kind, match=match) as info:
        decode_image(source, **kwargs)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    assert info.value.kind in TYPES
    return info.value


# ------------------------------------------------------------------------------------------------ refusals


def test_error_kinds_are_contract_types() -> None:
    """The server answers with the exception's kind: undecodable 400, over the limits 413, too small 422."""
    assert ImageError.kind == "invalid_image" and TYPES[ImageError.kind] == 400
    assert ImageTooLargeError.kind == "payload_too_large" and TYPES[ImageTooLargeError.kind] == 413
    assert ImageTooSmallError.kind == "unprocessable" and TYPES[ImageTooSmallError.kind] == 422


def test_zero_size_is_refused(tmp_path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for source in (b"", empty):
        err = refused(source, ImageError, r"0 bytes", name="cam/empty.png")
        assert type(err) is ImageError and "cam/empty.png" in str(err)


def test_wrong_magic_is_not_an_image_and_says_what_it_starts_with(tmp_path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("hello, I am a text file named .png\n")
    err = refused(text, ImageError, r"notes\.png: not an image")
    assert "b'hello, I'" in str(err)  # the first bytes tell an HTML error page or a text file at a glance


def test_random_bytes_are_not_an_image() -> None:
    noise = np.random.default_rng(7).bytes(4096)
    refused(noise, ImageError, r"s3://inbox/l/c/x\.jpg: not an image", name="s3://inbox/l/c/x.jpg")


def test_formats_outside_the_list_are_refused() -> None:
    """TGA is a real image Pillow reads, but not one of FORMATS: fewer decoders face hostile input."""
    refused(encode(Image.fromarray(_rgb()), "TGA"), ImageError, r"not an image.*readable: PNG, JPEG")


def test_truncated_png_and_jpeg_are_refused() -> None:
    full_png = encode(Image.fromarray(_rgb(1)), "PNG")
    refused(full_png[:30], ImageError, r"truncated or corrupt PNG data \(its header")  # cut in the header
    refused(full_png[: len(full_png) // 2], ImageError, r"truncated")  # cut in the pixel data
    full_jpeg = encode(Image.fromarray(_rgb(1)), "JPEG")
    refused(full_jpeg[:8], ImageError, r"truncated")
    refused(full_jpeg[: len(full_jpeg) // 2], ImageError, r"truncated")


def test_png_missing_only_its_end_chunk_is_inspected_whole() -> None:
    """Every pixel is there (only the 12-byte IEND is missing): decoded, not refused."""
    rgb = _rgb(2)
    rgb_out, _ = decode_image(encode(Image.fromarray(rgb), "PNG")[:-12])
    assert np.array_equal(rgb_out, rgb)


@pytest.mark.parametrize("make", [png_bomb, jpeg_bomb], ids=["png", "jpeg"])
def test_bombs_are_refused_from_our_header_read_with_pillows_guard_off(make, monkeypatch) -> None:
    """With Pillow's guard disabled, only our own check stands between the header and a 900 MB decode."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    data = make()
    assert len(data) < 2000
    refused(data, ImageTooLargeError, r"bomb: image is 30000x30000 = 900,000,000 pixels, over the limit of "
            r"40,000,000", name="bomb")  # fmt: skip


@pytest.mark.parametrize("make", [png_bomb, jpeg_bomb], ids=["png", "jpeg"])
def test_bombs_are_refused_before_pillow_opens_them(make, monkeypatch) -> None:
    """Pillow's guard (DecompressionBombError above 2 x MAX_IMAGE_PIXELS) is a backstop, not the check: a PNG
    or JPEG bomb never reaches a Pillow decoder."""

    def no_pillow(*args, **kwargs):
        raise AssertionError("Pillow opened a bomb")

    monkeypatch.setattr(Image, "open", no_pillow)
    refused(make(), ImageTooLargeError, r"30000x30000")


def test_other_formats_over_the_limit_are_refused_from_pillows_header_parse() -> None:
    tiff = encode(Image.new("1", (8000, 6000)), "TIFF", compression="group4")  # 48 Mpx in a few KB
    assert len(tiff) < 100_000
    refused(tiff, ImageTooLargeError, r"8000x6000 = 48,000,000 pixels")
    # far beyond Pillow's own limit: its DecompressionBombError becomes the same kind, never a generic error
    err = refused(gif_bomb(), ImageTooLargeError, r"over the limit of 40,000,000 pixels")
    assert err.kind == "payload_too_large"


def test_exactly_max_pixels_is_inspected_and_one_more_is_refused() -> None:
    at_limit = encode(Image.new("L", (8000, 5000), 77), "PNG")  # 8000 x 5000 = MAX_PIXELS
    assert MAX_PIXELS == 8000 * 5000 and len(at_limit) < MAX_REQUEST_BYTES  # it fits in one request
    rgb, info = decode_image(at_limit)
    assert rgb.shape == (5000, 8000, 3) and rgb[0, 0].tolist() == [77, 77, 77] and info.notes == []
    assert MAX_PIXELS + 1 == 754_717 * 53
    refused(png(754_717, 53, 8, 0, zlib.compress(b"\0" * 64)), ImageTooLargeError, r"40,000,001 pixels")
    refused(encode(Image.new("L", (8000, 5001)), "PNG"), ImageTooLargeError, r"8000x5001")


def test_one_pixel_is_refused_as_too_small_and_the_minimum_side_is_inspected() -> None:
    """MIN_IMAGE_SIDE (16, the backbones' deepest stride): a 1x1 image holds less than one deep patch of
    content, so its score would come from interpolation and padding, not from a part: unprocessable."""
    err = refused(encode(Image.new("RGB", (1, 1)), "PNG"), ImageTooSmallError, r"1x1.*minimum of 16")
    assert err.kind == "unprocessable"
    refused(encode(Image.new("RGB", (200, MIN_IMAGE_SIDE - 1)), "PNG"), ImageTooSmallError, r"200x15")
    side = MIN_IMAGE_SIDE
    assert decode_image(encode(Image.new("RGB", (side, side)), "PNG"))[0].shape == (side, side, 3)
    assert open_image(encode(Image.new("L", (1, 1)), "PNG")).size == (1, 1)  # masks have no minimum


# ------------------------------------------------------------------------------------------------ conversions


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    rgb = _rgb(3)
    data = encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    out, info = decode_image(data)
    assert out.shape == (H, W, 3) and np.abs(out.astype(int) - rgb).mean() < 3  # JPEG loss only
    assert (info.format, info.mode, info.notes) == ("JPEG", "CMYK", ["CMYK converted to RGB"])


def test_16bit_grey_maps_linearly_to_8_bits() -> None:
    values = np.tile(np.array([0, 257 * 128, 40_000, 65_535], np.uint16), (MIN_IMAGE_SIDE, 4))
    out, info = decode_image(encode(Image.fromarray(values), "PNG"))
    assert out[0, :4, 0].tolist() == [0, 128, 156, 255] and np.array_equal(out[..., 0], out[..., 2])
    assert info.mode == "I;16" and info.notes == ["I;16 grey mapped linearly from 0-65535 to 0-255"]


def test_16bit_rgb_keeps_the_high_byte() -> None:
    """Pillow reads 48-bit PNG as 8-bit RGB from each sample's high byte; the note says so."""
    samples = np.random.default_rng(4).integers(0, 65536, (MIN_IMAGE_SIDE, 20, 3), dtype=np.uint16)
    out, info = decode_image(png_rgb16(samples))
    assert np.array_equal(out, (samples >> 8).astype(np.uint8))
    assert info.mode == "RGB" and info.notes == ["16-bit samples reduced to 8 bits"]


def test_palette_without_transparency_is_its_colours() -> None:
    pal = Image.fromarray(_rgb(5)).quantize(16)
    out, info = decode_image(encode(pal, "PNG"))
    assert np.array_equal(out, np.asarray(pal.convert("RGB"))) and (info.mode, info.notes) == ("P", [])


def test_palette_transparency_is_composited_on_black() -> None:
    pal = Image.fromarray(_rgb(6)).quantize(16)
    index = np.asarray(pal)
    out, info = decode_image(encode(pal, "PNG", transparency=0))
    colours = np.asarray(pal.convert("RGB"))
    assert np.all(out[index == 0] == 0) and np.array_equal(out[index != 0], colours[index != 0])
    assert (index == 0).any() and info.notes == ["transparent pixels composited on black"]


def test_alpha_is_composited_on_black() -> None:
    rgb = _rgb(7)
    alpha = np.random.default_rng(8).integers(0, 256, (H, W), dtype=np.uint8)
    expected = (rgb.astype(int) * alpha[..., None] + 127) // 255  # premultiplied: c * a
    out, info = decode_image(encode(Image.fromarray(np.dstack([rgb, alpha])), "PNG"))
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert info.mode == "RGBA" and info.notes == ["transparent pixels composited on black"]
    la = Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA")
    out, info = decode_image(encode(la, "PNG"))
    assert np.abs(out[..., 1].astype(int) - expected[..., 0]).max() <= 1 and info.mode == "LA"
    opaque_rgba = Image.fromarray(np.dstack([rgb, np.full((H, W), 255, np.uint8)]))
    opaque, info = decode_image(encode(opaque_rgba, "PNG"))
    assert np.array_equal(opaque, rgb) and info.notes == []  # opaque alpha: colours exactly, nothing to note


def test_grey_is_repeated_into_rgb() -> None:
    grey = _rgb(9)[..., 0]
    out, info = decode_image(encode(Image.fromarray(grey), "PNG"))
    assert all(np.array_equal(out[..., c], grey) for c in range(3)) and (info.mode, info.notes) == ("L", [])


# ------------------------------------------------------------------------------------------------ frames


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "TIFF"])
def test_animated_and_multi_frame_inspect_the_first_frame_and_say_so(fmt: str) -> None:
    frames = frames_of(_rgb(10))
    out, info = decode_image(animated(_rgb(10), fmt))
    assert np.array_equal(out, np.asarray(frames[0]))
    assert not np.array_equal(out, np.asarray(frames[1]))
    assert info.format == fmt and info.frames == 3 and "first of 3 frames inspected" in info.notes
    single, info = decode_image(encode(frames[0], fmt))
    assert info.frames == 1 and info.notes == []


# ------------------------------------------------------------------------------------------------ EXIF


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_rotated_jpeg_is_inspected_upright(orientation: int) -> None:
    upright = _rgb(11)
    stored = stored_for(upright, orientation)
    out, info = decode_image(jpeg_lossless_ish(stored, orientation_exif(orientation)))
    plain, _ = decode_image(jpeg_lossless_ish(stored))  # the same stored pixels, no EXIF
    assert np.array_equal(out, np.rot90(plain, QUARTER_TURNS[orientation]))  # the decoded pixels, turned
    assert out.shape == upright.shape and np.abs(out.astype(int) - upright).mean() < 2
    assert info.orientation == orientation
    assert info.notes == [f"turned upright from EXIF orientation {orientation}"]


def test_corrupt_exif_still_decodes() -> None:
    """CORRUPT_EXIF holds orientation 6 and a tag of the wrong type: the orientation is applied, the rest
    ignored. A block that is not even a TIFF header, or an orientation out of range: inspected as stored."""
    stored = _rgb(12)
    out, info = decode_image(jpeg_lossless_ish(stored, CORRUPT_EXIF))
    assert out.shape == (W, H, 3) and info.orientation == 6
    garbage = b"Exif\0\0" + np.random.default_rng(13).bytes(200)  # not even a TIFF header
    out, info = decode_image(jpeg_lossless_ish(stored, garbage))
    assert out.shape == (H, W, 3) and info.orientation == 1
    odd = exif_block((0x0112, 3, 1, b"\0\x63\0\0"))  # orientation 99
    out, info = decode_image(jpeg_lossless_ish(stored, odd))
    assert out.shape == (H, W, 3) and info.notes == ["EXIF orientation 99 is not 1-8: inspected as stored"]


def test_image_input_is_json_ready() -> None:
    _, info = decode_image(encode(Image.fromarray(_rgb()), "PNG"))
    assert isinstance(info, ImageInput)
    assert json.loads(json.dumps(info.to_dict())) == {
        "format": "PNG", "mode": "RGB", "frames": 1, "orientation": 1, "notes": []
    }  # fmt: skip


# ------------------------------------------------------------------------------------------------ the worker


@pytest.fixture
def endpoint_answering(monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    """A stand-in endpoint on a local port that answers with the model server's own error response."""
    from model_server.server.protocol import error_response

    answer: list = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            response = error_response(*answer)
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{httpd.server_port}")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    yield answer
    httpd.shutdown()
    httpd.server_close()


def test_worker_rejects_with_the_decoders_message(endpoint_answering: list) -> None:
    """The REJECTED record's reason is the decoder's message, as the server sends it."""
    from ivadas_functions import aws

    aws._client.cache_clear()
    with pytest.raises(ImageTooLargeError) as decoded:
        decode_image(png_bomb(), name="image")
    endpoint_answering[:] = [TYPES[decoded.value.kind], str(decoded.value), decoded.value.kind]
    with pytest.raises(aws.RejectedImage) as rejected:
        aws.invoke_endpoint("ivadas-patchcore", "widget", png_bomb())
    expected = "image: image is 30000x30000 = 900,000,000 pixels, over the limit of 40,000,000 pixels"
    assert str(rejected.value) == expected
    aws._client.cache_clear()
