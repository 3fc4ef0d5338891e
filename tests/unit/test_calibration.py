"""Threshold from held-out good scores and the normalised score."""

import numpy as np
import pytest

from model_server.engine.calibration import Calibration
from model_server.training.threshold import calibrate


def test_threshold_is_high_quantile_and_normalisation_is_anchored() -> None:
    scores = np.arange(1, 101, dtype=float)
    cal = calibrate(scores, quantile=0.99)
    assert cal.threshold == pytest.approx(np.quantile(scores, 0.99))
    assert cal.reference == pytest.approx(50.5)
    assert cal.normalize(cal.threshold) == pytest.approx(0.5)
    assert cal.normalize(cal.reference) == pytest.approx(0.0)
    assert cal.normalize(1e9) == 1.0 and cal.normalize(-5) == 0.0
    assert cal.is_anomaly(cal.threshold + 1e-6) and not cal.is_anomaly(cal.threshold)
    values = cal.normalize(np.array([10.0, 60.0, 90.0]))
    assert np.all(np.diff(values) > 0)


def test_round_trip_and_errors() -> None:
    cal = calibrate([1.0, 2.0, 3.0])
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError):
        calibrate([])
