"""Metrics: AUROC/F1 against sklearn and brute force; AUPRO against hand-computed values and brute force."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from model_server.training.metrics import (
    aupro,
    f1_max,
    image_auroc,
    pixel_auroc,
    pro_curve,
    roc_curve_points,
    summarise,
)

# ---------------------------------------------------------------------------------------------------------
# Image AUROC, ROC points, F1-max
# ---------------------------------------------------------------------------------------------------------


def test_image_auroc_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=200) + labels
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert image_auroc(labels.astype(bool).tolist(), scores.tolist()) == pytest.approx(
        roc_auc_score(labels, scores), abs=1e-12
    )


def test_image_auroc_none_for_one_class() -> None:
    assert image_auroc([0, 0, 0], [0.1, 0.5, 0.2]) is None
    assert image_auroc([1, 1], [0.1, 0.5]) is None


def test_image_auroc_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        image_auroc([0, 1], [0.1])
    with pytest.raises(ValueError):
        image_auroc([0, 1], [0.1, np.nan])


def test_roc_curve_points() -> None:
    fpr, tpr = roc_curve_points([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert fpr[0] == 0.0 and tpr[0] == 0.0 and fpr[-1] == 1.0 and tpr[-1] == 1.0
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)


def _brute_f1(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    pred = scores >= threshold
    tp = np.sum(pred & labels)
    fp = np.sum(pred & ~labels)
    fn = np.sum(~pred & labels)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


@pytest.mark.parametrize("seed", range(5))
def test_f1_max_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random(150) < 0.3
    scores = np.round(rng.normal(size=150) + 0.8 * labels, 1)  # rounded: many ties
    best = max(_brute_f1(labels, scores, t) for t in np.unique(scores))
    f1, threshold = f1_max(labels, scores)
    assert f1 == pytest.approx(best, abs=1e-12)
    assert _brute_f1(labels, scores, threshold) == pytest.approx(best, abs=1e-12)


def test_f1_max_hand_made() -> None:
    # First case: threshold 0.8 separates perfectly (F1 = 1). Second case, by threshold: 0.9 -> no TP, F1 0;
    # 0.8 -> P = R = 1/2, F1 = 0.5; 0.7 -> P = 2/3, R = 1, F1 = 0.8; 0.1 -> P = 1/2, R = 1, F1 = 2/3.
    f1, threshold = f1_max([0, 0, 1, 1], [0.1, 0.7, 0.9, 0.8])
    assert f1 == pytest.approx(1.0) and threshold == pytest.approx(0.8)
    f1, threshold = f1_max([0, 1, 0, 1], [0.1, 0.7, 0.9, 0.8])
    assert f1 == pytest.approx(0.8) and threshold == pytest.approx(0.7)


def test_f1_max_without_positives_is_zero() -> None:
    f1, _ = f1_max([0, 0, 0], [0.1, 0.2, 0.3])
    assert f1 == 0.0


# ---------------------------------------------------------------------------------------------------------
# Pixel AUROC
# ---------------------------------------------------------------------------------------------------------


def test_pixel_auroc_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    masks = rng.random((4, 16, 20)) < 0.1
    maps = (rng.random((4, 16, 20)) + 0.5 * masks).astype(np.float32)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)
    # MVTec masks come as 0/255 images.
    assert pixel_auroc(masks.astype(np.uint8) * 255, maps) == pytest.approx(expected, abs=1e-12)


def test_pixel_auroc_none_cases() -> None:
    maps = np.random.default_rng(0).random((2, 4, 4))
    assert pixel_auroc(np.zeros((2, 4, 4), bool), maps) is None
    assert pixel_auroc(np.ones((2, 4, 4), bool), maps) is None


def test_pixel_metrics_reject_shape_mismatch() -> None:
    with pytest.raises(ValueError):
        pixel_auroc(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError):
        aupro(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5)))


# ---------------------------------------------------------------------------------------------------------
# AUPRO: hand-made cases
# ---------------------------------------------------------------------------------------------------------


def test_aupro_perfect_map_is_one() -> None:
    masks = np.zeros((3, 10, 10), bool)
    masks[0, 2:5, 2:5] = True
    masks[1, 6:9, 1:3] = True  # image 2 is good
    maps = masks.astype(np.float32)
    # Curve: (0, 0) -> (0, 1) at threshold 1 -> (1, 1) at threshold 0: area 0.3 on [0, 0.3].
    assert aupro(masks, maps) == pytest.approx(1.0)
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(1.0)


def test_aupro_region_found_after_all_normals() -> None:
    # Two regions of 4 pixels each and 92 normal pixels. Region A scores 1, normals 0.5, region B 0.2.
    # Curve: (0, 0) -> (0, 0.5) [A found] -> (1, 0.5) [all normals] -> (1, 1) [B found].
    # Area on [0, 0.3] = 0.3 * 0.5, normalised: 0.5.
    masks = np.zeros((1, 10, 10), bool)
    masks[0, 0:2, 0:2] = True
    masks[0, 7:9, 7:9] = True
    maps = np.full((1, 10, 10), 0.5, np.float32)
    maps[0, 0:2, 0:2] = 1.0
    maps[0, 7:9, 7:9] = 0.2
    assert aupro(masks, maps) == pytest.approx(0.5)
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.5)


def _interpolation_case() -> tuple[np.ndarray, np.ndarray]:
    # One 2x2 region and exactly 100 normal pixels (4 x 26 image). Two region pixels score 0.9, ten normals
    # 0.8, and the other two region pixels tie with the 90 remaining normals at 0.0.
    masks = np.zeros((1, 4, 26), bool)
    masks[0, 1:3, 1:3] = True
    maps = np.zeros((1, 4, 26), np.float32)
    maps[0, 1, 1:3] = 0.9
    maps[0, 0, 10:20] = 0.8
    return masks, maps


def test_aupro_interpolates_at_fpr_limit() -> None:
    # Curve: (0, 0) -> (0, 0.5) [t=0.9] -> (0.1, 0.5) [t=0.8] -> (1, 1) [t=0: the tie adds both at once].
    # PRO at FPR 0.3 on the last segment: 0.5 + 0.5 * 0.2 / 0.9 = 0.5 + 1/9.
    # Area on [0, 0.3] = 0.1 * 0.5 + 0.2 * (0.5 + 0.5 + 1/9) / 2 = 0.05 + 1/9 = 29/180; / 0.3 = 29/54.
    masks, maps = _interpolation_case()
    assert aupro(masks, maps) == pytest.approx(29 / 54, abs=1e-12)
    # Limit exactly on a curve point: area 0.1 * 0.5 on [0, 0.1], normalised 0.5.
    assert aupro(masks, maps, fpr_limit=0.1) == pytest.approx(0.5, abs=1e-12)
    # Whole curve: 0.05 + 0.9 * (0.5 + 1) / 2 = 0.725.
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.725, abs=1e-12)
    fpr, pro = pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.1, 1.0])
    np.testing.assert_allclose(pro, [0.0, 0.5, 0.5, 1.0])


def test_aupro_all_scores_tied() -> None:
    # A single threshold: the curve jumps straight from (0, 0) to (1, 1); PRO at 0.3 is 0.3.
    # Area on [0, 0.3] = 0.3 * 0.3 / 2 = 0.045; / 0.3 = 0.15.
    masks, _ = _interpolation_case()
    maps = np.full(masks.shape, 0.25, np.float32)
    assert aupro(masks, maps) == pytest.approx(0.15, abs=1e-12)


def test_aupro_uses_eight_connectivity() -> None:
    # Diagonal pixels (0,0) and (1,1) form one region (area 2); (5,5) is another. Only (0,0) scores above the
    # normals: PRO = (1/2 + 0) / 2 = 0.25 (with 4-connectivity it would be (1 + 0 + 0) / 3).
    # Curve: (0, 0) -> (0, 0.25) -> (1, 0.25) -> (1, 1): AUPRO = 0.25.
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 5, 5] = True
    maps = np.full((1, 8, 8), 0.5)
    maps[0, 0, 0] = 1.0
    maps[0, 1, 1] = maps[0, 5, 5] = 0.0
    assert aupro(masks, maps) == pytest.approx(0.25)


def test_aupro_regions_weigh_equally_across_images() -> None:
    # A 1-pixel region in image 0 is found first, a 9-pixel region in image 1 after all normals: each region
    # counts for half of the PRO whatever its size, so AUPRO = 0.5. Labels must not merge across images.
    masks = np.zeros((2, 6, 6), bool)
    masks[0, 0, 0] = True
    masks[1, 0:3, 0:3] = True
    maps = np.full((2, 6, 6), 0.5)
    maps[0, 0, 0] = 1.0
    maps[1, 0:3, 0:3] = 0.1
    assert aupro(masks, maps) == pytest.approx(0.5)


def test_aupro_counts_false_positives_on_good_images() -> None:
    # Region found at 0.9; a good image has 10 of its 100 pixels at 0.95. Image 0: 4 region pixels + 96
    # normals at 0, so n_normal = 196. Curve: (0, 0) -> (10/196, 0) -> (10/196, 1) -> (1, 1).
    masks = np.zeros((2, 10, 10), bool)
    masks[0, 0:2, 0:2] = True
    maps = np.zeros((2, 10, 10))
    maps[0, 0:2, 0:2] = 0.9
    maps[1, 0, :] = 0.95
    x = 10 / 196
    expected = (0.3 - x) / 0.3  # PRO is 1 on [x, 0.3], 0 before
    assert aupro(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_aupro_none_cases() -> None:
    maps = np.random.default_rng(0).random((2, 5, 5))
    assert aupro(np.zeros((2, 5, 5), bool), maps) is None
    assert aupro(np.ones((2, 5, 5), bool), maps) is None  # no defect-free pixel: FPR undefined


def test_aupro_rejects_bad_limit() -> None:
    masks, maps = _interpolation_case()
    for limit in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            aupro(masks, maps, fpr_limit=limit)


# ---------------------------------------------------------------------------------------------------------
# AUPRO: independent brute-force reference
# ---------------------------------------------------------------------------------------------------------


def _reference_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float) -> float:
    """Straight from the definition: one PRO/FPR point per distinct threshold, then clip the polyline."""
    regions = []  # boolean mask (over the whole stack) of every 8-connected region
    for i in range(masks.shape[0]):
        lab, n = ndimage.label(masks[i], structure=np.ones((3, 3)))
        for r in range(1, n + 1):
            region = np.zeros(masks.shape, bool)
            region[i] = lab == r
            regions.append(region)
    normal = ~masks
    xs, ys = [0.0], [0.0]  # threshold above every score
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        xs.append(np.sum(above & normal) / np.sum(normal))
        ys.append(np.mean([np.sum(above & r) / np.sum(r) for r in regions]))
    area = 0.0
    for x0, y0, x1, y1 in zip(xs[:-1], ys[:-1], xs[1:], ys[1:], strict=True):
        if x0 >= fpr_limit:
            break
        if x1 <= fpr_limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_lim = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += (fpr_limit - x0) * (y0 + y_lim) / 2
            break
    return area / fpr_limit


def _random_case(seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, h, w = 5, 20, 24
    masks = np.zeros((n, h, w), bool)
    for i in range(n - 2):  # the last two images are good
        for _ in range(rng.integers(1, 4)):
            r, c = rng.integers(0, h - 2), rng.integers(0, w - 2)
            masks[i, r : r + rng.integers(1, 6), c : c + rng.integers(1, 6)] = True
        masks[i, rng.integers(0, h), rng.integers(0, w)] = True  # stray single pixels, some diagonal touches
    noise = ndimage.gaussian_filter(rng.random((n, h, w)), (0, 1.5, 1.5))
    maps = noise + 0.05 * masks * rng.random((n, h, w))
    if ties:
        maps = np.round(maps, 2)
    return masks, maps.astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
def test_aupro_matches_brute_force(seed: int, ties: bool, fpr_limit: float) -> None:
    masks, maps = _random_case(seed, ties)
    assert aupro(masks, maps, fpr_limit) == pytest.approx(_reference_aupro(masks, maps, fpr_limit), abs=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------------


def test_summarise_means_ignoring_none() -> None:
    per_class = {
        "bottle": {"image_auroc": 1.0, "pixel_auroc": 0.9, "aupro": 0.8, "f1_max": (0.9, 1.5)},
        "cable": {"image_auroc": 0.8, "pixel_auroc": None, "aupro": 0.6, "f1_max": 0.7},
        "grid": {"image_auroc": None, "pixel_auroc": None, "aupro": None},
    }
    summary = summarise(per_class)
    assert summary["image_auroc"] == pytest.approx(0.9)
    assert summary["pixel_auroc"] == pytest.approx(0.9)
    assert summary["aupro"] == pytest.approx(0.7)
    assert summary["f1_max"] == pytest.approx(0.8)


def test_summarise_all_none() -> None:
    summary = summarise({"a": {"image_auroc": None}, "b": {}})
    assert summary == {"image_auroc": None, "pixel_auroc": None, "aupro": None, "f1_max": None}
    assert summarise({}) == summary
