"""Decision threshold from good images only.

Production sites rarely have labelled defects, so the threshold is a high quantile of the scores of good
training images that were held out of the memory bank (their scores are honest: they are not in the bank).
"""

from __future__ import annotations

import numpy as np

from model_server import defaults
from model_server.engine.calibration import Calibration


def calibrate(good_scores: np.ndarray, quantile: float = defaults.THRESHOLD_QUANTILE) -> Calibration:
    """Threshold at the `quantile` of held-out good image scores (linear interpolation between ranks)."""
    scores = np.asarray(good_scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("threshold calibration needs at least one held-out good image")
    if not 0.5 <= quantile <= 1.0:
        raise ValueError(f"threshold quantile must be in [0.5, 1], got {quantile}")
    return Calibration(
        threshold=float(np.quantile(scores, quantile)),
        reference=float(np.median(scores)),
        quantile=quantile,
        n_images=int(scores.size),
    )
