"""Explanations on a real MVTec AD bottle defect (skipped when the data is absent): trained on a subset of
bottle's good images at 256 px to stay quick, through save and load as served."""

from __future__ import annotations

import base64
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_server.engine.artifact import save_artifact
from model_server.engine.config import FeatureConfig, ModelConfig
from model_server.engine.explain import cell_window
from model_server.engine.features import FeatureExtractor
from model_server.engine.images import read_image
from model_server.engine.predictor import Predictor
from model_server.training.datasets import load_split
from model_server.training.fit import train_class, with_class_geometry
from model_server.training.samples import read_mask
from tests.paths import require_bottle

pytestmark = [pytest.mark.mvtec, pytest.mark.slow]


def test_a_bottle_defect_is_explained_by_good_bottle_patches(tmp_path: Path) -> None:
    root = require_bottle()
    split = load_split(root, "bottle")
    split = replace(split, train=split.train[:24])
    features = FeatureConfig(backbone="efficientnet_lite0", input_size=256)
    config = with_class_geometry(ModelConfig(features=features, coreset_ratio=0.05), split.train)
    model = train_class(split, config, FeatureExtractor(config.features), progress=False)
    save_artifact(tmp_path / "bottle.tar.gz", {"bottle": model})
    predictor = Predictor(tmp_path / "bottle.tar.gz")

    defect = root / "bottle/test/broken_large/000.png"
    (pred,) = predictor.predict("bottle", [defect], explain=True)
    assert pred.is_anomaly and pred.explanations
    first = pred.explanations[0]
    mask = read_mask(root / "bottle/ground_truth/broken_large/000_mask.png")
    box = first["patch_box"]  # the explained peak sits on the broken part
    assert mask[box["y"] : box["y"] + box["height"], box["x"] : box["x"] + box["width"]].any()

    near = first["nearest_good"]
    assert near["image_id"] in {s.name for s in split.train}
    cfg = predictor.artifact.get("bottle").config.features
    canvas, placed = predictor.extractor(cfg).place(read_image(root / "bottle" / near["image_id"]))
    y0, y1, x0, x1 = cell_window(near["row"], near["col"], cfg.grid, cfg.canvas, placed)
    crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(near["crop_png_base64"]))).convert("RGB"))
    assert crop.shape == canvas[y0:y1, x0:x1].shape
    assert np.abs(crop.astype(int) - canvas[y0:y1, x0:x1]).mean() < 6  # a JPEG thumbnail of that region
    assert near["box"]["width"] > crop.shape[1]  # in the 900 px image's pixels

    (good,) = predictor.predict("bottle", [root / "bottle/test/good/000.png"], explain=True)
    assert not good.is_anomaly and good.explanations == []
