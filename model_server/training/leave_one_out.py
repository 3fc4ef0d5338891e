"""Honest scores of training images: each one scored as if it were new, against the bank patches of the
other images. The threshold (fit.py) and the choice of the bank's index (bank_index.py) both rest on them."""

from __future__ import annotations

import numpy as np

from model_server.engine.class_model import ClassModel
from model_server.engine.memory_bank import NearestNeighbourScorer
from model_server.training.feature_store import BATCH_SIZE, FeatureStore

#: Bank neighbours searched per patch for the nearest one from another image.
_LOO_NEIGHBOURS = 16


def leave_one_out_patch_scores(
    scorer: NearestNeighbourScorer, store: FeatureStore, source: np.ndarray, images: np.ndarray
) -> np.ndarray:
    """Patch scores [len(images), rows, cols] of training images as if each were new: every patch is matched
    to its nearest bank patch from another image. Honest scores, with no image kept out of the bank."""
    p, dim = store.patches_per_image, store.shape[3]
    bank_image = source // p
    k = min(_LOO_NEIGHBOURS, len(source))
    out = np.empty((len(images), *store.shape[1:3]), dtype=np.float32)
    done = 0
    for group in np.array_split(images, max(1, -(-len(images) // BATCH_SIZE))):
        feats = np.concatenate([store.read(int(i), int(i) + 1) for i in group]).reshape(-1, dim)
        dist, idx = scorer.neighbours(feats, k)  # one search per batch: BLAS-sized work
        owner = np.repeat(group, p)[:, None]
        others = np.where(bank_image[idx] == owner, np.inf, dist).min(axis=1)
        # all k nearest from the image itself: its nearest other one is at least as far as the k-th
        nearest = np.where(np.isfinite(others), others, dist.max(axis=1))
        nearest = np.where(store.valid[group].reshape(-1), nearest, np.float32(0.0))
        out[done : done + len(group)] = nearest.reshape(len(group), *store.shape[1:3])
        done += len(group)
    return out


def leave_one_out_scores(
    model: ClassModel, store: FeatureStore, source: np.ndarray, images: np.ndarray
) -> np.ndarray:
    """Image scores of training images as if each were new (`leave_one_out_patch_scores`, pooled)."""
    return model.image_scores(leave_one_out_patch_scores(model.scorer, store, source, images))
