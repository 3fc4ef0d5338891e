"""Odd images through a real model server process over HTTP: each refusal is a 4xx in the one error shape with
its `type`, each converted image a 200 whose `input` says what was decoded and done; a refusal never breaks
the next request. The images are made in memory from the synthetic class's own parts."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ivadas_contract.errors import TYPES
from model_server.engine.predictor import Predictor
from tests.integration.test_server import ROOT, Server, _ping, free_port
from tests.odd_images import (
    CORRUPT_EXIF,
    animated,
    encode,
    jpeg_bomb,
    jpeg_lossless_ish,
    orientation_exif,
    png_bomb,
    png_rgb16,
    stored_for,
)

CLASS = "widget"


@pytest.fixture(scope="module")
def server(trained_artifact: Path) -> Iterator[Server]:
    """One endpoint (PatchCore on the synthetic widget), at the default body limit (6 MiB)."""
    port = free_port()
    cmd = [sys.executable, "-m", "model_server.server.serve", "--host", "127.0.0.1", "--port", str(port),
           "--endpoint", f"ivadas-patchcore={trained_artifact}", "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while _ping(url) != 200:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server never became healthy")
        time.sleep(0.05)
    yield Server(url, proc, [])
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def part(synthetic_root: Path) -> np.ndarray:
    """A good part of the class (96x96 RGB): what the odd encodings below carry."""
    return np.asarray(Image.open(synthetic_root / "widget/test/good/000.png").convert("RGB"))


@pytest.fixture(scope="module")
def scratched(synthetic_root: Path) -> np.ndarray:
    return np.asarray(Image.open(synthetic_root / "widget/test/scratch/000.png").convert("RGB"))


def score(server: Server, body: bytes, heatmap: bool = False) -> tuple[int, dict]:
    attrs = f"class_name={CLASS},return_heatmap={'true' if heatmap else 'false'}"
    headers = {"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": attrs}
    status, _, raw = server.request("/endpoints/ivadas-patchcore/invocations", body, headers)
    return status, json.loads(raw)


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


REFUSED: dict[str, tuple[Callable[[np.ndarray], bytes], int, str, str]] = {
    # case: (bytes from the part, status, type, words of the message)
    "zero-size": (lambda p: b"", 400, "bad_request", "empty request body"),
    "text named .png": (lambda p: b"hello, I am a text file\n", 400, "invalid_image", "not an image"),
    "random bytes": (lambda p: np.random.default_rng(3).bytes(4096), 400, "invalid_image", "not an image"),
    "truncated png": (lambda p: _truncated(encode(Image.fromarray(p), "PNG")), 400, "invalid_image",
                      "truncated"),
    "truncated jpeg": (lambda p: _truncated(encode(Image.fromarray(p), "JPEG")), 400, "invalid_image",
                       "truncated"),
    "png bomb 30000x30000": (lambda p: png_bomb(), 413, "payload_too_large",
                             "30000x30000 = 900,000,000 pixels"),
    "jpeg bomb 30000x30000": (lambda p: jpeg_bomb(), 413, "payload_too_large", "30000x30000"),
    "one row over 40 Mpx": (lambda p: encode(Image.new("L", (8000, 5001)), "PNG"), 413, "payload_too_large",
                            "over the limit of 40,000,000 pixels"),
    "1x1": (lambda p: encode(Image.new("RGB", (1, 1)), "PNG"), 422, "unprocessable", "minimum of 16 pixels"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSED))
def test_odd_image_is_refused_with_its_type(server: Server, part: np.ndarray, case: str) -> None:
    make, status, kind, words = REFUSED[case]
    got, doc = score(server, make(part))
    assert (got, doc["type"]) == (status, kind), doc
    assert TYPES[kind] == status and words in doc["error"] and "Traceback" not in doc["error"]
    got, doc = score(server, encode(Image.fromarray(part), "PNG"))  # the next valid request is answered
    assert got == 200 and doc["is_anomaly"] is False


def _grey(p: np.ndarray) -> np.ndarray:
    return p[..., 0]


def _palette(p: np.ndarray, **kwargs) -> bytes:
    return encode(Image.fromarray(p).quantize(64), "PNG", **kwargs)


def _alpha(p: np.ndarray) -> np.ndarray:
    return np.where(_grey(p) > 60, 255, 0).astype(np.uint8)  # the part opaque, the dark background cut out


ALPHA_NOTE = "transparent pixels composited on black"
CONVERTED: dict[str, tuple[Callable[[np.ndarray], bytes], dict, list[str]]] = {
    # case: (bytes from the part, expected `input` fields, its notes)
    "cmyk jpeg": (lambda p: encode(Image.fromarray(p).convert("CMYK"), "JPEG", quality=95),
                  {"format": "JPEG", "mode": "CMYK"}, ["CMYK converted to RGB"]),
    "16-bit grey": (lambda p: encode(Image.fromarray(_grey(p).astype(np.uint16) * 257), "PNG"),
                    {"mode": "I;16"}, ["I;16 grey mapped linearly from 0-65535 to 0-255"]),
    "16-bit rgb": (lambda p: png_rgb16(p.astype(np.uint16) * 257), {"mode": "RGB"},
                   ["16-bit samples reduced to 8 bits"]),
    "palette": (lambda p: _palette(p), {"mode": "P"}, []),
    "palette with transparency": (lambda p: _palette(p, transparency=0), {"mode": "P"}, [ALPHA_NOTE]),
    "grey + alpha (LA)": (lambda p: encode(Image.fromarray(np.dstack([_grey(p), _alpha(p)]), "LA"), "PNG"),
                          {"mode": "LA"}, [ALPHA_NOTE]),
    "rgba": (lambda p: encode(Image.fromarray(np.dstack([p, _alpha(p)])), "PNG"), {"mode": "RGBA"},
             [ALPHA_NOTE]),
    "grey (L)": (lambda p: encode(Image.fromarray(_grey(p)), "PNG"), {"mode": "L"}, []),
    "animated gif": (lambda p: animated(p, "GIF"), {"format": "GIF", "frames": 3},
                     ["first of 3 frames inspected"]),
    "animated png": (lambda p: animated(p, "PNG"), {"format": "PNG", "frames": 3},
                     ["first of 3 frames inspected"]),
    "multi-page tiff": (lambda p: animated(p, "TIFF"), {"format": "TIFF", "frames": 3},
                        ["first of 3 frames inspected"]),
    "corrupt exif": (lambda p: jpeg_lossless_ish(stored_for(p, 6), CORRUPT_EXIF),
                     {"format": "JPEG", "orientation": 6}, ["turned upright from EXIF orientation 6"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CONVERTED))
def test_odd_image_is_converted_and_the_answer_says_how(server: Server, part: np.ndarray, case: str) -> None:
    make, fields, notes = CONVERTED[case]
    got, doc = score(server, make(part))
    assert got == 200, doc
    assert {k: doc["input"][k] for k in fields} == fields and doc["input"]["notes"] == notes
    assert (doc["image_height"], doc["image_width"]) == part.shape[:2]
    assert doc["normalized_score"] >= 0.0 and isinstance(doc["is_anomaly"], bool)


def test_exactly_40_megapixels_is_inspected(server: Server) -> None:
    body = encode(Image.new("L", (8000, 5000), 90), "PNG")
    got, doc = score(server, body)
    assert got == 200, doc
    assert (doc["image_width"], doc["image_height"]) == (8000, 5000) and doc["input"]["notes"] == []


def _heatmap(doc: dict) -> np.ndarray:
    png = base64.b64decode(doc["heatmap_png_base64"])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_rotated_jpeg_scores_as_the_upright_image(
    server: Server, scratched: np.ndarray, orientation: int, trained_artifact: Path
) -> None:
    """The stored pixels are turned; the EXIF tag says how to show them. Inspected upright, score and map are
    the upright image's (to JPEG's rounding); the same pixels inspected as stored are far off in both."""
    _, upright = score(server, jpeg_lossless_ish(scratched), heatmap=True)
    stored = stored_for(scratched, orientation)
    got, rotated = score(server, jpeg_lossless_ish(stored, orientation_exif(orientation)), heatmap=True)
    assert got == 200 and rotated["input"]["orientation"] == orientation
    assert rotated["input"]["notes"] == [f"turned upright from EXIF orientation {orientation}"]
    _, as_stored = score(server, jpeg_lossless_ish(stored), heatmap=True)
    assert (rotated["image_height"], rotated["image_width"]) == scratched.shape[:2]
    off = {name: abs(doc["anomaly_score"] - upright["anomaly_score"]) for name, doc in
           (("rotated", rotated), ("as stored", as_stored))}  # fmt: skip
    assert off["rotated"] < 0.1 * off["as stored"], off
    assert _heatmap(rotated).shape == _heatmap(upright).shape
    # the maps themselves (raw scores: this scratch is red all over on the calibrated colour scale), from the
    # same decode and model in process: the rotated file's map is the upright one's, the stored pixels' is not
    predictor = Predictor(trained_artifact)
    maps = {name: predictor.predict(CLASS, [body])[0].anomaly_map for name, body in (
        ("upright", jpeg_lossless_ish(scratched)),
        ("rotated", jpeg_lossless_ish(stored, orientation_exif(orientation))),
        ("as stored", jpeg_lossless_ish(stored)),
    )}  # fmt: skip
    map_off = np.abs(maps["rotated"] - maps["upright"]).mean()
    assert map_off < 0.2 * np.abs(maps["as stored"] - maps["upright"]).mean()  # a square part: same shapes
