"""The memory bank's nearest-neighbour search: a test patch's score is its distance to the nearest bank patch
(faiss, L2), searched exhaustively or, for larger banks, through an inverted-file index.

The inverted file (IVF) groups the bank around `lists` centroids and compares a query only with the patches
of its `probes` nearest groups. It can miss the true nearest patch, and then only ever scores a patch higher;
training keeps it only with the fewest probes whose held-out scores match the exhaustive ones
(training/bank_index.py), and otherwise serves the bank exhaustively. The centroids are stored with the bank,
so a loaded model assigns every patch to the same list as at training.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np


@dataclass(frozen=True)
class BankIndex:
    """An inverted-file index over a bank: its centroids [lists, dim] and how many lists a query visits."""

    centroids: np.ndarray
    probes: int

    @property
    def lists(self) -> int:
        return int(self.centroids.shape[0])

    def __post_init__(self) -> None:
        if self.centroids.ndim != 2 or self.lists == 0:
            raise ValueError(f"centroids must be a non-empty 2-D array, got shape {self.centroids.shape}")
        if not 1 <= self.probes <= self.lists:
            raise ValueError(f"probes must be in [1, {self.lists}], got {self.probes}")


class NearestNeighbourScorer:
    """L2 nearest-neighbour search over a memory bank (faiss), optionally with SoftPatch weights.

    A patch's score is the distance to its nearest bank patch; SoftPatch multiplies it by that bank patch's
    outlier weight, so a test patch that only resembles a doubtful training patch still scores high.
    Exhaustive unless an `index` is given.
    """

    def __init__(
        self, bank: np.ndarray, weights: np.ndarray | None = None, index: BankIndex | None = None
    ) -> None:
        bank = np.ascontiguousarray(bank, dtype=np.float32)
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"memory bank must be a non-empty 2-D array, got shape {bank.shape}")
        if weights is not None and weights.shape != (bank.shape[0],):
            raise ValueError(f"weights shape {weights.shape} does not match bank of {bank.shape[0]} patches")
        if index is not None and index.centroids.shape[1] != bank.shape[1]:
            raise ValueError(
                f"index centroids of {index.centroids.shape[1]} values for a bank of {bank.shape[1]}"
            )
        self.dim = bank.shape[1]
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)
        self.index_spec = index
        self._bank = bank
        self._flat: faiss.Index | None = None  # exhaustive, built only if the inverted file falls short
        if index is None:
            self.index = faiss.IndexFlatL2(self.dim)
        else:
            self._quantizer = faiss.IndexFlatL2(self.dim)  # kept: the IVF index does not own it
            self._quantizer.add(np.ascontiguousarray(index.centroids, dtype=np.float32))
            self.index = faiss.IndexIVFFlat(self._quantizer, self.dim, index.lists)
            self.index.is_trained = True  # the centroids are the training
            self.index.nprobe = index.probes
        self.index.add(bank)

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, nearest bank index) for each row of `queries`."""
        dist, idx = self.neighbours(queries, 1)
        return dist[:, 0], idx[:, 0]

    def neighbours(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k], bank indices [Q, k]) of the k nearest bank patches, nearest first; SoftPatch
        weights scale the distances, so with weights the scores need not be sorted. With an index, fewer than
        k found patches leave infinite scores (index -1)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        sq_dist, idx = self.index.search(queries, k)
        short = (idx < 0).any(axis=1)
        if short.any():  # the probed lists held fewer than k patches: those queries search the whole bank
            sq_dist[short], idx[short] = self._exhaustive().search(queries[short], k)
        dist = np.sqrt(np.maximum(sq_dist, 0.0))
        if self.weights is not None:
            dist = dist * self.weights[idx]
        return dist, idx

    def _exhaustive(self) -> faiss.Index:
        if self.index_spec is None:
            return self.index
        if self._flat is None:
            self._flat = faiss.IndexFlatL2(self.dim)
            self._flat.add(self._bank)
        return self._flat
