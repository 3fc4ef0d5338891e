"""Learning from reviews: confirmed false alarms grow a class's memory bank, with no retraining.

A PatchCore bank is a set of good patches, so an image a reviewer marked good is new knowledge.

- **Only what is new enters the bank.** A reviewed patch is new when it scores above the bank's coverage
  radius (`coverage_radius`: a high quantile of what the bank's own patches score against the rest of the
  bank, i.e. how far apart the coreset keeps its patches). New patches are added by continuing the coreset's
  greedy farthest-point rule at that radius (`select_new_patches`), so a novel region adds the few patches
  that cover it at the bank's own spacing, not every patch it has, and a familiar image adds nothing.
- **Out-of-fold scores.** The reviewed images are split into folds (by group, so near-copies of one part never
  sit on both sides); fold k is scored against the original bank plus what only the *other* folds add. These
  scores never see an image's own patches: they are what images like the reviewed ones will score next.
- **The threshold** stays the one fitted on the training images' leave-one-out scores by default ("keep"),
  a choice made on good images alone, before any defect was scored. Pooling those scores with the
  out-of-fold ones ("pooled") and refitting at the target rate is honest (no in-bank image) but not sound:
  the reviewed images are there *because* they scored above the threshold, so the pool holds the hard tail
  of the new traffic at a weight set by how many reviews were sent (36 against 120 training scores on ELPV
  mono), not by how often such images come. Measured (bench_feedback.py): the pooled refit moved ELPV mono's
  threshold from 40.2 to 57.7, above every training score, and flagged 0 of 900 drifted good cells, the 1 %
  target missed the other way; the real defects then showed the price, recall 195/313 -> 0/313 (bottle:
  30.2 -> 32.8, recall 63/63 -> 62/63). The kept threshold's false-alarm rate on the training population
  stays valid and can only fall, since a larger bank only lowers scores; "out_of_fold_flagged" (reviewed
  images still above it out of fold) estimates what stays flagged of traffic like the reviewed images
  (bottle 4/21 against 12 of 114 on held-out copies, ELPV 4/36 against 16 of 116).
- **SoftPatch** weights scale distances; a new patch gets the median weight of the bank: a reviewer vouched
  for it, so it counts as a typical kept training patch, whichever outlier score the bank used (LOF's neutral
  1.0 is not neutral for the "nearest" and "gaussian" weights, which are shifted distances).

Every other class of an artifact is written back as loaded (`update_artifact`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from model_server.engine.artifact import load_artifact, save_artifact
from model_server.engine.calibration import Calibration
from model_server.engine.class_model import ClassModel
from model_server.engine.features import FeatureExtractor
from model_server.engine.memory_bank import NearestNeighbourScorer
from model_server.engine.predictor import Predictor
from model_server.engine.provenance import Provenance, SourceImage, bounded, jpeg
from model_server.errors import DataError, UnknownClassError
from model_server.training.fit import extract_features
from model_server.training.threshold import calibrate

#: Quantile of the bank's own leave-one-out patch scores that is its coverage radius. The greedy coreset
#: picks each patch as the one farthest from those picked before, so (up to its random projection) every
#: bank patch is at least the coreset's covering radius from the others, and the spread above that is the
#: spacing of its sparser regions. 0.99, fixed a priori: a reviewed patch is new only when it is farther from
#: the bank than nearly every bank patch is from its peers; a lower quantile only adds more patches.
RADIUS_QUANTILE = 0.99
#: How the threshold follows an update (module docstring): "keep" the one fitted on the training images'
#: leave-one-out scores, or refit it on those "pooled" with the reviewed images' out-of-fold scores.
THRESHOLD_POLICIES = ("keep", "pooled")
THRESHOLD_POLICY = "keep"
#: The image id of a reviewed-good image whose patches the update added to the bank (provenance.py).
REVIEW_PREFIX = "review:"
#: Bank patches whose leave-one-out score estimates the radius (a seeded sample: a bounded cost).
RADIUS_SAMPLE = 4096


@dataclass
class ReviewedFeatures:
    """Patch features of reviewed images and their scores against the model's original bank."""

    features: np.ndarray  # [N, rows, cols, dim]
    valid: np.ndarray  # [N, rows, cols] cells over image, not padding
    scores: np.ndarray  # [N, rows, cols] scores against the original bank (0 on padding)


