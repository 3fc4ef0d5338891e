"""Decision threshold from good images only, for a stated false-alarm rate.

Production sites rarely have labelled defects, so the threshold comes from the scores good training images get
when they are not in the memory bank (leave-one-image-out, training/fit.py). A plant asks for "1 % false
alarms"; the 99th percentile of a hundred scores is nearly their maximum and moves a lot from one draw to the
next, so the tail of the good scores is modelled instead: image scores are maxima (or top means) of many
patch distances, and a generalised extreme value distribution fitted to them gives the (1 - rate) quantile
from all the images. Its shape is fitted too: on ELPV mono the good scores have a heavier tail than a Gumbel
(measured: Gumbel 4 false alarms in 100 good test cells at a 1 % target, GEV 2, the LOO scores matching the
test cells' own spread: median 26.6 against 25.7, 90th percentile 29.6 against 29.9). A fit that its own
scores contradict (bottle: 4 of 120 above a 1 % GEV threshold) gives way to the empirical quantile.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from model_server import defaults
from model_server.engine.calibration import Calibration

#: Fewer honest good scores than this and the tail model is not trusted: the empirical quantile is used.
MIN_TAIL_IMAGES = 20
#: A tail fit is refused when the good scores it was fitted on exceed its threshold more often than the
#: target rate explains at this significance (binomial test): the fit missed a heavy upper tail.
TAIL_CHECK_P = 0.05


def _tail_agrees(scores: np.ndarray, threshold: float, rate: float) -> bool:
    above = int((scores > threshold).sum())
    return above == 0 or float(stats.binom.sf(above - 1, scores.size, rate)) >= TAIL_CHECK_P


def calibrate(
    good_scores: np.ndarray, target_false_alarm_rate: float = defaults.TARGET_FALSE_ALARM_RATE
) -> Calibration:
    """Threshold at the (1 - rate) quantile of a GEV fitted to honest good image scores."""
    scores = np.asarray(good_scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("threshold calibration needs at least one good image score")
    if not 0.0 < target_false_alarm_rate < 0.5:
        raise ValueError(f"target false-alarm rate must be in (0, 0.5), got {target_false_alarm_rate}")
    quantile = 1.0 - target_false_alarm_rate
    threshold, method = float(np.quantile(scores, quantile)), "empirical"
    if scores.size >= MIN_TAIL_IMAGES and np.ptp(scores) > 0:
        fitted = float(stats.genextreme.ppf(quantile, *stats.genextreme.fit(scores)))
        # a degenerate fit, or one its own data contradict, keeps the empirical quantile
        if np.isfinite(fitted) and fitted > np.median(scores) and _tail_agrees(scores, fitted, 1 - quantile):
            threshold, method = fitted, "gev"
    return Calibration(
        threshold=threshold,
        reference=float(np.median(scores)),
        quantile=quantile,
        n_images=int(scores.size),
        method=method,
        fitted_false_alarm_rate=float((scores > threshold).mean()),
    )
