"""Evaluation metrics for anomaly detection on MVTec AD: image/pixel AUROC, F1-max and AUPRO.

The definitions follow the MVTec AD papers (Bergmann et al., CVPR 2019 and IJCV 2021) and their official
evaluation code, so that numbers are comparable with published PatchCore/SoftPatch results:

* image AUROC ranks one score per image against the good/defective label;
* pixel AUROC ranks every pixel of every test image against the ground-truth masks;
* AUPRO integrates the per-region overlap (PRO) over the pixel false positive rate up to 0.3 and normalises
  by that limit. Unlike pixel AUROC it weighs every defect region equally, however large it is.

Pixel metrics get all maps of one class at once (about 83 x 320 x 320 = 8.5M pixels on MVTec AD), so they
avoid float64 copies of the whole stack and compute AUPRO exactly by sorting, not over a threshold grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

SUMMARY_KEYS = ("image_auroc", "pixel_auroc", "aupro", "f1_max")

# 8-connectivity as in the official MVTec AD evaluation: diagonal neighbours belong to the same defect region.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _as_image_arrays(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} != {s.size}")
    if y.size == 0:
        raise ValueError("no samples to evaluate")
    if y.dtype != bool:
        y = y != 0
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return y, s


def _as_pixel_arrays(masks: ArrayLike, maps: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Masks as bool, maps as float (float32 kept as is), both (N, H, W); a single (H, W) pair is allowed."""
    m = np.asarray(masks)
    a = np.asarray(maps)
    if m.shape != a.shape:
        raise ValueError(f"masks and maps differ in shape: {m.shape} != {a.shape}")
    if m.ndim == 2:
        m, a = m[None], a[None]
    if m.ndim != 3 or m.size == 0:
        raise ValueError(f"expected (N, H, W) masks and maps, got shape {m.shape}")
    if m.dtype != bool:
        m = m != 0  # MVTec masks are 0/255 images
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    if np.isnan(a).any():
        raise ValueError("anomaly maps contain NaN")
    return m, a


def image_auroc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """Area under the ROC curve of image scores (label 1 = defective); None when only one class is present."""
    y, s = _as_image_arrays(labels, scores)
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, s))


