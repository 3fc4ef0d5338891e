"""SoftPatch outlier scoring: LOF equals scikit-learn's, and planted defects are filtered out."""

import numpy as np
import pytest
import torch
from sklearn.neighbors import LocalOutlierFactor

from model_server.engine.config import FeatureConfig, ModelConfig
from model_server.training.feature_store import FeatureStore
from model_server.training.fit import memory_bank
from model_server.training.softpatch import (
    local_outlier_factor,
    mahalanobis_to_own_gaussian,
    nearest_other_distance,
    patch_outlier_scores,
    select_clean,
)


@pytest.mark.parametrize("k", [1, 3, 6, 20])
def test_lof_matches_scikit_learn(k: int) -> None:
    rng = np.random.default_rng(k)
    sets = rng.normal(size=(4, 60, 5)).astype(np.float64)
    sets[:, :5] += 6.0  # a small far cluster, where LOF differs from a plain distance
    ours = local_outlier_factor(torch.from_numpy(sets), k).numpy()
    for b in range(len(sets)):
        ref = LocalOutlierFactor(n_neighbors=k).fit(sets[b])
        np.testing.assert_allclose(ours[b], -ref.negative_outlier_factor_, rtol=1e-6)


def test_nearest_and_gaussian_against_numpy() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 30, 3))
    full = np.sqrt(((x[0, :, None] - x[0, None]) ** 2).sum(-1))
    np.fill_diagonal(full, np.inf)
    np.testing.assert_allclose(nearest_other_distance(torch.from_numpy(x)).numpy()[0], full.min(1))
    cov = np.cov(x[0].T) + 0.01 * np.eye(3)
    d = x[0] - x[0].mean(0)
    ref = np.sqrt(np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov), d))
    np.testing.assert_allclose(mahalanobis_to_own_gaussian(torch.from_numpy(x)).numpy()[0], ref, rtol=1e-6)


def _planted(n_images: int = 30, positions: int = 16, dim: int = 16, seed: int = 0):
    """Good patches vary a little around a per-position pattern; a few images carry a far-off 'defect'."""
    rng = np.random.default_rng(seed)
    pattern = rng.normal(size=(positions, dim)) * 3
    feats = pattern[None] + rng.normal(scale=0.3, size=(n_images, positions, dim))
    defects = [(3, 5), (11, 0), (17, 9), (25, 14)]
    for img, pos in defects:
        feats[img, pos] += rng.normal(size=dim) * 4
    return feats.astype(np.float32), defects


@pytest.mark.parametrize("method", ["lof", "nearest", "gaussian"])
def test_planted_outliers_score_highest(method: str) -> None:
    feats, defects = _planted()
    scores = patch_outlier_scores(feats, method=method, lof_k=6, projection_dim=None)
    top = np.argsort(scores.ravel())[::-1][: len(defects)]
    planted = {img * feats.shape[1] + pos for img, pos in defects}
    assert set(top.tolist()) == planted


def _bank(features: np.ndarray, config: ModelConfig) -> tuple[np.ndarray, np.ndarray | None, dict]:
    store = FeatureStore.from_array(features)
    try:
        mb = memory_bank(store, config)
    finally:
        store.close()
    return mb.bank, mb.weights, mb.stats


def test_memory_bank_excludes_planted_defects_and_weights_the_rest() -> None:
    feats, defects = _planted()
    n, p, d = feats.shape
    grid = feats.reshape(n, 4, 4, d)
    cfg = ModelConfig(model="softpatch", features=FeatureConfig(), coreset_ratio=0.5, projection_dim=128)
    bank, weights, stats = _bank(grid, cfg)
    for img, pos in defects:
        defect = feats[img, pos]
        assert np.abs(bank - defect).sum(axis=1).min() > 1e-3, "a planted defect entered the memory bank"
    assert weights is not None and weights.shape == (len(bank),) and (weights > 0).all()
    assert stats["n_filtered"] == int(round(0.15 * n * p))
    # PatchCore on the same features keeps the defects: they are the farthest points, picked first.
    pc_bank, pc_weights, _ = _bank(grid, ModelConfig(model="patchcore", coreset_ratio=0.5))
    assert pc_weights is None
    assert any(np.abs(pc_bank - feats[i, q]).sum(axis=1).min() < 1e-3 for i, q in defects)


def test_lof_k_is_honoured() -> None:
    feats, _ = _planted()
    a = patch_outlier_scores(feats, lof_k=3, projection_dim=None)
    b = patch_outlier_scores(feats, lof_k=10, projection_dim=None)
    assert not np.allclose(a, b)


def test_select_clean_drops_the_top_fraction() -> None:
    scores = np.arange(100, dtype=float).reshape(10, 10)
    keep = select_clean(scores, 0.15)
    assert keep.sum() == 85 and not keep.ravel()[-15:].any()
    assert select_clean(scores, 0.0).all()
