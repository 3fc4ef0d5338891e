"""Patch features of a class's training images, kept on disk while it trains so that memory stays flat
whatever the number of images: fit.py writes them; the coreset, the index and the threshold read them."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import numpy as np

#: Images per backbone forward pass while training and evaluating.
BATCH_SIZE = 8


class FeatureStore:
    """Patch features [N, rows, cols, dim] float32 of a class's training images in a temporary file: written
    batch by batch, read back batch by batch, so training never holds every patch of every image at once."""

    def __init__(self, n: int, grid: tuple[int, int], dim: int) -> None:
        self.shape = (n, *grid, dim)
        self._file = tempfile.TemporaryFile(prefix="ivadas-features-")  # noqa: SIM115 - closed in close()
        self._row_bytes = grid[0] * grid[1] * dim * 4
        #: cells over image rather than padding [N, rows, cols] (small: kept in memory)
        self.valid = np.ones((n, *grid), dtype=bool)

    @property
    def patches_per_image(self) -> int:
        return self.shape[1] * self.shape[2]

    def write(self, start: int, features: np.ndarray, valid: np.ndarray | None = None) -> None:
        self._file.seek(start * self._row_bytes)
        self._file.write(np.ascontiguousarray(features, dtype=np.float32).tobytes())
        if valid is not None:
            self.valid[start : start + len(features)] = valid

    def read(self, start: int, stop: int) -> np.ndarray:
        self._file.seek(start * self._row_bytes)
        data = self._file.read((stop - start) * self._row_bytes)
        return np.frombuffer(data, dtype=np.float32).reshape(stop - start, *self.shape[1:])

    def batches(self, size: int = BATCH_SIZE) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.shape[0], size):
            yield start, self.read(start, min(start + size, self.shape[0]))

    def close(self) -> None:
        self._file.close()

    @classmethod
    def from_array(cls, features: np.ndarray, valid: np.ndarray | None = None) -> FeatureStore:
        store = cls(features.shape[0], features.shape[1:3], features.shape[3])
        store.write(0, features, valid)
        return store