def roc_curve_points(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the ROC curve, for plotting; collinear points are dropped to keep plots light."""
    y, s = _as_image_arrays(labels, scores)
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr


def f1_max(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """Best F1 over all thresholds and the threshold achieving it (positive means score >= threshold).

    F1-max measures how well one operating point could separate the classes, independently of calibration.
    With no positive label F1 is 0 at every threshold; the highest score is returned as threshold then.
    """
    y, s = _as_image_arrays(labels, scores)
    if not y.any():
        return 0.0, float(s.max())
    precision, recall, thresholds = precision_recall_curve(y, s)
    # The last (precision=1, recall=0) point has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    denom = precision + recall
    f1 = np.divide(2.0 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def pixel_auroc(masks: ArrayLike, maps: ArrayLike) -> float | None:
    """AUROC over all pixels of all images; None unless both defect and defect-free pixels exist."""
    m, a = _as_pixel_arrays(masks, maps)
    n_pos = int(np.count_nonzero(m))
    if n_pos == 0 or n_pos == m.size:
        return None
    # ravel() is a view for contiguous input: no float64 copy of the maps.
    return float(roc_auc_score(m.ravel(), a.ravel()))


def _component_labels(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Ground-truth regions of every image, numbered 1..n across the whole stack (0 = defect-free)."""
    labels = np.zeros(masks.shape, dtype=np.int32)
    n_total = 0
    for i in range(masks.shape[0]):
        if not masks[i].any():
            continue
        n = ndimage.label(masks[i], structure=_EIGHT_CONNECTED, output=labels[i])
        labels[i][masks[i]] += n_total
        n_total += n
    return labels, n_total


def _normalised_partial_area(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under the piecewise linear curve (x, y) on [0, x_max], divided by x_max.

    x is non-decreasing, starts at 0 and reaches x_max; the curve is interpolated linearly at x_max.
    """
    inside = int(np.searchsorted(x, x_max, side="right"))  # x[:inside] <= x_max < x[inside:]
    xs, ys = x[:inside], y[:inside]
    area = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))
    if inside < x.size and xs[-1] < x_max:
        x0, y0, x1, y1 = xs[-1], ys[-1], x[inside], y[inside]
        y_at_max = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += (x_max - x0) * (y0 + y_at_max) / 2.0
    return area / x_max


def pro_curve(
    masks: ArrayLike, maps: ArrayLike, fpr_limit: float = 1.0
) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact (fpr, pro) points of the PRO curve, one per distinct score, from threshold +inf downwards.

    Each defect pixel adds 1 / (n_regions * region_area) to the PRO and each defect-free pixel 1 / n_normal
    to the FPR once the threshold drops to its score, so sorting the pixels by score and taking cumulative
    sums gives every point of the curve; within a run of tied scores only the last point is a real one.
    Points are computed only until the FPR exceeds `fpr_limit` (all of them when it is 1). Returns None
    when there is no defect region or no defect-free pixel.
    """
    m, a = _as_pixel_arrays(masks, maps)
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    labels, n_regions = _component_labels(m)
    n_normal = m.size - int(np.count_nonzero(m))
    if n_regions == 0 or n_normal == 0:
        return None
    areas = np.bincount(labels.ravel(), minlength=n_regions + 1)
    pro_weight = np.zeros(n_regions + 1, dtype=np.float64)
    pro_weight[1:] = 1.0 / (n_regions * areas[1:].astype(np.float64))

    flat_scores = a.ravel()
    flat_labels = labels.ravel()
    # Pixels scoring below the k-th highest normal score only matter past fpr_limit; skip them. One normal
    # pixel more than ceil(fpr_limit * n_normal) makes the last kept point's FPR exceed the limit robustly.
    k = min(n_normal, math.ceil(fpr_limit * n_normal) + 1)
    if k < n_normal:
        normal_scores = flat_scores[~m.ravel()]
        normal_scores.partition(n_normal - k)
        keep = np.flatnonzero(flat_scores >= normal_scores[n_normal - k])
        del normal_scores
        kept_scores = flat_scores[keep]
        kept_labels = flat_labels[keep]
        del keep
    else:
        kept_scores, kept_labels = flat_scores, flat_labels
    del labels

    order = np.argsort(kept_scores)[::-1]  # descending; order within ties does not matter
    sorted_scores = kept_scores[order]
    sorted_labels = kept_labels[order]
    del order, kept_scores, kept_labels

    last_of_run = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1])
    last_of_run = np.append(last_of_run, sorted_scores.size - 1)
    del sorted_scores
    fp_counts = np.cumsum(sorted_labels == 0)[last_of_run]
    pro = np.cumsum(pro_weight[sorted_labels])[last_of_run]
    fpr = np.concatenate(([0.0], fp_counts / n_normal))
    pro = np.concatenate(([0.0], np.minimum(pro, 1.0)))  # rounding can overshoot 1 by an ulp
    return fpr, pro


def aupro(masks: ArrayLike, maps: ArrayLike, fpr_limit: float = 0.3) -> float | None:
    """Normalised area under the PRO curve for FPR in [0, fpr_limit], as in the MVTec AD evaluation.

    masks: (N, H, W) ground truth (non-zero = defect), good images included; maps: (N, H, W) anomaly scores.
    PRO at a threshold is the mean, over all 8-connected defect regions of all images, of the fraction of the
    region's pixels scoring >= threshold; FPR is the fraction of all defect-free pixels doing so. The area is
    divided by fpr_limit, so a perfect map gives 1.0. None when there is no defect region (or no normal
    pixel).
    """
    curve = pro_curve(masks, maps, fpr_limit)
    if curve is None:
        return None
    fpr, pro = curve
    return _normalised_partial_area(fpr, pro, fpr_limit)


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a rate: honest at the counts a test split has (1 of 20 is not 5 %)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _first_value(value: object) -> float | None:
    """A metric as a float; f1_max may be stored as its (f1, threshold) pair."""
    if value is None:
        return None
    if isinstance(value, tuple | list):
        return None if not value or value[0] is None else float(value[0])
    return float(value)


def summarise(per_class: Mapping[str, Mapping[str, object]]) -> dict[str, float | None]:
    """Mean of each metric over classes, ignoring classes where it is None or missing (None if none has it).

    This is the "mean over the 15 MVTec AD classes" that papers report; a class without defective test
    images has no AUROC and must not drag the mean down.
    """
    summary: dict[str, float | None] = {}
    for key in SUMMARY_KEYS:
        values = [v for metrics in per_class.values() if (v := _first_value(metrics.get(key))) is not None]
        summary[key] = float(np.mean(values)) if values else None
    return summary
