"""Fitting PatchCore and SoftPatch on one product class: features of the good images, the memory bank, the
threshold from held-out good images, the model card.

Both models share everything except how the memory bank is chosen: PatchCore takes a greedy coreset of all
training patches; SoftPatch first scores each patch's outlierness (softpatch.py), keeps the most outlying
fraction out of the coreset and weights the kept patches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

from model_server.engine.calibration import Calibration
from model_server.engine.class_model import ClassModel
from model_server.engine.config import ModelConfig
from model_server.engine.features import FeatureExtractor, resize_rgb
from model_server.engine.maps import image_scores
from model_server.errors import DataError
from model_server.training.datasets import ClassSplit, Sample
from model_server.training.protocols import split_holdout
from model_server.training.sampler import GreedyCoresetSampler
from model_server.training.softpatch import patch_outlier_scores, select_clean
from model_server.training.threshold import calibrate

#: Images per backbone forward pass while training and evaluating.
BATCH_SIZE = 8


def load_resized(samples: Sequence[Sample], size: int) -> list[np.ndarray]:
    """Decode and resize samples on two threads (PIL releases the GIL while decoding)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda s: resize_rgb(s.load_rgb(), size), samples))


def extract_features(
    extractor: FeatureExtractor, samples: Sequence[Sample], desc: str = "features", progress: bool = True
) -> np.ndarray:
    """Patch features [N, rows, cols, dim] of samples, in batches, with a progress bar."""
    cfg = extractor.config
    out = np.empty((len(samples), *cfg.grid, cfg.dim), dtype=np.float32)
    with tqdm(total=len(samples), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(samples), BATCH_SIZE):
            batch = samples[start : start + BATCH_SIZE]
            out[start : start + len(batch)] = extractor(load_resized(batch, cfg.input_size)).numpy()
            bar.update(len(batch))
    return out


def build_memory_bank(
    features: np.ndarray, config: ModelConfig, progress: bool = False
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Training patch features [N, rows, cols, dim] -> (bank, soft weights or None, statistics)."""
    n = features.shape[0]
    flat = features.reshape(-1, features.shape[-1])
    stats: dict = {"n_patches": int(flat.shape[0])}
    eligible = None
    all_weights = None
    if config.model == "softpatch":
        t0 = time.perf_counter()
        outlier = patch_outlier_scores(
            features.reshape(n, -1, features.shape[-1]),
            method=config.weight_method,
            lof_k=config.lof_k,
            projection_dim=config.projection_dim,
            seed=config.seed,
        )
        eligible = select_clean(outlier, config.filter_fraction)
        all_weights = np.clip(outlier, 0.0, None).reshape(-1).astype(np.float32)
        eligible = eligible.reshape(-1)
        stats["n_filtered"] = int((~eligible).sum())
        stats["filtered_per_image"] = (~eligible).reshape(n, -1).mean(axis=1).round(4).tolist()
        stats["outlier_seconds"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    sampler = GreedyCoresetSampler(
        config.coreset_ratio, config.projection_dim, seed=config.seed, progress=progress
    )
    chosen = sampler.select(flat, eligible)
    stats["coreset_seconds"] = round(time.perf_counter() - t0, 3)
    bank = np.ascontiguousarray(flat[chosen])
    weights = None
    if all_weights is not None and config.soft_weights:
        weights = np.ascontiguousarray(all_weights[chosen])
    stats["bank_patches"] = int(bank.shape[0])
    return bank, weights, stats


def train_class(
    split: ClassSplit,
    config: ModelConfig,
    extractor: FeatureExtractor,
    progress: bool = True,
    fingerprint: Callable[[Sequence[Sample]], str] | None = None,
) -> ClassModel:
    """Fit one class: hold out good images, build the memory bank from the rest, calibrate the threshold."""
    if not split.train:
        raise DataError(f"class {split.class_name} has no training images")
    fit, holdout = split_holdout(split.train, config.holdout_fraction, seed=config.seed)
    if not holdout:
        n_good = sum(1 for s in split.train if s.label == 0)
        raise DataError(
            f"class {split.class_name} has {n_good} good training images: at least 6 are needed "
            "(some are held out to set the threshold)"
        )
    if config.model == "softpatch" and len(fit) < 3:
        raise DataError(f"class {split.class_name}: SoftPatch needs at least 3 training images after holdout")
    t_start = time.perf_counter()
    features = extract_features(extractor, fit, desc=f"{split.class_name} train", progress=progress)
    t_features = time.perf_counter() - t_start
    bank, weights, stats = build_memory_bank(features, config, progress=progress)
    del features
    model = ClassModel(split.class_name, config, bank, weights, calibration=Calibration(0.0, 0.0, 0.0, 0))
    held = extract_features(extractor, holdout, desc=f"{split.class_name} holdout", progress=progress)
    model.calibration = calibrate(image_scores(model.patch_scores(held)), config.threshold_quantile)
    model.card = {
        "class_name": split.class_name,
        "model": config.model,
        "data": {
            "source": split.source,
            "fingerprint": fingerprint(split.train) if fingerprint else None,
            "n_train": len(split.train),
            "n_fit": len(fit),
            "n_holdout": len(holdout),
            "n_noise_in_train": sum(1 for s in split.train if s.label == 1),
            "noise_in_train": sorted(s.name for s in split.train if s.label == 1),
        },
        "training": {
            **stats,
            "feature_seconds": round(t_features, 3),
            "total_seconds": round(time.perf_counter() - t_start, 3),
            "bank_bytes": int(bank.nbytes + (weights.nbytes if weights is not None else 0)),
        },
        "threshold": model.calibration.to_dict(),
    }
    return model
