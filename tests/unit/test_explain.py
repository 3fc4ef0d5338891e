"""Explanations (engine/explain.py): the nearest good patch of a flagged region really is that bank patch of
that training image, good images get none, and older artifacts predict without them."""

from __future__ import annotations

import base64
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_server.engine.artifact import load_artifact, save_artifact
from model_server.engine.explain import NO_PROVENANCE, cell_window
from model_server.engine.images import read_image
from model_server.engine.predictor import Predictor


def test_the_nearest_good_patch_is_the_bank_patch_of_that_training_image(
    trained_artifact: Path, synthetic_root: Path
) -> None:
    predictor = Predictor(trained_artifact)
    model = predictor.artifact.get("widget")
    cfg = model.config.features
    (pred,) = predictor.predict("widget", [synthetic_root / "widget/test/scratch/000.png"], explain=True)
    assert pred.is_anomaly and pred.explanations
    first = pred.explanations[0]
    near = first["nearest_good"]
    # the stated bank patch is the stated cell of the stated training image: its features are that row
    extractor = predictor.extractor(cfg)
    train = read_image(synthetic_root / "widget" / near["image_id"])
    canvas, placed = extractor.place(train)
    feats = extractor([train]).numpy()[0]
    np.testing.assert_allclose(feats[near["row"], near["col"]], model.bank[near["bank_index"]], atol=1e-4)
    # ... and the nearest one to the peak patch, at the stated distance (its score)
    (peak_feats,) = extractor([read_image(synthetic_root / "widget/test/scratch/000.png")]).numpy()
    query = peak_feats[first["row"], first["col"]]
    dist = np.linalg.norm(model.bank - query, axis=1)
    assert int(np.argmin(dist)) == near["bank_index"]
    assert near["distance"] == pytest.approx(float(dist.min()), rel=1e-3)
    # the crop is that training image's region (through a JPEG thumbnail: close, not equal)
    y0, y1, x0, x1 = cell_window(near["row"], near["col"], cfg.grid, cfg.canvas, placed)
    crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(near["crop_png_base64"]))).convert("RGB"))
    expected = canvas[y0:y1, x0:x1]
    assert crop.shape == expected.shape
    assert np.abs(crop.astype(int) - expected).mean() < 6
    # the box is that region in the training image's own pixels (96 px image on a 64 px canvas)
    scale = train.shape[0] / placed[0]
    assert near["box"] == {"x": int(x0 * scale), "y": int(y0 * scale),
                           "width": round((x1 - x0) * scale), "height": round((y1 - y0) * scale)}  # fmt: skip


def test_good_images_and_unasked_predictions_carry_no_explanations(
    trained_artifact: Path, synthetic_root: Path
) -> None:
    predictor = Predictor(trained_artifact)
    good = synthetic_root / "widget/test/good/000.png"
    bad = synthetic_root / "widget/test/scratch/000.png"
    g, b = predictor.predict("widget", [good, bad], explain=True)
    assert not g.is_anomaly and g.to_dict()["explanations"] == [] and b.to_dict()["explanations"]
    assert "explanations" not in predictor.predict("widget", [bad])[0].to_dict()


def test_an_older_artifact_predicts_without_explanations(
    trained_artifact: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    model = load_artifact(trained_artifact).get("widget")
    old = save_artifact(tmp_path / "old.tar.gz", {"widget": replace(model, provenance=None)})
    assert old.classes["widget"].provenance is None
    predictor = Predictor(tmp_path / "old.tar.gz")
    assert predictor.artifact.get("widget").provenance is None
    (pred,) = predictor.predict("widget", [synthetic_root / "widget/test/scratch/000.png"], explain=True)
    body = pred.to_dict()
    assert pred.is_anomaly and body["regions"]
    assert body["explanations"] == [] and body["explanations_note"] == NO_PROVENANCE