def bank_self_scores(model: ClassModel, sample: int = RADIUS_SAMPLE) -> np.ndarray:
    """What (a seeded sample of) the bank's patches score against the rest of the bank: how far apart the
    bank keeps its patches, in the scorer's units (SoftPatch weights included)."""
    m = model.bank.shape[0]
    if m < 2:
        return np.zeros(0, dtype=np.float32)
    rows = np.arange(m)
    if m > sample:
        rows = np.sort(np.random.default_rng(model.config.seed).choice(m, sample, replace=False))
    dist, idx = model.scorer.neighbours(model.bank[rows], 2)
    return np.where(idx == rows[:, None], np.inf, dist).min(axis=1)


def coverage_radius(model: ClassModel, quantile: float = RADIUS_QUANTILE) -> float:
    """The bank's coverage radius: a reviewed patch that scores no more than this is already covered."""
    scores = bank_self_scores(model)
    scores = scores[np.isfinite(scores)]
    return float(np.quantile(scores, quantile)) if scores.size else 0.0


def new_patch_weight(model: ClassModel) -> float | None:
    """SoftPatch weight of an added patch (the bank's median: a typical kept patch); None for PatchCore."""
    return None if model.weights is None else float(np.median(model.weights))


def reviewed_features(
    model: ClassModel, extractor: FeatureExtractor, images: Sequence[np.ndarray], progress: bool = False
) -> ReviewedFeatures:
    """Features of the reviewed images (one forward pass each) and their patch scores as the model stands."""
    features, placed = extract_features(extractor, images, f"{model.class_name} reviews", progress)
    valid = extractor.valid(placed)
    return ReviewedFeatures(features, valid, model.patch_scores(features, valid))


def select_new_patches(
    features: np.ndarray, scores: np.ndarray, radius: float, weight: float | None = None
) -> np.ndarray:
    """Indices of the patches to add: greedy farthest-point selection continued from the bank, stopping once
    every patch scores within `radius` of the bank plus what was chosen (the coreset's own rule, so a novel
    region is covered at the bank's spacing, not copied whole). `scores` are against the bank."""
    chosen: list[int] = []
    if len(features) == 0:
        return np.zeros(0, dtype=np.int64)
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    nearest = torch.from_numpy(np.asarray(scores, dtype=np.float32).copy())
    scale = 1.0 if weight is None else weight
    while True:
        i = int(torch.argmax(nearest))
        if float(nearest[i]) <= radius:
            break
        chosen.append(i)
        # the difference, not |x|^2 - 2x.c + |c|^2: that cancels in float32 for nearby patches
        dist = torch.linalg.vector_norm(x - x[i], dim=1).mul_(scale)
        torch.minimum(nearest, dist, out=nearest)
    return np.asarray(chosen, dtype=np.int64)


def _added_patches(
    reviewed: ReviewedFeatures, images: np.ndarray, radius: float, weight: float | None
) -> np.ndarray:
    """Patches [A, dim] that images `images` (indices) add to the bank."""
    return _added_with_cells(reviewed, images, radius, weight)[0]


