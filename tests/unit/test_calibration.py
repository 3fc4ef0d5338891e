"""Threshold for a target false-alarm rate from honest good scores, and the normalised score."""

import numpy as np
import pytest
from scipy import stats

from model_server.engine.calibration import Calibration
from model_server.training.threshold import MIN_TAIL_IMAGES, calibrate


def test_tail_model_keeps_the_rate_on_heavy_tailed_scores() -> None:
    """Good scores with a heavier tail than a Gumbel (as ELPV mono's are): the fitted GEV threshold flags
    about the target share of fresh good scores, where a Gumbel fit would flag several times more."""
    dist = stats.genextreme(-0.25, loc=10, scale=2)
    fresh = dist.rvs(size=200_000, random_state=99)
    fitted, gumbel = [], []
    for seed in range(30):
        scores = dist.rvs(size=120, random_state=seed)
        cal = calibrate(scores, target_false_alarm_rate=0.01)
        assert cal.method == "gev" and cal.quantile == pytest.approx(0.99)
        fitted.append(np.mean(fresh > cal.threshold))
        gumbel.append(np.mean(fresh > stats.gumbel_r.ppf(0.99, *stats.gumbel_r.fit(scores))))
    assert 0.005 < np.median(fitted) < 0.02
    assert np.median(gumbel) > 1.5 * np.median(fitted)
    # and on Gumbel scores it finds the quantile without bias
    truth = stats.gumbel_r.ppf(0.99, loc=10, scale=2)
    thresholds = [
        calibrate(stats.gumbel_r.rvs(loc=10, scale=2, size=120, random_state=s)).threshold for s in range(30)
    ]
    assert abs(np.median(thresholds) - truth) < 0.8  # 0.3 of the scale: a few tenths of a per cent of rate


def test_a_tail_fit_its_own_scores_contradict_gives_way_to_the_empirical_quantile() -> None:
    """Mostly tight good scores with a few far ones (a bottle-like LOO set): a GEV bent to the bulk puts its
    1 % threshold below several of them; the empirical quantile flags at most the target share."""
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(10, 0.3, 116), [13.0, 14.0, 15.0, 16.0]]
    cal = calibrate(scores, target_false_alarm_rate=0.01)
    assert cal.method == "empirical" and cal.fitted_false_alarm_rate <= 2 / 120  # the 0.99 quantile of 120
    assert float(stats.genextreme.ppf(0.99, *stats.genextreme.fit(scores))) < 15.0  # what the fit said


def test_normalisation_is_anchored_at_the_median_and_the_threshold() -> None:
    scores = stats.gumbel_r.rvs(loc=5, scale=1, size=200, random_state=0)
    cal = calibrate(scores, target_false_alarm_rate=0.05)
    assert cal.reference == pytest.approx(np.median(scores))
    assert cal.fitted_false_alarm_rate == pytest.approx((scores > cal.threshold).mean())
    assert cal.normalize(cal.threshold) == pytest.approx(0.5)
    assert cal.normalize(cal.reference) == pytest.approx(0.0)
    assert cal.normalize(1e9) == 1.0 and cal.normalize(-5) == 0.0
    assert cal.is_anomaly(cal.threshold + 1e-6) and not cal.is_anomaly(cal.threshold)
    assert np.all(np.diff(cal.normalize(np.array([3.0, 6.0, 9.0]))) > 0)


def test_few_scores_use_the_empirical_quantile_and_round_trip() -> None:
    scores = np.arange(1.0, MIN_TAIL_IMAGES)
    cal = calibrate(scores, target_false_alarm_rate=0.1)
    assert cal.method == "empirical" and cal.threshold == pytest.approx(np.quantile(scores, 0.9))
    assert Calibration.from_dict(cal.to_dict()) == cal
    legacy = {"threshold": 2.0, "reference": 1.0, "quantile": 0.99, "n_images": 21}
    assert Calibration.from_dict(legacy).method == "empirical"  # artifacts written before the tail model
    with pytest.raises(ValueError):
        calibrate([])
    with pytest.raises(ValueError):
        calibrate(scores, target_false_alarm_rate=0.0)
