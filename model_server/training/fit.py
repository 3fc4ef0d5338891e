"""Fitting PatchCore and SoftPatch on one product class: features of the good images, the memory bank, the
threshold from leave-one-image-out scores, the model card.

Both models share everything except how the memory bank is chosen: PatchCore takes a greedy coreset of all
training patches; SoftPatch first scores each patch's outlierness (softpatch.py), keeps the most outlying
fraction out of the coreset and weights the kept patches. Features are written to a temporary file batch by
batch and the coreset is streamed (sampler.py), so memory and time grow linearly with the number of images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from model_server.engine.calibration import Calibration
from model_server.engine.class_model import ClassModel
from model_server.engine.config import ModelConfig
from model_server.engine.features import FeatureExtractor
from model_server.engine.provenance import Provenance, SourceImage, bounded, jpeg
from model_server.errors import DataError
from model_server.training.bank_growth import grow, ladder, steps_record
from model_server.training.bank_index import choose_index
from model_server.training.feature_store import BATCH_SIZE, FeatureStore
from model_server.training.leave_one_out import leave_one_out_scores
from model_server.training.sampler import StreamingCoreset, one_thread_per_op, projection_matrix
from model_server.training.samples import ClassSplit, Sample, source_box
from model_server.training.softpatch import patch_outlier_scores, select_clean
from model_server.training.threshold import calibrate

#: Training images whose leave-one-out scores set the threshold (a seeded subset when there are more).
THRESHOLD_IMAGES = 120


def with_class_geometry(config: ModelConfig, samples: Sequence[Sample]) -> ModelConfig:
    """`config` with the box of the class's training images as its source size (one scale per class)."""
    return replace(config, features=replace(config.features, source_size=source_box(list(samples))))


def load_placed(
    extractor: FeatureExtractor, images: Sequence[Sample | np.ndarray]
) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Decode (samples) and place images on the canvas on two threads (PIL releases the GIL)."""

    def one(item: Sample | np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        return extractor.place(item if isinstance(item, np.ndarray) else item.load_rgb())

    with ThreadPoolExecutor(max_workers=2) as pool:
        placed = list(pool.map(one, images))
    return [c for c, _ in placed], [hw for _, hw in placed]


def feature_batches(
    extractor: FeatureExtractor,
    images: Sequence[Sample | np.ndarray],
    desc: str = "features",
    progress: bool = True,
    on_canvas: Callable[[int, np.ndarray], None] | None = None,
) -> Iterator[tuple[int, np.ndarray, list[tuple[int, int]]]]:
    """(index of the first image, patch features [B, rows, cols, dim], the (h, w) each image covers on the
    canvas) batch by batch, with a progress bar. `on_canvas(i, placed image)` sees each image as the network
    does (the provenance's thumbnails)."""
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(images), BATCH_SIZE):
            batch = images[start : start + BATCH_SIZE]
            canvases, placed = load_placed(extractor, batch)
            if on_canvas is not None:
                for i, (canvas, (h, w)) in enumerate(zip(canvases, placed, strict=True)):
                    on_canvas(start + i, canvas[:h, :w])
            feats = extractor.embed(extractor.normalise(canvases)).numpy()
            yield start, feats, placed
            bar.update(len(batch))


