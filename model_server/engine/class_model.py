"""A trained model of one product class: its memory bank (and SoftPatch weights), threshold and model card.

Plain data, so an artifact stores and loads it without pickling code. PatchCore and SoftPatch differ only in
how the bank was chosen (training/fit.py) and in SoftPatch's weights on the distances.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from model_server.engine.calibration import Calibration
from model_server.engine.config import ModelConfig
from model_server.engine.maps import anomaly_maps, image_scores
from model_server.engine.memory_bank import BankIndex, NearestNeighbourScorer
from model_server.engine.provenance import Provenance


@dataclass
class ClassModel:
    class_name: str
    config: ModelConfig
    bank: np.ndarray  # [M, dim] float32
    weights: np.ndarray | None  # [M] SoftPatch soft weights, None for PatchCore
    calibration: Calibration
    card: dict = field(default_factory=dict)
    #: inverted-file index over the bank (memory_bank.py); None: searched exhaustively
    index: BankIndex | None = None
    #: where each bank patch came from (provenance.py); None in artifacts from before it (no explanations)
    provenance: Provenance | None = None
    _scorer: NearestNeighbourScorer | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def scorer(self) -> NearestNeighbourScorer:
        if self._scorer is None or self._scorer.index_spec is not self.index:  # training sets the index late
            self._scorer = NearestNeighbourScorer(self.bank, self.weights, self.index)
        return self._scorer

    def patch_scores(
        self, features: torch.Tensor | np.ndarray, valid: np.ndarray | None = None
    ) -> np.ndarray:
        """Patch features [B, rows, cols, dim] -> patch scores [B, rows, cols]; cells over padding
        (`valid` False) score 0, so they never raise an image score."""
        return self.patch_search(features, valid)[0]

    def patch_search(
        self, features: torch.Tensor | np.ndarray, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(patch scores [B, rows, cols] as `patch_scores`, the nearest bank patch of each [B, rows, cols]):
        the search finds both, so keeping the second costs nothing (explanations use it)."""
        f = np.asarray(features, dtype=np.float32)
        scores, nearest = self.scorer.search(f.reshape(-1, f.shape[-1]))
        scores, nearest = scores.reshape(f.shape[:-1]), nearest.reshape(f.shape[:-1])
        if valid is not None:
            scores = np.where(valid, scores, np.float32(0.0))
        return scores, nearest

    def image_scores(self, patch_scores: np.ndarray) -> np.ndarray:
        """Patch scores [B, rows, cols] -> image scores [B], pooled as this model was configured: from the
        smoothed anomaly map ("map": flagged exactly when some pixel of the map is above the threshold, as the
        regions are) or from the patch scores themselves ("patch")."""
        pooled = patch_scores
        if self.config.image_score == "map":
            pooled = anomaly_maps(patch_scores, self.config.features.canvas)
        return image_scores(pooled, self.config.score_top_fraction)
