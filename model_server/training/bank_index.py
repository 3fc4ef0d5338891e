"""Whether a class's bank is served through an inverted file (engine/memory_bank.py), chosen from the class's
own good images.

An inverted file compares each test patch with the bank patches of its nearest few lists instead of all of
them: 2-3x less kNN time at these bank sizes, measured. It may miss a patch's true nearest neighbour and then
scores the patch higher than exhaustive search would. So training measures the effect on held-out scores
before keeping it: the leave-one-image-out patch scores of some good training images (each matched only to
bank patches of other images, as a new image would be), exhaustive against indexed, for 1, 2, 4... probes,
then once between the last failing count and the first matching one (6 where 4 missed and 8 matched: the
kNN time grows with the probes). The fewest probes that give every one of those images its exhaustive image
score (to `IMAGE_TOLERANCE`) and nearly every patch its exhaustive score are kept; if none does below half
the lists, the bank stays exhaustive, as it does when it is small enough for exhaustive search to cost little.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from model_server.engine.class_model import ClassModel
from model_server.engine.memory_bank import BankIndex, NearestNeighbourScorer
from model_server.training.feature_store import FeatureStore
from model_server.training.leave_one_out import leave_one_out_patch_scores

#: Banks smaller than this are searched exhaustively (a 4,815-patch bank took 18 ms per 900 px image here).
MIN_INDEXED_BANK = 2048
#: Held-out good images the indexed scores are checked on (a seeded subset of the threshold's images).
CHECK_IMAGES = 24
#: Largest relative rise of a held-out image score the index may cause.
IMAGE_TOLERANCE = 0.002
#: Share of held-out patch scores that must equal the exhaustive ones.
PATCH_AGREEMENT = 0.99
#: Inverted-file lists per square root of the bank's patches (`index_lists`).
LISTS_PER_ROOT = 2
#: k-means iterations for the centroids (faiss's default is 25; the lists only need to be compact).
KMEANS_ITERATIONS = 20


def index_lists(bank_patches: int) -> int:
    """Lists of an inverted file over a bank of this size: about twice its square root. Finer lists need
    fewer of their patches scanned for the same held-out scores: bottle at 384 px, 4,815 patches, 2,304
    queries, 139 lists and 4 probes against 69 lists and 3 probes: 3.4 against 3.6 ms; with equal layer
    weighting 139 and 4 against 69 and 6: 3.4 against 6.0 ms (at 278 lists it took 24 probes)."""
    return max(8, round(LISTS_PER_ROOT * math.sqrt(bank_patches)))


def fit_centroids(bank: np.ndarray, lists: int, seed: int) -> np.ndarray:
    kmeans = faiss.Kmeans(bank.shape[1], lists, niter=KMEANS_ITERATIONS, seed=seed, verbose=False)
    kmeans.cp.min_points_per_centroid = 1  # a small bank is still clustered; faiss would only warn
    kmeans.train(np.ascontiguousarray(bank, dtype=np.float32))
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def agreement(exhaustive: np.ndarray, indexed: np.ndarray, model: ClassModel) -> dict:
    """How closely indexed held-out patch scores [N, rows, cols] follow the exhaustive ones."""
    rise = model.image_scores(indexed) / np.maximum(model.image_scores(exhaustive), 1e-12) - 1.0
    same = np.isclose(indexed, exhaustive, rtol=1e-3, atol=1e-6)  # the two searches round differently
    return {"max_image_rise": round(float(rise.max()), 6), "patches_equal": round(float(same.mean()), 6)}


def choose_index(
    model: ClassModel, store: FeatureStore, source: np.ndarray, images: np.ndarray, seed: int
) -> tuple[BankIndex | None, dict]:
    """(index or None for exhaustive search, what was measured), from held-out scores of `images`."""
    bank = model.bank
    if len(bank) < MIN_INDEXED_BANK:
        return None, {"kind": "exhaustive", "why": f"bank of {len(bank)} patches"}
    lists = index_lists(len(bank))
    centroids = fit_centroids(bank, lists, seed)
    rng = np.random.default_rng(seed)
    check = np.sort(rng.choice(images, min(CHECK_IMAGES, len(images)), replace=False))
    exhaustive_scorer = NearestNeighbourScorer(bank, model.weights)
    exhaustive = leave_one_out_patch_scores(exhaustive_scorer, store, source, check)
    tried: list[dict] = []

    def matches(probes: int) -> bool:
        indexed = leave_one_out_patch_scores(
            NearestNeighbourScorer(bank, model.weights, BankIndex(centroids, probes)), store, source, check
        )
        found = agreement(exhaustive, indexed, model)
        tried.append({"probes": probes, **found})
        return found["max_image_rise"] <= IMAGE_TOLERANCE and found["patches_equal"] >= PATCH_AGREEMENT

    probes = 1
    while probes * 2 <= lists and not matches(probes):
        probes *= 2
    if probes * 2 > lists:
        return None, {"kind": "exhaustive", "why": "no probe count matched held-out scores", "tried": tried}
    middle = (probes // 2 + probes) // 2  # one step between the last failing count and the first matching
    if probes // 2 < middle < probes and matches(middle):
        probes = middle
    info = {"kind": "ivf", "lists": lists, "probes": probes, "checked_images": len(check), "tried": tried}
    return BankIndex(centroids, probes), info
