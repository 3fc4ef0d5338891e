"""Reviewed escapes as a labelled set: a version that misses an escape another version catches is named, and
promotion refuses it (the versions' scoring is faked here; the end-to-end test scores real artifacts)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from infra.lifecycle import promote, reviewed
from ivadas_functions import promotion


class FakePredictor:
    """Flags the images its artifact 'knows': the path's name lists them."""

    def __init__(self, path: Path) -> None:
        self.flags = set(Path(path).name.split("+"))
        self.artifact = SimpleNamespace(classes={"bottle": None})

    def predict(self, class_name: str, images: list[bytes]) -> list:
        return [SimpleNamespace(is_anomaly=images[0].decode() in self.flags)]


@pytest.fixture
def escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    found = [reviewed.Reviewed({"key": k, "review": {"review_id": k}}, k.encode()) for k in ("a", "b", "c")]
    monkeypatch.setattr(reviewed, "reviewed", lambda ctx, class_name, kind, since=None: (found, 1))
    monkeypatch.setattr("model_server.engine.predictor.Predictor", FakePredictor)


def test_escape_check_names_what_each_version_forgets(escapes) -> None:  # noqa: ANN001
    doc = reviewed.escape_check(None, "bottle", {"v1": Path("a+b"), "v2": Path("b")})
    assert doc["escapes"] == 3 and doc["without_image"] == 1
    assert doc["versions"]["v1"] == {"caught": 2, "missed": ["c"], "forgotten": []}
    assert doc["versions"]["v2"] == {"caught": 1, "missed": ["a", "c"], "forgotten": ["a"]}


def test_promotion_refuses_a_candidate_that_forgets_an_escape(escapes, monkeypatch) -> None:  # noqa: ANN001
    production = SimpleNamespace(name="patchcore-1", model_data_url="a+b")
    stored: list[dict] = []
    s3 = SimpleNamespace(put_object=lambda **put: stored.append(put))
    ctx = SimpleNamespace(cache_dir=Path("/tmp"), stage="test", model_bucket="b", s3=s3)
    worse = SimpleNamespace(name="patchcore-2", model_data_url="b")
    refusals, checked = promote.ScoredEscapes(ctx).check("bottle", worse, production)
    assert refusals == ["class bottle: misses 1 reviewed escape(s) patchcore-1 catches: a"]
    assert checked.startswith("bottle: 3 reviewed escapes")
    # kept for the API's gate, which cannot score: the same verdict from the stored scoring
    assert stored[-1]["Key"] == "test/comparisons/escapes/bottle/patchcore-1--patchcore-2.json"
    assert (
        promotion.escape_refusals(json.loads(stored[-1]["Body"]), "bottle", worse, production)[0] == refusals
    )
    better = SimpleNamespace(name="patchcore-3", model_data_url="a+b+c")
    assert promote.ScoredEscapes(ctx).check("bottle", better, production)[0] == []
