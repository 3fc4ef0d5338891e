"""The memory bank's nearest-neighbour search: a test patch's score is its distance to the nearest bank patch
(faiss, exact L2)."""

from __future__ import annotations

import faiss
import numpy as np


class NearestNeighbourScorer:
    """Exact L2 nearest-neighbour search over a memory bank (faiss), optionally with SoftPatch weights.

    A patch's score is the distance to its nearest bank patch; SoftPatch multiplies it by that bank patch's
    outlier weight, so a test patch that only resembles a doubtful training patch still scores high.
    """

    def __init__(self, bank: np.ndarray, weights: np.ndarray | None = None) -> None:
        bank = np.ascontiguousarray(bank, dtype=np.float32)
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"memory bank must be a non-empty 2-D array, got shape {bank.shape}")
        if weights is not None and weights.shape != (bank.shape[0],):
            raise ValueError(f"weights shape {weights.shape} does not match bank of {bank.shape[0]} patches")
        self.dim = bank.shape[1]
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)
        self.index = faiss.IndexFlatL2(self.dim)
        self.index.add(bank)

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, nearest bank index) for each row of `queries`."""
        dist, idx = self.neighbours(queries, 1)
        return dist[:, 0], idx[:, 0]

    def neighbours(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k], bank indices [Q, k]) of the k nearest bank patches, nearest first; SoftPatch
        weights scale the distances, so with weights the scores need not be sorted."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        sq_dist, idx = self.index.search(queries, k)
        dist = np.sqrt(np.maximum(sq_dist, 0.0))
        if self.weights is not None:
            dist = dist * self.weights[idx]
        return dist, idx