def _added_with_cells(
    reviewed: ReviewedFeatures, images: np.ndarray, radius: float, weight: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(patches [A, dim] that images `images` add to the bank, (position in `images`, row, col) [A, 3])."""
    dim = reviewed.features.shape[-1]
    candidate = reviewed.valid[images] & (reviewed.scores[images] > radius)
    feats = reviewed.features[images][candidate].reshape(-1, dim)
    picked = select_new_patches(feats, reviewed.scores[images][candidate], radius, weight)
    return feats[picked], np.argwhere(candidate)[picked]  # argwhere: the boolean index's own order


def _scores_with(
    reviewed: ReviewedFeatures, images: np.ndarray, added: np.ndarray, weight: float | None
) -> np.ndarray:
    """Patch scores [n, rows, cols] of images `images` against the original bank plus `added`."""
    scores = reviewed.scores[images]
    if len(added) == 0 or len(images) == 0:
        return scores
    weights = None if weight is None else np.full(len(added), weight, dtype=np.float32)
    feats = reviewed.features[images]
    to_added, _ = NearestNeighbourScorer(added, weights).search(feats.reshape(-1, feats.shape[-1]))
    return np.minimum(scores, to_added.reshape(scores.shape))  # padding stays 0


def assign_folds(n: int, folds: int, groups: Sequence[str] | None, seed: int) -> np.ndarray:
    """Fold [n] of each image; images of one group (e.g. copies of one part) always share a fold."""
    keys = list(range(n)) if groups is None else list(groups)
    unique = list(dict.fromkeys(keys))
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[j]: rank % max(1, min(folds, len(unique))) for rank, j in enumerate(order)}
    return np.array([fold_of[k] for k in keys], dtype=np.int64)


def out_of_fold_scores(
    model: ClassModel, reviewed: ReviewedFeatures, fold: np.ndarray, radius: float, weight: float | None
) -> np.ndarray:
    """Image score [N] of every reviewed image against the original bank plus only the patches the *other*
    folds add: honest scores for the threshold, as none of an image's own patches is in its bank."""
    out = np.empty(len(fold), dtype=np.float64)
    for k in np.unique(fold):
        mine, others = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        added = _added_patches(reviewed, others, radius, weight)
        out[mine] = model.image_scores(_scores_with(reviewed, mine, added, weight))
    return out


def _check_inputs(model: ClassModel, images: Sequence[object], review_ids: Sequence[str]) -> None:
    """Refuse what would make the update wrong or dishonest."""
    if len(images) == 0:
        raise DataError(f"no reviewed images to learn from for class {model.class_name}")
    if len(images) != len(review_ids):
        raise DataError(f"{len(images)} images for {len(review_ids)} review ids: one id per image")
    if len(set(review_ids)) != len(review_ids):
        raise DataError("review ids repeat: each reviewed image may enter the bank once")
    seen = {r for u in model.card.get("updates", []) for r in u.get("review_ids", [])}
    again = sorted(seen.intersection(review_ids))
    if again:
        # their patches are in the bank already: scored again they would look better than new images do
        raise DataError(f"reviews already learned by this model: {', '.join(again[:5])}")


def _checked_policy(policy: str) -> str:
    if policy not in THRESHOLD_POLICIES:
        raise DataError(f"unknown threshold policy '{policy}' (choose from {', '.join(THRESHOLD_POLICIES)})")
    return policy


def refit_threshold(model: ClassModel, oof: np.ndarray, policy: str) -> tuple[Calibration, list | None]:
    """(calibration, the good scores it rests on, for the card) under `policy` (THRESHOLD_POLICIES)."""
    stored = (model.card.get("threshold") or {}).get("good_scores")
    if _checked_policy(policy) == "keep":
        return model.calibration, stored
    if not stored:
        raise DataError(
            f"class {model.class_name} has no stored leave-one-out good scores to refit its threshold on: "
            "retrain it with this version, or keep its threshold"
        )
    pooled = np.concatenate([np.asarray(stored, dtype=np.float64), oof])
    return calibrate(pooled, model.config.target_false_alarm_rate), _rounded(pooled)


def update_class_model(
    model: ClassModel,
    extractor: FeatureExtractor,
    images: Sequence[np.ndarray],
    review_ids: Sequence[str],
    folds: int = 5,
    progress: bool = False,
    groups: Sequence[str] | None = None,
    threshold: str = THRESHOLD_POLICY,
    radius_quantile: float = RADIUS_QUANTILE,
) -> tuple[ClassModel, dict]:
    """A new class model whose bank also covers these reviewed-good images, and the update's report (also
    appended to the new card's "updates"). `model` is left untouched.

    `groups` (optional, one per image) keeps related images in one fold (e.g. several shots of one part);
    `threshold` is the policy of THRESHOLD_POLICIES.
    """
    t0 = time.perf_counter()
    _check_inputs(model, images, review_ids)
    _checked_policy(threshold)  # before the forward passes
    if groups is not None and len(groups) != len(images):
        raise DataError(f"{len(groups)} groups for {len(images)} images")
    # never above the threshold: an image whose patches all score below it cannot be flagged (a map value is
    # an average of patch scores), while a wide bank's spacing could leave its patches above it
    radius = min(coverage_radius(model, radius_quantile), model.calibration.threshold)
    weight = new_patch_weight(model)
    reviewed = reviewed_features(model, extractor, images, progress)
    t_features = time.perf_counter() - t0
    fold = assign_folds(len(images), folds, groups, model.config.seed)
    oof = out_of_fold_scores(model, reviewed, fold, radius, weight)
    everyone = np.arange(len(images))
    added, cells = _added_with_cells(reviewed, everyone, radius, weight)
    calibration, good_scores = refit_threshold(model, oof, threshold)
    bank = np.concatenate([model.bank, added.astype(np.float32)])
    weights = None
    if model.weights is not None:
        weights = np.concatenate([model.weights, np.full(len(added), weight, dtype=np.float32)])
    report = {
        "class_name": model.class_name,
        "model": model.config.model,
        "review_ids": list(review_ids),
        "n_images": len(images),
        "folds": int(fold.max()) + 1,
        "patches_added": len(added),
        "bank_before": int(model.bank.shape[0]),
        "bank_after": int(bank.shape[0]),
        "coverage_radius": round(radius, 5),
        "radius_quantile": radius_quantile,
        "new_patch_weight": weight,
        "threshold_policy": threshold,
        "threshold_before": model.calibration.threshold,
        "threshold_after": calibration.threshold,
        "threshold_method": calibration.method,
        "n_threshold_scores": calibration.n_images,
        "scores_before": _rounded(model.image_scores(reviewed.scores)),
        "scores_after": _rounded(model.image_scores(_scores_with(reviewed, everyone, added, weight))),
        "out_of_fold_scores": _rounded(oof),
        "out_of_fold_flagged": int((oof > calibration.threshold).sum()),
        "feature_seconds": round(t_features, 3),
        "seconds": round(time.perf_counter() - t0, 3),
        "updated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    card = _updated_card(model.card, report, calibration.to_dict(), good_scores)
    provenance = reviewed_provenance(model, extractor, images, review_ids, cells)
    # the index's centroids stay valid: the added patches join their nearest lists when it is built
    updated = ClassModel(
        model.class_name, model.config, bank, weights, calibration, card, model.index, provenance
    )
    return updated, report


def reviewed_provenance(
    model: ClassModel,
    extractor: FeatureExtractor,
    images: Sequence[np.ndarray],
    review_ids: Sequence[str],
    cells: np.ndarray,
) -> Provenance | None:
    """The model's provenance with the added patches' sources appended: each reviewed image that adds a
    patch is listed as "review:<id>" with its own thumbnail. None when the model has none (an older
    artifact): its explanations stay absent rather than half known."""
    if model.provenance is None:
        return None
    used = sorted(set(cells[:, 0].tolist()))
    local = {k: j for j, k in enumerate(used)}
    sources = []
    for k in used:
        placed, (h, w) = extractor.place(images[k])
        thumb, size = jpeg(placed[:h, :w])
        height, width = images[k].shape[:2]
        sources.append(SourceImage(f"{REVIEW_PREFIX}{review_ids[k]}", height, width, thumb, (h, w), size))
    patches = np.array([[local[k], r, c] for k, r, c in cells.tolist()], dtype=np.int32).reshape(-1, 3)
    extended = model.provenance.extended(patches, sources)
    bounded(extended.images, extended.patches)
    return extended


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in values]


def _updated_card(card: dict, report: dict, threshold: dict, good_scores: list | None) -> dict:
    """The card of the updated model: the update recorded, the new threshold and the scores it was fitted on
    (so a later update refits on all of them); test metrics of the previous version kept only in the record,
    as they do not describe this one."""
    new = copy.deepcopy(card)
    record = {k: v for k, v in report.items() if k not in ("scores_before", "scores_after")}
    record["metrics_before"] = new.pop("metrics", None)
    new.setdefault("updates", []).append(record)
    new["threshold"] = {**threshold, "good_scores": good_scores}
    new.setdefault("data", {})["n_threshold"] = threshold["n_images"]
    return new


def update_artifact(
    artifact_path: str | Path,
    class_name: str,
    images: Sequence[np.ndarray | bytes],
    review_ids: Sequence[str],
    out_path: str | Path,
    folds: int = 5,
    groups: Sequence[str] | None = None,
    threshold: str = THRESHOLD_POLICY,
) -> dict:
    """Learn one class's reviewed-good images into a new artifact at `out_path`; every other class is
    written back as loaded. Images are decoded and featurised exactly as the predictor does. Returns the
    update's report."""
    if len(images) == 0:
        raise DataError(f"no reviewed images to learn from for class {class_name}")
    artifact = load_artifact(artifact_path)
    try:
        model = artifact.get(class_name)
    except UnknownClassError as exc:
        raise DataError(str(exc)) from None
    predictor = Predictor(artifact)
    rgb = [predictor.decode(img).rgb for img in images]
    updated, report = update_class_model(
        model,
        predictor.extractor(model.config.features),
        rgb,
        review_ids,
        folds=folds,
        groups=groups,
        threshold=threshold,
    )
    saved = save_artifact(out_path, {**artifact.classes, class_name: updated})
    return {**report, "model_version_before": artifact.model_version, "model_version": saved.model_version}