def extract_features(
    extractor: FeatureExtractor,
    images: Sequence[Sample | np.ndarray],
    desc: str = "features",
    progress: bool = True,
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(patch features [N, rows, cols, dim], the (h, w) each image covers), all in memory (test sets)."""
    cfg = extractor.config
    out = np.empty((len(images), *cfg.grid, cfg.dim), dtype=np.float32)
    placed: list[tuple[int, int]] = []
    for start, feats, hw in feature_batches(extractor, images, desc, progress):
        out[start : start + len(feats)] = feats
        placed.extend(hw)
    return out, placed


@dataclass
class MemoryBank:
    bank: np.ndarray  # [M, dim]
    weights: np.ndarray | None  # SoftPatch soft weights [M]
    source: np.ndarray  # [M] index of the training patch each bank patch is (image = source // patches)
    stats: dict


def _softpatch_eligibility(
    store: FeatureStore, config: ModelConfig, stats: dict
) -> tuple[np.ndarray, np.ndarray]:
    """(eligible [N*P] bool, outlier score [N*P]) of every training patch, from features projected once."""
    t0 = time.perf_counter()
    n, p, dim = store.shape[0], store.patches_per_image, store.shape[3]
    matrix = projection_matrix(dim, config.projection_dim, config.seed)
    width = dim if matrix is None else matrix.shape[1]
    projected = np.empty((n, p, width), dtype=np.float32)
    for start, feats in store.batches():
        flat = feats.reshape(len(feats), p, dim)
        projected[start : start + len(feats)] = flat if matrix is None else flat @ matrix
    outlier = patch_outlier_scores(projected, config.weight_method, config.lof_k, projection_dim=None)
    del projected
    valid = store.valid.reshape(n, p)
    filtered = ~select_clean(outlier, config.filter_fraction) & valid
    eligible = valid & ~filtered
    stats["n_filtered"] = int(filtered.sum())
    stats["filtered_per_image"] = (filtered.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)).round(4).tolist()
    stats["outlier_seconds"] = round(time.perf_counter() - t0, 3)
    return eligible.reshape(-1), np.clip(outlier, 0.0, None).reshape(-1).astype(np.float32)


def memory_banks(
    store: FeatureStore, config: ModelConfig, ratios: Sequence[float], progress: bool = False
) -> list[MemoryBank]:
    """The memory banks of a class at each of `ratios` (PatchCore or SoftPatch), nested: one coreset sampled
    at the largest ratio, each smaller bank its first picks."""
    p = store.patches_per_image
    stats: dict = {"n_patches": int(store.valid.sum())}
    eligible, outlier = store.valid.reshape(-1), None
    if config.model == "softpatch":
        eligible, outlier = _softpatch_eligibility(store, config, stats)
    t0 = time.perf_counter()
    coreset = StreamingCoreset(max(ratios), config.projection_dim, seed=config.seed)
    with one_thread_per_op():
        for start, feats in tqdm(list(store.batches(32)), desc="coreset", disable=not progress, leave=False):
            ids = np.arange(start * p, (start + len(feats)) * p)
            coreset.add(feats.reshape(-1, store.shape[3]), ids, eligible[ids])
        levels = coreset.finish_levels(ratios)
    stats["coreset_seconds"] = round(time.perf_counter() - t0, 3)
    banks = []
    for bank, source in levels:
        weights = None
        if outlier is not None and config.soft_weights:
            weights = np.ascontiguousarray(outlier[source])
        banks.append(MemoryBank(bank, weights, source, {**stats, "bank_patches": int(bank.shape[0])}))
    return banks


def memory_bank(store: FeatureStore, config: ModelConfig, progress: bool = False) -> MemoryBank:
    """The memory bank of a class at its configured ratio."""
    return memory_banks(store, config, [config.coreset_ratio], progress)[0]


def _threshold_images(n: int, seed: int) -> np.ndarray:
    if n <= THRESHOLD_IMAGES:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, THRESHOLD_IMAGES, replace=False))


def _fit_bank(
    class_name: str, config: ModelConfig, mb: MemoryBank, store: FeatureStore, chosen: np.ndarray
) -> tuple[ClassModel, np.ndarray]:
    """A class model on one bank, its index chosen, and the honest scores of the `chosen` good images."""
    model = ClassModel(class_name, config, mb.bank, mb.weights, Calibration(0.0, 0.0, 0.0, 0))
    t0 = time.perf_counter()
    model.index, mb.stats["index"] = choose_index(model, store, mb.source, chosen, config.seed)
    mb.stats["index_seconds"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    good_scores = leave_one_out_scores(model, store, mb.source, chosen)  # as served: through the index
    mb.stats["threshold_seconds"] = round(time.perf_counter() - t0, 3)
    return model, good_scores


def train_class(
    split: ClassSplit,
    config: ModelConfig,
    extractor: FeatureExtractor,
    progress: bool = True,
    fingerprint: Callable[[Sequence[Sample]], str] | None = None,
) -> ClassModel:
    """Fit one class: every training image into the memory bank, the threshold from their leave-one-out
    scores at the configured false-alarm rate."""
    n_good = sum(1 for s in split.train if s.label == 0)
    if n_good < 3:
        raise DataError(
            f"class {split.class_name} has {n_good} good training images: at least 3 are needed "
            "(each one's score against the others sets the threshold)"
        )
    t_start = time.perf_counter()
    cfg = extractor.config
    store = FeatureStore(len(split.train), cfg.grid, cfg.dim)
    thumbnails: dict[int, tuple[bytes, tuple[int, int]]] = {}

    def keep(i: int, placed: np.ndarray) -> None:
        thumbnails[i] = jpeg(placed)

    try:
        for start, feats, placed in feature_batches(
            extractor, split.train, f"{split.class_name} train", progress, on_canvas=keep
        ):
            store.write(start, feats, extractor.valid(placed))
        t_features = time.perf_counter() - t_start
        ratios = ladder(config.coreset_ratio, config.max_coreset_ratio)
        banks = memory_banks(store, config, ratios, progress=progress)
        good = np.array([i for i, s in enumerate(split.train) if s.label == 0])
        chosen = good[_threshold_images(len(good), config.seed)]

        def fit_bank(i: int) -> tuple[ClassModel, np.ndarray, int]:
            return (*_fit_bank(split.class_name, config, banks[i], store, chosen), len(banks[i].bank))

        step, model, good_scores, steps = grow(ratios, fit_bank)
        mb = banks[step]
        mb.stats["bank_growth"] = steps_record(steps, step)
        model.calibration = calibrate(good_scores, config.target_false_alarm_rate)
    finally:
        store.close()
    model.provenance = bank_provenance(split.train, mb.source, cfg.grid, thumbnails)
    model.card = _card(split, config, mb, fingerprint, model.calibration, t_features, t_start)
    # kept so a threshold for another false-alarm rate can be fitted without retraining
    model.card["threshold"]["good_scores"] = [round(float(v), 5) for v in good_scores]
    return model


def bank_provenance(
    samples: Sequence[Sample],
    source: np.ndarray,
    grid: tuple[int, int],
    thumbnails: dict[int, tuple[bytes, tuple[int, int]]],
) -> Provenance:
    """Where the chosen bank's patches came from: `source` [M] indexes the training patches (image-major,
    then row, col). Every training image is listed (ids are cheap); only those with a bank patch keep a
    thumbnail, within the class's cap (provenance.bounded)."""
    rows, cols = grid
    image, cell = np.divmod(np.asarray(source, dtype=np.int64), rows * cols)
    patches = np.stack([image, cell // cols, cell % cols], axis=1).astype(np.int32)
    images = []
    contributing = set(np.unique(image).tolist())
    for i, sample in enumerate(samples):
        thumb, size = thumbnails.get(i, (None, (0, 0))) if i in contributing else (None, (0, 0))
        h, w = sample.size() if i in contributing else (0, 0)
        images.append(SourceImage(sample.name, int(h), int(w), thumb, size, size))
    bounded(images, patches)
    return Provenance(patches, images)


def _card(
    split: ClassSplit,
    config: ModelConfig,
    mb: MemoryBank,
    fingerprint: Callable[[Sequence[Sample]], str] | None,
    calibration: Calibration,
    t_features: float,
    t_start: float,
) -> dict:
    weights_bytes = mb.weights.nbytes if mb.weights is not None else 0
    return {
        "class_name": split.class_name,
        "model": config.model,
        "data": {
            "source": split.source,
            "fingerprint": fingerprint(split.train) if fingerprint else None,
            "n_train": len(split.train),
            "n_threshold": calibration.n_images,
            "n_noise_in_train": sum(1 for s in split.train if s.label == 1),
            "noise_in_train": sorted(s.name for s in split.train if s.label == 1),
        },
        "training": {
            **mb.stats,
            "feature_seconds": round(t_features, 3),
            "total_seconds": round(time.perf_counter() - t_start, 3),
            "bank_bytes": int(mb.bank.nbytes + weights_bytes),
        },
        "threshold": calibration.to_dict(),
    }
