"""Study protocols on a class split: SoftPatch's noise protocol (defective images moved into training) and the
holdout of good training images that sets the threshold. Seeded, so a rerun draws the same samples."""

from __future__ import annotations

import math

import numpy as np

from model_server.errors import DataError
from model_server.training.samples import ClassSplit, Sample


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _apportion(total: int, counts: dict[str, int]) -> dict[str, int]:
    """Split `total` across groups in proportion to their sizes (largest remainder; ties by group name)."""
    n = sum(counts.values())
    exact = {k: total * c / n for k, c in counts.items()}
    quota = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(quota.values())
    for k in sorted(counts, key=lambda k: (-(exact[k] - quota[k]), k))[:left]:
        quota[k] += 1
    return quota


def apply_noise(split: ClassSplit, ratio: float, seed: int = 0) -> ClassSplit:
    """SoftPatch's no-overlap noise protocol: move anomalous test samples into the training set.

    round(ratio * n_anomalous_test) samples (half up; at least 1 when ratio > 0, at most all but one so the
    test set keeps an anomalous sample) are drawn with `seed`, spread over defect types in proportion to their
    sizes. They keep label 1 in train so reports can count the noise, and leave the test set so no image is
    both trained on and scored. Returns a new split; the input is unchanged.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"noise ratio must be in [0, 1), got {ratio}")
    if ratio == 0.0:
        return ClassSplit(split.class_name, list(split.train), list(split.test), split.source)
    anomalous = [s for s in split.test if s.label == 1]
    if len(anomalous) < 2:
        raise DataError(
            f"class {split.class_name} has {len(anomalous)} anomalous test images: noise ratio {ratio} needs "
            "at least 2 (one to move into train, one left to test)"
        )
    n_move = min(max(1, _round_half_up(ratio * len(anomalous))), len(anomalous) - 1)
    by_type: dict[str, list[Sample]] = {}
    for s in anomalous:
        by_type.setdefault(s.defect_type, []).append(s)
    quota = _apportion(n_move, {k: len(v) for k, v in by_type.items()})
    rng = np.random.default_rng(seed)
    moved: list[Sample] = []
    for defect in sorted(by_type):
        group = by_type[defect]
        picks = rng.permutation(len(group))[: quota[defect]]
        moved.extend(group[i] for i in sorted(picks))
    moved_names = {s.name for s in moved}
    return ClassSplit(
        class_name=split.class_name,
        train=list(split.train) + moved,
        test=[s for s in split.test if s.name not in moved_names],
        source=f"{split.source}; noise ratio {ratio} seed {seed}: {len(moved)} anomalous images in train",
    )


def add_unlabelled(split: ClassSplit, extra: list[Sample], ratio: float, seed: int = 0) -> ClassSplit:
    """A training set in which `ratio` of the images are real defects nobody labelled (e.g. ELPV's uncertain
    cells): round(ratio / (1 - ratio) * n_train) of `extra`, drawn with `seed`. The test split is unchanged
    (it must not hold any of `extra`); the added samples keep label 1 so reports can count them."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"noise ratio must be in [0, 1), got {ratio}")
    n_add = _round_half_up(ratio / (1.0 - ratio) * len(split.train))
    if n_add > len(extra):
        raise DataError(
            f"{ratio:.0%} noise in {split.class_name} needs {n_add} extra images, {len(extra)} exist"
        )
    overlap = {s.name for s in extra} & {s.name for s in split.test}
    if overlap:
        raise DataError(f"{len(overlap)} of the extra images are in the test split of {split.class_name}")
    picks = np.random.default_rng(seed).permutation(len(extra))[:n_add]
    added = [extra[i] for i in sorted(picks)]
    return ClassSplit(
        class_name=split.class_name,
        train=list(split.train) + added,
        test=list(split.test),
        source=f"{split.source}; {len(added)} unlabelled defective images added (seed {seed})",
    )


def split_holdout(
    train: list[Sample], fraction: float = 0.1, seed: int = 0, min_holdout: int = 3
) -> tuple[list[Sample], list[Sample]]:
    """Hold out good training images for threshold calibration; returns (fit, holdout).

    Only label-0 samples are held out (anomalous noise samples always stay in fit). The holdout size is
    round(fraction * n_good), at least `min_holdout`, and at most n_good - min_holdout so fitting keeps some
    good images. With fewer than 2 * min_holdout good images (or fraction 0) the holdout is empty and the
    caller must calibrate another way. Both lists keep the input order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    good = [i for i, s in enumerate(train) if s.label == 0]
    if fraction == 0.0 or len(good) < 2 * min_holdout:
        return list(train), []
    k = min(max(min_holdout, _round_half_up(fraction * len(good))), len(good) - min_holdout)
    chosen = {good[i] for i in np.random.default_rng(seed).permutation(len(good))[:k]}
    fit = [s for i, s in enumerate(train) if i not in chosen]
    holdout = [s for i, s in enumerate(train) if i in chosen]
    return fit, holdout
