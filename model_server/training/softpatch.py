"""SoftPatch's denoising: score how outlying every training patch is before the memory bank is built.

Patches at the same grid position look alike across good images of a product, so a patch that is far from
its peers at that position probably shows a defect hidden in the training set. As in the official code, each
position is scored across all training images (features randomly projected to 128 dims first), the most
outlying `filter_fraction` of all patches may not enter the coreset, and the scores of the kept patches become
soft weights that scale test-time distances.

Methods: "lof" (local outlier factor, the default), "nearest" (distance to the nearest other image's patch,
plus 1) and "gaussian" (Mahalanobis distance to the position's Gaussian, plus 1).
"""

from __future__ import annotations

import numpy as np
import torch

from model_server.defaults import WEIGHT_METHODS
from model_server.training.sampler import random_projection

#: Positions scored per chunk: bounds the [chunk, N, N] distance tensor (N = training images).
_CHUNK = 64
#: Ridge added to each position's covariance, as the official Gaussian variant does.
_COV_RIDGE = 0.01


def patch_outlier_scores(
    features: torch.Tensor | np.ndarray,
    method: str = "lof",
    lof_k: int = 6,
    projection_dim: int | None = 128,
    seed: int = 0,
) -> np.ndarray:
    """Outlier score of every patch, shape [N images, P positions], from features [N, P, d]."""
    if method not in WEIGHT_METHODS:
        raise ValueError(f"unknown SoftPatch method '{method}' (choose from {', '.join(WEIGHT_METHODS)})")
    x = torch.as_tensor(features, dtype=torch.float32)
    n, p, d = x.shape
    if n < 3:
        raise ValueError(f"SoftPatch needs at least 3 training images to compare patches, got {n}")
    gen = torch.Generator().manual_seed(seed)
    x = random_projection(x.reshape(n * p, d), projection_dim, gen).reshape(n, p, -1)
    per_position = x.permute(1, 0, 2)  # [P, N, d']
    scores = torch.empty(p, n)
    for start in range(0, p, _CHUNK):
        chunk = per_position[start : start + _CHUNK]
        if method == "lof":
            scores[start : start + _CHUNK] = local_outlier_factor(chunk, lof_k)
        elif method == "nearest":
            scores[start : start + _CHUNK] = nearest_other_distance(chunk) + 1.0
        else:
            scores[start : start + _CHUNK] = mahalanobis_to_own_gaussian(chunk) + 1.0
    return scores.T.contiguous().numpy()


def local_outlier_factor(points: torch.Tensor, k: int) -> torch.Tensor:
    """LOF of every point within its own set, batched over sets: [B, N, d] -> [B, N].

    Same definition as scikit-learn's LocalOutlierFactor(n_neighbors=k).negative_outlier_factor_ (negated):
    k nearest neighbours excluding the point itself, reachability distance max(k-distance(o), d(p, o)),
    LOF = mean neighbour density / own density.
    """
    n = points.shape[1]
    k = max(1, min(int(k), n - 1))
    dist = torch.cdist(points, points)
    dist.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    knn_dist, knn_idx = torch.topk(dist, k, dim=2, largest=False)  # sorted ascending
    k_distance = knn_dist[:, :, -1]  # [B, N]
    neighbour_k_distance = torch.gather(k_distance.unsqueeze(1).expand(-1, n, -1), 2, knn_idx)
    reach = torch.maximum(knn_dist, neighbour_k_distance)
    lrd = 1.0 / (reach.mean(dim=2) + 1e-10)
    neighbour_lrd = torch.gather(lrd.unsqueeze(1).expand(-1, n, -1), 2, knn_idx)
    return neighbour_lrd.mean(dim=2) / lrd


def nearest_other_distance(points: torch.Tensor) -> torch.Tensor:
    """Distance from each point to the nearest other point of its set: [B, N, d] -> [B, N]."""
    dist = torch.cdist(points, points)
    dist.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    return dist.min(dim=2).values


def mahalanobis_to_own_gaussian(points: torch.Tensor) -> torch.Tensor:
    """Mahalanobis distance of each point to a Gaussian fitted on its set: [B, N, d] -> [B, N]."""
    _, n, d = points.shape
    mean = points.mean(dim=1, keepdim=True)
    centred = points - mean
    cov = centred.transpose(1, 2) @ centred / max(n - 1, 1) + _COV_RIDGE * torch.eye(d)
    inv = torch.linalg.inv(cov)
    sq = ((centred @ inv) * centred).sum(dim=2)
    return sq.clamp(min=0.0).sqrt()


def select_clean(scores: np.ndarray, filter_fraction: float) -> np.ndarray:
    """Bool mask (same shape as `scores`) of patches kept for the coreset: all but the most outlying fraction.

    The cut is the (1 - filter_fraction) quantile of all scores, as in the official code; ties at the cut
    are kept.
    """
    if not 0.0 <= filter_fraction < 1.0:
        raise ValueError(f"filter fraction must be in [0, 1), got {filter_fraction}")
    if filter_fraction == 0.0:
        return np.ones(scores.shape, dtype=bool)
    cut = np.quantile(scores, 1.0 - filter_fraction)
    return scores <= cut
