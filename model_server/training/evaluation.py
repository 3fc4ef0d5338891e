"""Score a class's test split with a trained model and compute the MVTec metrics.

Pixel metrics are computed at the model's input resolution (masks resized nearest-neighbour), over good test
images and anomalous ones that have a mask; they are None when the class has no masks (ELPV, for example).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model_server.engine.class_model import ClassModel
from model_server.engine.features import FeatureExtractor
from model_server.engine.geometry import crop
from model_server.engine.maps import anomaly_maps, resize_map
from model_server.training import metrics
from model_server.training.fit import extract_features
from model_server.training.samples import ClassSplit


@dataclass
class ClassEvaluation:
    class_name: str
    names: list[str]
    labels: np.ndarray  # [N] 0 good, 1 anomalous
    scores: np.ndarray  # [N] raw image scores
    maps: np.ndarray  # [N, H, W] anomaly maps at the canvas shape
    masks: np.ndarray | None  # [N, H, W] bool, None without masks
    metrics: dict


def _mask_at(sample, shape: tuple[int, int]) -> np.ndarray | None:
    mask = sample.load_mask()
    if mask is None:
        return np.zeros(shape, dtype=bool) if sample.label == 0 else None
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.interpolate(t, size=shape, mode="nearest")[0, 0].numpy() > 0.5


def image_maps(patch: np.ndarray, placed: list[tuple[int, int]], shape: tuple[int, int]) -> np.ndarray:
    """Maps [N, H, W] of the image part of each canvas, brought to one `shape` so masks and metrics line up
    (padding never counts as a pixel)."""
    maps = anomaly_maps(patch, shape)
    out = np.empty_like(maps)
    for i, hw in enumerate(placed):
        out[i] = resize_map(crop(maps[i], hw), shape)
    return out


def evaluate_class(
    model: ClassModel, extractor: FeatureExtractor, split: ClassSplit, progress: bool = True
) -> ClassEvaluation:
    """Every test image's score and map, and the class metrics (threshold from the model's calibration)."""
    test = split.test
    excluded = set(model.card.get("data", {}).get("noise_in_train", []))
    test = [s for s in test if s.name not in excluded]  # an image trained on is never scored as a test image
    shape = model.config.features.canvas
    labels = np.array([s.label for s in test], dtype=np.int64)
    features, placed = extract_features(extractor, test, desc=f"{split.class_name} test", progress=progress)
    patch = model.patch_scores(features, extractor.valid(placed))
    scores = model.image_scores(patch)
    maps = image_maps(patch, placed, shape)
    masks = None
    usable = None
    if split.has_masks:
        masks = np.zeros((len(test), *shape), dtype=bool)
        usable = np.zeros(len(test), dtype=bool)
        for i, s in enumerate(test):
            m = _mask_at(s, shape)
            if m is not None:
                masks[i], usable[i] = m, True
    result = class_metrics(labels, scores, maps, masks, model, usable)
    return ClassEvaluation(split.class_name, [s.name for s in test], labels, scores, maps, masks, result)


def class_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray | None,
    model: ClassModel,
    usable: np.ndarray | None = None,
) -> dict:
    """Image AUROC, pixel AUROC, AUPRO, F1-max, and the confusion counts at the calibrated threshold.

    `usable` selects the images with a known mask for the pixel metrics (default: all).
    """
    threshold = model.calibration.threshold
    f1, f1_thr = metrics.f1_max(labels, scores)
    predicted = scores > threshold
    pixel_auroc = aupro = None
    if masks is not None:
        keep = np.ones(len(masks), dtype=bool) if usable is None else usable
        pixel_auroc = metrics.pixel_auroc(masks[keep], maps[keep])
        aupro = metrics.aupro(masks[keep], maps[keep])
    tp = int((predicted & (labels == 1)).sum())
    fp = int((predicted & (labels == 0)).sum())
    return {
        "image_auroc": metrics.image_auroc(labels, scores),
        "pixel_auroc": pixel_auroc,
        "aupro": aupro,
        "f1_max": f1,
        "f1_max_threshold": f1_thr,
        "threshold": threshold,
        "n_test": int(len(labels)),
        "n_good": int((labels == 0).sum()),
        "n_anomalous": int((labels == 1).sum()),
        "at_threshold": {
            "true_positives": tp,
            "false_positives": fp,
            "false_negatives": int((~predicted & (labels == 1)).sum()),
            "true_negatives": int((~predicted & (labels == 0)).sum()),
            "recall": tp / max(int((labels == 1).sum()), 1),
            "recall_ci95": [round(v, 4) for v in metrics.wilson_interval(tp, int((labels == 1).sum()))],
            "false_positive_rate": fp / max(int((labels == 0).sum()), 1),
            "false_positive_rate_ci95": [
                round(v, 4) for v in metrics.wilson_interval(fp, int((labels == 0).sum()))
            ],
        },
    }
