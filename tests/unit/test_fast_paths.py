"""The predict path's fast parts give what their reference gives: libspng's PNG decode the pixels Pillow
decodes (and only where nothing but pixels is in the file), OpenVINO's feature network torch's features."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from model_server.engine import images
from model_server.engine.backends import OpenVINOFeatures
from model_server.engine.config import FeatureConfig
from model_server.engine.features import FeatureExtractor
from model_server.engine.image_header import plain_png
from model_server.engine.images import decode_image
from tests.odd_images import animated, png_rgb16


def _png(array: np.ndarray, **params: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **params)
    return buf.getvalue()


@pytest.fixture
def spng_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = images.pyspng.load

    def counted(data: bytes, fmt: str | None = None) -> np.ndarray:
        calls.append(len(data))
        return real(data, fmt)

    monkeypatch.setattr(images.pyspng, "load", counted)
    return calls


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_plain_png_is_decoded_by_libspng_to_pillows_pixels(spng_calls, mode: str, tmp_path) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (37, 53, 3) if mode == "RGB" else (37, 53), dtype=np.uint8)
    blob = _png(array, optimize=True)
    with Image.open(io.BytesIO(blob)) as img:
        reference = np.asarray(img.convert("RGB"))
    for source in (blob, tmp_path / "a.png"):
        if not isinstance(source, bytes):
            source.write_bytes(blob)
        rgb, info = decode_image(source)
        assert np.array_equal(rgb, reference) and rgb.dtype == np.uint8
        assert (info.format, info.mode, info.frames, info.orientation, info.notes) == ("PNG", mode, 1, 1, [])
    assert len(spng_calls) == 2


def test_pngs_with_more_than_pixels_take_pillows_path(spng_calls) -> None:
    """Transparency, 16 bits, palette, animation and EXIF orientation are Pillow's to apply."""
    rgb = np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    special = {
        "alpha": _png(np.dstack([rgb, np.full((20, 24), 128, np.uint8)])),
        "palette": _png(rgb[:, :, 0] // 64, bits=2),
        "colour key": _png(rgb, transparency=(0, 0, 0)),
        "exif orientation": _png(rgb, exif=exif),
    }
    special["16-bit"] = png_rgb16(rgb.astype(np.uint16) * 257)
    special["animated"] = animated(rgb, "PNG")
    for name, blob in special.items():
        assert plain_png(blob) is None, name
        decode_image(blob)
    assert spng_calls == []
    assert decode_image(special["exif orientation"])[1].orientation == 6


def test_a_damaged_plain_png_falls_back_to_pillows_answer(spng_calls) -> None:
    blob = _png(np.random.default_rng(2).integers(0, 256, (30, 30, 3), dtype=np.uint8))
    cut = blob[: len(blob) // 2]
    with pytest.raises(images.ImageError, match="truncated or corrupt"):
        decode_image(cut)
    assert len(spng_calls) == 1  # tried, refused by libspng, then worded by Pillow's path


@pytest.mark.parametrize(
    "config", [FeatureConfig(input_size=64), FeatureConfig(input_size=64, source_size=(32, 64))]
)
def test_openvino_features_match_torch(config: FeatureConfig) -> None:
    """The server's runtime against the reference, at batch 1 and 3 (one compiled model, any batch)."""
    pytest.importorskip("openvino")
    reference, compiled = FeatureExtractor(config, "torch"), FeatureExtractor(config, "openvino")
    assert isinstance(compiled.embed_function, OpenVINOFeatures)
    x = torch.randn(3, 3, *config.canvas, generator=torch.Generator().manual_seed(0))
    for batch in (x[:1], x):
        want, got = reference.embed(batch), compiled.embed(batch)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())
