"""The per-class configuration search (training/search.py): what it tries, how it picks, what it records."""

import numpy as np
import pytest

from model_server.engine.config import FeatureConfig, ModelConfig
from model_server.training.samples import Sample
from model_server.training.search import (
    TIE,
    Candidate,
    SearchSpace,
    Trial,
    _split,
    best,
    search_class,
    synthetic_set,
)
from model_server.training.synthetic import KINDS


def _trial(backbone: str, size: int, proxy: float) -> Trial:
    return Trial(Candidate(backbone, size, "channels", 0.0), proxy, {}, 0.1)


def test_best_takes_the_highest_proxy_unless_a_smaller_input_is_within_the_tie() -> None:
    trials = [_trial("efficientnet_lite2", 384, 0.95), _trial("efficientnet_lite0", 384, 0.949)]
    assert best(trials).candidate.backbone == "efficientnet_lite2"  # same cost: the proxy decides
    trials.append(_trial("efficientnet_lite1", 256, 0.95 - TIE / 2))
    assert best(trials).candidate.input_size == 256  # half the pixels, within noise of the best
    trials.append(_trial("efficientnet_lite0", 320, 0.97))
    assert best(trials).candidate.input_size == 320  # a clear win is not traded for speed


def test_sizes_never_go_far_past_the_native_resolution() -> None:
    space = SearchSpace()
    assert space.sizes_for((300, 300)) == (256, 320)
    assert space.sizes_for((1024, 1024)) == space.sizes
    assert space.sizes_for((40, 60)) == (256,)  # tiny images: the smallest size stays


def test_fit_and_held_out_images_are_disjoint_and_seeded() -> None:
    samples = [Sample(f"{i}.png", 0, "good") for i in range(100)]
    fit, held = _split(samples, seed=3)
    assert not {s.name for s in fit} & {s.name for s in held}
    assert len(held) == 24 and len(fit) == 40
    assert _split(samples, seed=3) == (fit, held) and _split(samples, seed=4) != (fit, held)


def test_every_kind_is_pasted_as_often_and_images_stay_their_own_size() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40 + 8 * i, 64, 3), dtype=np.uint8) for i in range(6)]
    out, kinds = synthetic_set(images, seed=0)
    assert [o.shape for o in out[::3]] == [i.shape for i in images]
    assert {k: kinds.count(k) for k in KINDS} == dict.fromkeys(KINDS, 3)
    assert all(not np.array_equal(o, images[i // 3]) for i, o in enumerate(out))


def _part(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    img = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 400, 150 + 30 * np.sin(xx / 3.0), 30)
    img = img + rng.normal(scale=4.0, size=img.shape)
    return np.clip(np.stack([img] * 3, -1), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def searched():
    train = [Sample(f"train/good/{i}.png", 0, "good", loader=lambda i=i: _part(i)) for i in range(15)]
    config = ModelConfig(features=FeatureConfig(input_size=64), coreset_ratio=0.25)
    space = SearchSpace(backbones=("efficientnet_lite0", "mobilenetv2_100"), sizes=(64,))
    return search_class(train, config, space, progress=False), config


def test_search_tries_every_candidate_and_picks_by_the_rule(searched) -> None:
    result, config = searched
    labels = {t.candidate.label for t in result.trials}
    assert len(labels) == len(result.trials) == 2 * 2 * 3  # backbones x weightings x poolings
    assert result.chosen is best(result.trials)
    assert all(0.5 <= t.proxy <= 1.0 and set(t.per_kind) == set(KINDS) for t in result.trials)
    chosen = result.config
    assert chosen.features.backbone == result.chosen.candidate.backbone
    assert chosen.features.layer_weighting == result.chosen.candidate.layer_weighting
    assert chosen.score_top_fraction == result.chosen.candidate.score_top_fraction
    assert chosen.features.source_size == (64, 64) and chosen.coreset_ratio == config.coreset_ratio
    doc = result.to_dict()
    assert doc["chosen"]["label"] == result.chosen.candidate.label and len(doc["candidates"]) == 12
    assert (result.n_fit, result.n_held_out, result.n_synthetic) == (10, 5, 15)


def test_synthetic_anomalies_score_above_clean_held_out_images(searched) -> None:
    """On a clean synthetic part pasted defects are easy: a proxy near chance would mean a broken judge."""
    result, _ = searched
    assert result.chosen.proxy > 0.8


def test_the_fast_profile_keeps_the_search_to_sizes_within_the_latency_budget() -> None:
    from argparse import Namespace

    from model_server import defaults
    from model_server.commands import search_space

    unset = {"search": True, "backbone": None, "input_size": None, "layer_weighting": None}
    quality = search_space(Namespace(**unset, score_top_fraction=None, profile="quality"))
    fast = search_space(Namespace(**unset, score_top_fraction=None, profile="fast"))
    assert max(quality.sizes) > defaults.FAST_MAX_INPUT_SIZE
    assert fast.sizes and max(fast.sizes) == defaults.FAST_MAX_INPUT_SIZE
    assert fast.backbones == quality.backbones  # only the input size is held back
