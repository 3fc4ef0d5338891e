"""PatchCore and SoftPatch models of one product class: fit a memory bank, score patch features.

Both models share everything except how the memory bank is chosen: PatchCore takes a greedy coreset of all
training patches; SoftPatch first scores each patch's outlierness (softpatch.py), keeps the most outlying
fraction out of the coreset and weights the kept patches. A `ClassModel` is plain data (bank, weights,
calibration, card) so artifacts store and load it without pickling code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from model_server import defaults
from model_server.calibration import DEFAULT_QUANTILE, Calibration, calibrate
from model_server.common import FeatureConfig, FeatureExtractor, NearestNeighbourScorer, resize_rgb
from model_server.datasets import ClassSplit, Sample, split_holdout
from model_server.errors import DataError
from model_server.sampler import GreedyCoresetSampler
from model_server.softpatch import METHODS, patch_outlier_scores, select_clean

MODELS = ("patchcore", "softpatch")
#: Images per backbone forward pass while training and evaluating.
BATCH_SIZE = 8


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of one trained class model (stored in the artifact and the model card)."""

    model: str = "patchcore"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    coreset_ratio: float = defaults.CORESET_RATIO
    projection_dim: int = 128
    seed: int = 0
    # SoftPatch (official defaults; lof_k really is used here)
    weight_method: str = defaults.WEIGHT_METHOD
    lof_k: int = defaults.LOF_K
    filter_fraction: float = defaults.FILTER_FRACTION
    soft_weights: bool = True
    # threshold calibration on held-out good training images
    holdout_fraction: float = 0.1
    threshold_quantile: float = DEFAULT_QUANTILE

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model '{self.model}' (choose from {', '.join(MODELS)})")
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ValueError(f"coreset ratio must be in (0, 1], got {self.coreset_ratio}")
        if self.weight_method not in METHODS:
            raise ValueError(
                f"unknown SoftPatch method '{self.weight_method}' (choose from {', '.join(METHODS)})"
            )
        if self.lof_k < 1:
            raise ValueError(f"lof_k must be at least 1, got {self.lof_k}")
        if not 0.0 <= self.filter_fraction < 1.0:
            raise ValueError(f"filter fraction must be in [0, 1), got {self.filter_fraction}")

    def to_dict(self) -> dict:
        return {**asdict(self), "features": self.features.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(**{**data, "features": FeatureConfig.from_dict(data["features"])})


@dataclass
class ClassModel:
    """A trained model of one product class."""

    class_name: str
    config: ModelConfig
    bank: np.ndarray  # [M, dim] float32
    weights: np.ndarray | None  # [M] SoftPatch soft weights, None for PatchCore
    calibration: Calibration
    card: dict = field(default_factory=dict)
    _scorer: NearestNeighbourScorer | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def scorer(self) -> NearestNeighbourScorer:
        if self._scorer is None:
            self._scorer = NearestNeighbourScorer(self.bank, self.weights)
        return self._scorer

    def patch_scores(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """Patch features [B, rows, cols, dim] -> patch scores [B, rows, cols]."""
        f = np.asarray(features, dtype=np.float32)
        scores, _ = self.scorer.search(f.reshape(-1, f.shape[-1]))
        return scores.reshape(f.shape[:-1])


def image_scores(patch_scores: np.ndarray) -> np.ndarray:
    """Image score = the largest patch score (official PatchCore)."""
    return patch_scores.reshape(len(patch_scores), -1).max(axis=1)


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
