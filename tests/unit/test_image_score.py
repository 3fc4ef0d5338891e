"""The image score from the smoothed anomaly map: an image is flagged exactly when some pixel of its map is
above the threshold, so a flagged image always has a region and a passed one never does."""

from __future__ import annotations

import numpy as np

from model_server.engine.calibration import Calibration
from model_server.engine.class_model import ClassModel
from model_server.engine.config import FeatureConfig, ModelConfig
from model_server.engine.maps import anomaly_maps


def _model(image_score: str) -> ClassModel:
    config = ModelConfig(features=FeatureConfig(input_size=64), image_score=image_score)
    bank = np.zeros((4, config.features.dim), np.float32)
    return ClassModel("c", config, bank, None, Calibration(1.0, 0.5, 0.99, 10))


def test_the_map_score_is_the_highest_value_of_the_smoothed_map() -> None:
    patch = np.zeros((2, 8, 8), np.float32)
    patch[0, 3, 3] = 10.0  # one hot patch: smoothing spreads it, the map's peak is below the patch's
    patch[1, 2:5, 2:5] = 6.0  # a region of nine warm patches: its map keeps most of its height
    maps = anomaly_maps(patch, (64, 64))
    by_map = _model("map").image_scores(patch)
    np.testing.assert_allclose(by_map, maps.reshape(2, -1).max(axis=1), rtol=1e-6)
    assert by_map[1] > by_map[0]  # the region outranks the lone patch; by patch it would not
    np.testing.assert_allclose(_model("patch").image_scores(patch), [10.0, 6.0])


def test_artifacts_before_the_setting_keep_the_patch_score() -> None:
    data = ModelConfig().to_dict()
    del data["image_score"]
    assert ModelConfig.from_dict(data).image_score == "patch"
    assert ModelConfig().image_score == "map"
