"""Leave-one-image-out threshold scores, the feature store and the streamed memory bank of training/fit.py."""

import numpy as np

from model_server.engine.calibration import Calibration
from model_server.engine.class_model import ClassModel
from model_server.engine.config import ModelConfig
from model_server.training.feature_store import FeatureStore
from model_server.training.fit import memory_bank
from model_server.training.leave_one_out import leave_one_out_scores


def test_leave_one_out_scores_an_image_as_if_it_were_new() -> None:
    """Image 5 alone shows a pattern: in the bank it matches itself (score 0), left out it is far from every
    other image. Ordinary images stay close to the others."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(12, 4, 4, 8)).astype(np.float32) * 0.1
    feats[5, 1, 1] += 25.0  # a patch no other image has
    store = FeatureStore.from_array(feats)
    try:
        mb = memory_bank(store, ModelConfig(coreset_ratio=0.5, projection_dim=None))
        model = ClassModel("c", ModelConfig(), mb.bank, mb.weights, Calibration(1.0, 0.0, 0.99, 1))
        in_bank = model.image_scores(model.patch_scores(feats))
        loo = leave_one_out_scores(model, store, mb.source, np.arange(12))
    finally:
        store.close()
    assert in_bank[5] < 1.0 and loo[5] > 20.0
    others = np.delete(loo, 5)
    assert others.max() < 1.0 and (others >= np.delete(in_bank, 5) - 1e-6).all()


def test_feature_store_reads_back_what_was_written_in_batches() -> None:
    feats = np.random.default_rng(2).normal(size=(19, 3, 2, 5)).astype(np.float32)
    store = FeatureStore(19, (3, 2), 5)
    try:
        for start in range(0, 19, 4):
            store.write(start, feats[start : start + 4])
        np.testing.assert_array_equal(np.concatenate([b for _, b in store.batches(6)]), feats)
        np.testing.assert_array_equal(store.read(7, 9), feats[7:9])
    finally:
        store.close()
