"""SoftPatch's noise protocol on a class split (`ivadas train --noise-ratio`): defective test images moved
into training. Seeded, so a rerun draws the same samples."""

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
