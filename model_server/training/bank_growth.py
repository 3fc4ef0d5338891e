"""How large a class's memory bank is, decided from the class's own good images.

A bank too small for a class's normal variation scores its rarer good patches high, and with them the
threshold, so defects below it pass; a larger bank costs memory and kNN time in every prediction. No fixed
share suits every class (1 % was chosen on bottle; on ELPV and on parts with more variation a larger bank
ranked defects better, on others it changed nothing). So the bank starts at `coreset_ratio` of the training
patches and doubles, up to `max_coreset_ratio`, while the highest honest scores of the good images (leave one
image out, as the threshold sees them) fall by at least MIN_FALL per doubling: once more coverage stops
lowering what good parts score near the threshold, more patches only cost.

The coreset is sampled once at the largest ratio and the smaller banks are its first picks
(sampler.py `StreamingCoreset.finish_levels`), so each step costs its held-out scoring, not a new sampling.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

import numpy as np

#: A doubling that lowers the good images' score tail by less than this share ends the growth.
MIN_FALL = 0.01
#: The tail: the mean of this share of the highest good image scores (at least TAIL_MIN_IMAGES of them).
TAIL_SHARE = 0.1
TAIL_MIN_IMAGES = 3

Fitted = TypeVar("Fitted")


def ladder(start: float, stop: float | None) -> list[float]:
    """The ratios a bank may take: `start` doubling up to `stop` (which is always the last one)."""
    if stop is None or stop <= start:
        return [start]
    steps = [start]
    while steps[-1] * 2 < stop * (1 - 1e-9):
        steps.append(steps[-1] * 2)
    return [*steps, stop]


def good_tail(scores: np.ndarray) -> float:
    """Mean of the highest good image scores: steadier than one quantile of about a hundred images."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    n = max(TAIL_MIN_IMAGES, int(np.ceil(TAIL_SHARE * len(ordered))))
    return float(ordered[:n].mean())


@dataclass
class Step:
    coreset_ratio: float
    bank_patches: int
    good_tail: float
    seconds: float
    fall: float | None = None  # relative fall of the tail from the step before


def grow(
    ratios: Sequence[float],
    fit: Callable[[int], tuple[Fitted, np.ndarray, int]],
) -> tuple[int, Fitted, np.ndarray, list[Step]]:
    """(chosen step, its fitted model, its good image scores, every step tried). `fit(i)` fits the bank of
    ratio i and returns (model, honest good image scores, bank patches)."""
    chosen: tuple[int, Fitted, np.ndarray] | None = None
    steps: list[Step] = []
    for i, ratio in enumerate(ratios):
        t0 = time.perf_counter()
        model, scores, patches = fit(i)
        step = Step(ratio, patches, round(good_tail(scores), 5), round(time.perf_counter() - t0, 3))
        if steps:
            step.fall = round(1.0 - step.good_tail / max(steps[-1].good_tail, 1e-12), 5)
        steps.append(step)
        if step.fall is not None and step.fall < MIN_FALL:
            break  # the smaller bank covers the good parts as well: keep it
        chosen = (i, model, scores)
    if chosen is None:
        raise ValueError("a bank needs at least one coreset ratio")
    return (*chosen, steps)


def steps_record(steps: Sequence[Step], chosen: int) -> dict:
    """What the model card keeps of the growth."""
    return {
        "chosen_ratio": steps[chosen].coreset_ratio,
        "min_fall": MIN_FALL,
        "tail_share": TAIL_SHARE,
        "steps": [asdict(s) for s in steps],
    }
