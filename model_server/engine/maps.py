"""From patch scores to what an image gets: its score (the largest patch score, official PatchCore) and its
anomaly map (the patch-score grid upsampled to the input size and smoothed with a Gaussian, sigma 4)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

#: Gaussian smoothing of the upsampled anomaly map, in input-size pixels (official PatchCore value).
MAP_SIGMA = 4.0


def top_count(n_patches: int, top_fraction: float) -> int:
    """How many of an image's highest patch scores its image score averages (1: the maximum)."""
    return max(1, int(round(top_fraction * n_patches)))


def image_scores(patch_scores: np.ndarray, top_fraction: float = 0.0) -> np.ndarray:
    """Image score: the mean of the highest `top_fraction` of patch scores, or the largest one (0, official
    PatchCore). Averaging a few top patches steadies the decision against a single noisy patch."""
    flat = patch_scores.reshape(len(patch_scores), -1)
    k = top_count(flat.shape[1], top_fraction)
    if k == 1:
        return flat.max(axis=1)
    return np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:].mean(axis=1)


def anomaly_maps(patch_scores: np.ndarray, shape: tuple[int, int], sigma: float = MAP_SIGMA) -> np.ndarray:
    """Patch-score grids [B, rows, cols] -> smoothed maps [B, H, W] at the canvas `shape` (float32)."""
    grid = torch.from_numpy(np.ascontiguousarray(patch_scores, dtype=np.float32)).unsqueeze(1)
    up = F.interpolate(grid, size=tuple(shape), mode="bilinear", align_corners=False)[:, 0].numpy()
    if sigma > 0:
        up = np.stack([gaussian_filter(m, sigma=sigma) for m in up])
    return up.astype(np.float32, copy=False)


def resize_map(amap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize one anomaly map to (H, W) with bilinear interpolation (for heatmaps at the image's own size)."""
    if amap.shape == tuple(shape):
        return amap
    t = torch.from_numpy(np.ascontiguousarray(amap, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0].numpy()
