"""The endpoint's scoring pipeline and request parsing as plain functions, without HTTP: the same results as
the in-process predict path, errors before any work is wasted, and the per-request timings."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_server.engine.predictor import STAGES, Predictor
from model_server.server.config import ServerConfig
from model_server.server.endpoint import Endpoint
from model_server.server.protocol import HttpError, Instance, parse_request
from model_server.server.scoring import score_instances


@pytest.fixture(scope="module")
def endpoint(trained_artifact: Path) -> Endpoint:
    ep = Endpoint("e", trained_artifact, ServerConfig(endpoints={"e": str(trained_artifact)}))
    ep.load()
    assert ep.load_error is None
    return ep


def _score(ep: Endpoint, instances: list[Instance]) -> list[dict]:
    async def run() -> list[dict]:
        with ThreadPoolExecutor(2) as pool:
            return await score_instances(ep.current, instances, pool)  # the generation now serving

    return asyncio.run(run())


def test_a_batch_scores_as_the_predict_path_does(endpoint: Endpoint, synthetic_root: Path) -> None:
    files = sorted((synthetic_root / "widget/test").rglob("*.png"))[:3]
    instances = [Instance("widget", f.read_bytes(), return_heatmap=(i == 1)) for i, f in enumerate(files)]
    bodies = _score(endpoint, instances)
    expected = Predictor(endpoint.artifact_path).predict("widget", [f.read_bytes() for f in files])
    assert [b["anomaly_score"] for b in bodies] == pytest.approx(
        [p.anomaly_score for p in expected], rel=1e-5
    )
    assert ["heatmap_png_base64" in b for b in bodies] == [False, True, False]
    png = base64.b64decode(bodies[1]["heatmap_png_base64"])
    assert Image.open(io.BytesIO(png)).size == (64, 64)  # the map's resolution: the 64 px model's input
    for body in bodies:
        timings = body["timings_ms"]
        assert timings["total"] == pytest.approx(sum(timings[k] for k in STAGES), abs=0.01)
        assert timings["queue"] >= 0 and timings["batch_size"] >= 1


def test_an_unknown_class_is_refused_before_any_image_is_decoded(endpoint: Endpoint) -> None:
    instances = [Instance("widget", b"not an image", False), Instance("capsule", b"not an image", False)]
    with pytest.raises(HttpError) as err:
        _score(endpoint, instances)
    assert err.value.status == 422 and "capsule" in err.value.message


def test_a_corrupt_image_is_invalid_image_naming_its_instance(
    endpoint: Endpoint, synthetic_root: Path
) -> None:
    good = (synthetic_root / "widget/test/good/000.png").read_bytes()
    with pytest.raises(HttpError) as err:
        _score(endpoint, [Instance("widget", good, False), Instance("widget", good[:100], False)])
    assert err.value.status == 400 and err.value.kind == "invalid_image"
    assert err.value.message.startswith("instances[1]")


def test_a_failure_inside_the_model_is_424(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(endpoint.predictor, "score", broken)
    image = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image, format="PNG")
    with pytest.raises(HttpError) as err:
        _score(endpoint, [Instance("widget", image.getvalue(), False)])
    assert err.value.status == 424 and "out of memory" in err.value.message


def test_requests_parse_without_a_server() -> None:
    raw, is_batch = parse_request("image/png", b"\x89PNG", "class_name=bottle, return_heatmap=true")
    assert not is_batch and raw == [Instance("bottle", b"\x89PNG", True)]
    body = {"instances": [{"class_name": "a", "image_base64": base64.b64encode(b"x").decode()}]}
    batch, is_batch = parse_request("application/json", json.dumps(body).encode(), None)
    assert is_batch and batch == [Instance("a", b"x", False)]
    assert parse_request("application/json", b'{"describe": true}', None) == ([], False)
    # a batch transform job's server: raw images without an attribute are of the job's class
    assert parse_request("application/x-image", b"\x89PNG", None, "bottle") == (
        [Instance("bottle", b"\x89PNG", False)],
        False,
    )
    assert parse_request("image/png", b"\x89PNG", "class_name=cap", "bottle")[0][0].class_name == "cap"
    for content_type, payload, attrs, status in [
        ("application/json", b"{", None, 400),
        ("application/json", b'{"instances": []}', None, 400),
        ("image/png", b"\x89PNG", None, 400),
        ("text/plain", b"hi", None, 415),
    ]:
        with pytest.raises(HttpError) as err:
            parse_request(content_type, payload, attrs)
        assert err.value.status == status


def test_the_served_runtime_scores_as_the_torch_reference(
    trained_artifact: Path, synthetic_root: Path
) -> None:
    """OpenVINO serves; torch is the reference: image scores within 1e-4 relative, the same verdicts, and
    the same maps to the same tolerance, on good and scratched images."""
    pytest.importorskip("openvino")
    paths = sorted((synthetic_root / "widget/test").rglob("*.png"))
    reference = Predictor(trained_artifact, runtime="torch").predict("widget", paths)
    served = Predictor(trained_artifact, runtime="openvino")
    assert type(served.extractor(served.artifact.get("widget").config.features).embed_function).__name__ == (
        "OpenVINOFeatures"
    )
    for want, got in zip(reference, served.predict("widget", paths), strict=True):
        assert got.anomaly_score == pytest.approx(want.anomaly_score, rel=1e-4)
        assert got.is_anomaly == want.is_anomaly
        tolerance = 1e-4 * want.anomaly_score
        np.testing.assert_allclose(got.anomaly_map, want.anomaly_map, rtol=1e-4, atol=tolerance)
