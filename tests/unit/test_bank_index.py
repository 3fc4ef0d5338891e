"""The inverted-file bank index: searched through it, a bank scores as searched whole wherever training
found it agrees, training keeps it only then, and the artifact carries it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_server.engine.artifact import load_artifact, save_artifact
from model_server.engine.calibration import Calibration
from model_server.engine.class_model import ClassModel
from model_server.engine.config import FeatureConfig, ModelConfig
from model_server.engine.memory_bank import BankIndex, NearestNeighbourScorer
from model_server.training import bank_index
from model_server.training.bank_index import choose_index, fit_centroids
from model_server.training.feature_store import FeatureStore
from model_server.training.fit import memory_bank


def _clustered(n_images: int, patches: int, dim: int = 16, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Patch features [n_images, 1, patches, dim] around shared cluster centres (parts look alike)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32) * 8
    picks = rng.integers(0, clusters, (n_images, patches))
    return (centres[picks] + rng.normal(size=(n_images, patches, dim)).astype(np.float32) * 0.3)[:, None]


def test_an_inverted_file_finds_the_exhaustive_neighbours_with_enough_probes() -> None:
    patches = _clustered(1, 3500)[0, 0]
    bank, queries = patches[:3000], patches[3000:]  # new patches of the same kind of part
    index = BankIndex(fit_centroids(bank, 40, seed=0), probes=8)
    exact, _ = NearestNeighbourScorer(bank).search(queries)
    indexed, idx = NearestNeighbourScorer(bank, index=index).search(queries)
    assert (indexed >= exact - 1e-4).all()  # it can only miss a neighbour, never find a closer one
    assert np.mean(np.isclose(indexed, exact, rtol=1e-3)) > 0.99
    np.testing.assert_allclose(np.linalg.norm(queries - bank[idx], axis=1), indexed, rtol=1e-4)


def test_queries_whose_lists_hold_too_few_patches_are_searched_whole() -> None:
    bank = _clustered(1, 200)[0, 0]
    index = BankIndex(fit_centroids(bank, 20, seed=0), probes=1)
    dist, idx = NearestNeighbourScorer(bank, index=index).neighbours(bank[:5], 150)  # more than one list has
    exact, exact_idx = NearestNeighbourScorer(bank).neighbours(bank[:5], 150)
    assert (idx >= 0).all()
    np.testing.assert_allclose(dist, exact, rtol=1e-4, atol=1e-4)


def _trained(n_images: int, patches: int) -> tuple[ClassModel, FeatureStore, np.ndarray]:
    feats = _clustered(n_images, patches)
    store = FeatureStore.from_array(feats)
    config = ModelConfig(coreset_ratio=0.25, projection_dim=None)
    mb = memory_bank(store, config)
    return ClassModel("c", config, mb.bank, None, Calibration(1.0, 0.0, 0.99, 1)), store, mb.source


def test_training_keeps_the_fewest_probes_that_match_held_out_scores() -> None:
    model, store, source = _trained(40, 400)  # a bank of 4,000 patches
    try:
        index, report = choose_index(model, store, source, np.arange(40), seed=0)
    finally:
        store.close()
    assert index is not None and report["kind"] == "ivf" and index.probes == report["probes"]
    assert index.lists == bank_index.index_lists(len(model.bank))
    (kept,) = [t for t in report["tried"] if t["probes"] == index.probes]
    assert kept["max_image_rise"] <= bank_index.IMAGE_TOLERANCE
    assert all(
        t["max_image_rise"] > bank_index.IMAGE_TOLERANCE or t["patches_equal"] < bank_index.PATCH_AGREEMENT
        for t in report["tried"]
        if t["probes"] < index.probes
    )  # fmt: skip - every smaller count fell short


def test_a_probe_count_between_the_doublings_is_kept_when_it_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """4 probes miss, 8 match: 6 is tried and kept where it matches (each probe costs kNN time)."""
    made: list[int] = []

    class Recording(BankIndex):
        def __init__(self, centroids: np.ndarray, probes: int) -> None:
            made.append(probes)
            super().__init__(centroids, probes)

    def agreement(exhaustive: np.ndarray, indexed: np.ndarray, model: ClassModel) -> dict:
        return {"max_image_rise": 0.0 if made[-1] >= 6 else 1.0, "patches_equal": 1.0}

    monkeypatch.setattr(bank_index, "BankIndex", Recording)
    monkeypatch.setattr(bank_index, "agreement", agreement)
    model, store, source = _trained(40, 400)
    try:
        index, report = choose_index(model, store, source, np.arange(40), seed=0)
    finally:
        store.close()
    assert [t["probes"] for t in report["tried"]] == [1, 2, 4, 8, 6]
    assert index is not None and index.probes == report["probes"] == 6


def test_small_banks_and_disagreeing_indexes_stay_exhaustive(monkeypatch: pytest.MonkeyPatch) -> None:
    model, store, source = _trained(8, 400)  # 800 patches: under MIN_INDEXED_BANK
    try:
        assert choose_index(model, store, source, np.arange(8), seed=0)[0] is None
        monkeypatch.setattr(bank_index, "MIN_INDEXED_BANK", 100)
        monkeypatch.setattr(bank_index, "IMAGE_TOLERANCE", -1.0)  # nothing can agree
        index, report = choose_index(model, store, source, np.arange(8), seed=0)
    finally:
        store.close()
    assert index is None and report["kind"] == "exhaustive" and report["tried"]


def test_the_artifact_carries_the_index(tmp_path: Path) -> None:
    bank = _clustered(1, 600, dim=152)[0, 0]
    index = BankIndex(fit_centroids(bank, 24, seed=0), probes=3)
    config = ModelConfig(features=FeatureConfig(backbone="efficientnet_lite0", input_size=64))  # 152 channels
    model = ClassModel("c", config, bank, None, Calibration(2.0, 1.0, 0.99, 5), {"class_name": "c"}, index)
    save_artifact(
        tmp_path / "m.tar.gz",
        {"c": model, "plain": ClassModel("plain", config, bank, None, Calibration(2.0, 1.0, 0.99, 5))},
    )
    loaded = load_artifact(tmp_path / "m.tar.gz")
    got = loaded.get("c").index
    assert got is not None and got.probes == 3 and np.array_equal(got.centroids, index.centroids)
    assert loaded.get("plain").index is None
    queries = bank[:50] + 0.1
    np.testing.assert_array_equal(loaded.get("c").scorer.search(queries)[0], model.scorer.search(queries)[0])


def test_a_model_given_its_index_after_scoring_searches_through_it() -> None:
    """Training sets the index once the bank exists; a scorer built before must not keep searching whole."""
    model, store, _ = _trained(8, 400)
    store.close()
    assert model.scorer.index_spec is None
    model.index = BankIndex(fit_centroids(model.bank, 10, seed=0), probes=2)
    assert model.scorer.index_spec is model.index
