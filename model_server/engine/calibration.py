"""A class model's decision threshold and the normalised score users see.

The normalised score maps the median good score to 0, the threshold to 0.5 and twice that distance to 1
(training/threshold.py fits both from held-out good images).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    threshold: float
    #: median good score (leave-one-out): where the normalised score is 0
    reference: float
    #: share of good images expected below the threshold (1 - the target false-alarm rate)
    quantile: float
    #: good images whose honest scores the threshold was fitted on
    n_images: int
    #: how the threshold was fitted ("gumbel" tail model, "empirical" quantile)
    method: str = "empirical"
    #: share of those good images above the threshold
    fitted_false_alarm_rate: float | None = None

    def normalize(self, score: float | np.ndarray) -> float | np.ndarray:
        """0 at the typical good score, 0.5 at the threshold, clipped to [0, 1]."""
        span = max(self.threshold - self.reference, 1e-12)
        value = np.clip(0.5 + 0.5 * (np.asarray(score, dtype=np.float64) - self.threshold) / span, 0.0, 1.0)
        return float(value) if np.ndim(value) == 0 else value

    def is_anomaly(self, score: float) -> bool:
        return bool(score > self.threshold)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        fitted = data.get("fitted_false_alarm_rate")
        return cls(
            threshold=float(data["threshold"]),
            reference=float(data["reference"]),
            quantile=float(data["quantile"]),
            n_images=int(data["n_images"]),
            method=str(data.get("method", "empirical")),
            fitted_false_alarm_rate=None if fitted is None else float(fitted),
        )
