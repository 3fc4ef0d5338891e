"""The memory bank grown per class: nested coreset levels, the stopping rule, and the card's record."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from model_server import defaults
from model_server.training import bank_growth
from model_server.training.bank_growth import MIN_FALL, grow, ladder
from model_server.training.sampler import StreamingCoreset


def test_ladder_doubles_up_to_the_largest_ratio() -> None:
    assert ladder(0.01, 0.08) == pytest.approx([0.01, 0.02, 0.04, 0.08])
    assert ladder(0.01, 0.05) == pytest.approx([0.01, 0.02, 0.04, 0.05])
    assert ladder(0.01, None) == [0.01] and ladder(0.25, 0.08) == [0.25]


def test_coreset_levels_are_nested_and_the_largest_is_the_coreset() -> None:
    """Each smaller bank is the first picks of the larger one, so growing needs one sampling; the largest
    level is what a coreset of that ratio alone gives."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 16)).astype(np.float32) * 10
    feats = centres[np.repeat(np.arange(30), 400)] + rng.normal(size=(12_000, 16)).astype(np.float32) * 0.1

    def sampled() -> StreamingCoreset:
        coreset = StreamingCoreset(0.08, projection_dim=None, chunk_patches=2048, group_patches=300)
        coreset.add(feats, np.arange(len(feats)))
        return coreset

    levels = sampled().finish_levels([0.01, 0.02, 0.04, 0.08])
    sizes = [len(bank) for bank, _ in levels]
    assert sizes == sorted(sizes) and abs(sizes[0] - 120) <= 5 and abs(sizes[-1] - 960) <= 5
    for (_, small), (_, large) in zip(levels, levels[1:], strict=False):
        assert set(small) <= set(large)
    for bank, source in levels:
        np.testing.assert_array_equal(bank, feats[source])
    alone, source = sampled().finish()
    np.testing.assert_array_equal(levels[-1][1], source)
    np.testing.assert_array_equal(levels[-1][0], alone)
    with pytest.raises(ValueError, match="levels"):
        sampled().finish_levels([0.16])


def _fit_with_tails(tails: list[float]):  # noqa: ANN202
    def fit(i: int) -> tuple[str, np.ndarray, int]:
        return f"bank{i}", np.full(20, tails[i]), 100 * 2**i

    return fit


def test_growth_stops_at_the_first_doubling_that_barely_lowers_the_good_tail() -> None:
    ratios = ladder(0.01, 0.08)
    falls_then_flat = [30.0, 29.0, 28.0, 28.0 * (1 - MIN_FALL / 2)]
    chosen, model, scores, steps = grow(ratios, _fit_with_tails(falls_then_flat))
    assert (chosen, model) == (2, "bank2") and scores[0] == 28.0
    assert [s.coreset_ratio for s in steps] == pytest.approx([0.01, 0.02, 0.04, 0.08])
    assert steps[-1].fall == pytest.approx(MIN_FALL / 2, rel=1e-3)

    chosen, model, _, steps = grow(ratios, _fit_with_tails([30.0, 29.9, 20.0, 10.0]))
    assert (chosen, model, len(steps)) == (0, "bank0", 2)  # the second step fell too little: stop there

    chosen, _, _, steps = grow(ratios, _fit_with_tails([40.0, 36.0, 32.0, 28.0]))
    assert chosen == 3 and len(steps) == 4  # still falling at the largest ratio: the largest is kept


def test_the_tail_is_the_mean_of_the_highest_scores() -> None:
    scores = np.arange(100, dtype=float)
    assert bank_growth.good_tail(scores) == pytest.approx(np.mean(np.arange(90, 100)))
    assert bank_growth.good_tail(np.array([1.0, 5.0, 3.0, 4.0])) == pytest.approx(4.0)


def _args(*argv: str) -> argparse.Namespace:
    from infra.cli import train_parser

    return train_parser().parse_args(["--data-root", "d", "--out", "o", *argv])


def test_profiles_and_flags_decide_the_bank_and_the_backbone() -> None:
    from model_server.commands import model_config

    quality = model_config(_args())
    assert quality.features.backbone == defaults.BACKBONE
    assert (quality.coreset_ratio, quality.max_coreset_ratio) == (
        defaults.CORESET_RATIO,
        defaults.MAX_CORESET_RATIO,
    )
    fast = model_config(_args("--profile", "fast"))
    assert fast.features.backbone == defaults.FAST_BACKBONE and fast.max_coreset_ratio is None
    fixed = model_config(_args("--coreset-ratio", "0.05"))
    assert (fixed.coreset_ratio, fixed.max_coreset_ratio) == (0.05, None)  # a ratio given is the bank's


def test_the_input_size_follows_the_images_unless_given() -> None:
    from model_server.commands import class_input_size

    assert class_input_size(_args(), (300, 300)) == 320  # ELPV cells: 384 would enlarge them past 1.25x
    assert class_input_size(_args(), (900, 900)) == defaults.INPUT_SIZE
    assert class_input_size(_args(), (100, 120)) == min(defaults.SIZES)
    assert class_input_size(_args("--input-size", "448"), (300, 300)) is None
    assert class_input_size(_args("--preset", "official"), (900, 900)) is None  # 224 px, as the paper


def test_the_official_preset_needs_its_weights() -> None:
    from model_server.commands import model_config
    from model_server.errors import IvadasError

    with pytest.raises(IvadasError, match="needs --weights"):
        model_config(_args("--preset", "official"))
    with pytest.raises(IvadasError, match="ships with its weights"):
        model_config(_args("--weights", "w.pth"))


def test_a_trained_class_keeps_the_bank_its_good_images_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training tries the ladder, keeps the step the rule chose, and its card says what each step gave."""
    from model_server.engine.config import FeatureConfig, ModelConfig
    from model_server.engine.features import FeatureExtractor
    from model_server.training.fit import train_class, with_class_geometry
    from model_server.training.samples import ClassSplit, Sample

    monkeypatch.setattr(bank_growth, "MIN_FALL", -1.0)  # every step "falls enough": the largest is kept
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(8)]
    samples = [
        Sample(f"train/good/{i}.png", 0, "good", loader=lambda im=im: im) for i, im in enumerate(images)
    ]
    config = ModelConfig(features=FeatureConfig(input_size=64), coreset_ratio=0.05, max_coreset_ratio=0.2)
    config = with_class_geometry(config, samples)
    model = train_class(
        ClassSplit("noise", samples, [], "synthetic"), config, FeatureExtractor(config.features), False
    )
    growth = model.card["training"]["bank_growth"]
    assert [s["coreset_ratio"] for s in growth["steps"]] == pytest.approx([0.05, 0.1, 0.2])
    assert growth["chosen_ratio"] == pytest.approx(0.2)
    assert len(model.bank) == growth["steps"][-1]["bank_patches"] == model.card["training"]["bank_patches"]
    assert growth["steps"][0]["bank_patches"] < len(model.bank)
