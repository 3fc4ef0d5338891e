"""The predict path every caller shares (CLI, model server, benchmarks): bytes in, verdict and map out.

Stages, each timed: decode (bytes -> RGB, size-checked), preprocess (resize, normalise), backbone (CNN
forward and patch aggregation), knn (memory-bank search), heatmap (map upsampling and smoothing, plus the
PNG and regions when asked for).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_server.artifact import Artifact, load_artifact
from model_server.common import FeatureConfig, FeatureExtractor, anomaly_maps, resize_map
from model_server.datasets import MAX_PIXELS, read_image
from model_server.heatmap import heatmap_png, regions
from model_server.patchcore import ClassModel, image_scores

STAGES = ("decode", "preprocess", "backbone", "knn", "heatmap")


@dataclass
class Prediction:
    class_name: str
    model: str
    model_version: str
    anomaly_score: float
    normalized_score: float
    threshold: float
    is_anomaly: bool
    image_shape: tuple[int, int]  # (H, W) of the input image
    anomaly_map: np.ndarray  # raw scores at the model's input size
    regions: list[dict]
    timings_ms: dict[str, float] = field(default_factory=dict)
    heatmap_png: bytes | None = None

    def to_dict(self) -> dict:
        """JSON-ready fields (without the map and the PNG bytes)."""
        return {
            "class_name": self.class_name,
            "model": self.model,
            "model_version": self.model_version,
            "anomaly_score": self.anomaly_score,
            "normalized_score": self.normalized_score,
            "threshold": self.threshold,
            "is_anomaly": self.is_anomaly,
            "image_width": self.image_shape[1],
            "image_height": self.image_shape[0],
            "regions": self.regions,
            "timings_ms": self.timings_ms,
        }


class Predictor:
    """One loaded artifact; feature extractors are shared by classes with the same feature config.

    Thread-safe: forward passes may run concurrently (modules in eval mode, faiss searches are read-only).
    """

    def __init__(self, artifact: Artifact | str | Path, max_pixels: int = MAX_PIXELS) -> None:
        self.artifact = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
        self.max_pixels = max_pixels
        self._extractors: dict[FeatureConfig, FeatureExtractor] = {}
        self._guard = threading.Lock()
        for model in self.artifact.classes.values():
            self.extractor(model.config.features)
            model.scorer  # noqa: B018 - build the faiss index now, not on the first request

    @property
    def model(self) -> str:
        return self.artifact.model

    @property
    def model_version(self) -> str:
        return self.artifact.model_version

    @property
    def classes(self) -> list[str]:
        return sorted(self.artifact.classes)

    def extractor(self, config: FeatureConfig) -> FeatureExtractor:
        with self._guard:
            if config not in self._extractors:
                self._extractors[config] = FeatureExtractor(config)
            return self._extractors[config]

    def render_heatmap(self, prediction: Prediction) -> bytes:
        """The anomaly map as a colour PNG at the input image's size; safe to run off the model thread."""
        cal = self.artifact.get(prediction.class_name).calibration
        return heatmap_png(resize_map(prediction.anomaly_map, prediction.image_shape), cal)

    def decode(self, data: bytes | np.ndarray | str | Path, name: str | None = None) -> np.ndarray:
        if isinstance(data, np.ndarray):
            return data
        return read_image(data, name=name, max_pixels=self.max_pixels)

    def predict(
        self,
        class_name: str,
        images: Sequence[bytes | np.ndarray | str | Path],
        names: Sequence[str] | None = None,
        return_heatmap: bool = False,
    ) -> list[Prediction]:
        """Score a batch of images of one class in one forward pass."""
        model = self.artifact.get(class_name)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        rgbs = [self.decode(img, names[i] if names else None) for i, img in enumerate(images)]
        timings["decode"] = time.perf_counter() - t
        return self.predict_decoded(model, rgbs, return_heatmap, timings)

    def predict_decoded(
        self,
        model: ClassModel,
        rgbs: Sequence[np.ndarray],
        return_heatmap: bool = False,
        timings: dict[str, float] | None = None,
    ) -> list[Prediction]:
        timings = dict(timings or {"decode": 0.0})
        cfg = model.config.features
        extractor = self.extractor(cfg)
        t = time.perf_counter()
        x = extractor.preprocess(rgbs)
        timings["preprocess"] = time.perf_counter() - t
        t = time.perf_counter()
        features = extractor.embed(x)  # concurrent forward passes are safe: eval mode, no state
        timings["backbone"] = time.perf_counter() - t
        t = time.perf_counter()
        patch = model.patch_scores(features)
        timings["knn"] = time.perf_counter() - t
        t = time.perf_counter()
        scores = image_scores(patch)
        maps = anomaly_maps(patch, cfg.input_size)
        cal = model.calibration
        out = []
        for rgb, score, amap in zip(rgbs, scores, maps, strict=True):
            shape = (int(rgb.shape[0]), int(rgb.shape[1]))
            out.append(
                Prediction(
                    class_name=model.class_name,
                    model=self.model,
                    model_version=self.model_version,
                    anomaly_score=float(score),
                    normalized_score=float(cal.normalize(float(score))),
                    threshold=cal.threshold,
                    is_anomaly=cal.is_anomaly(float(score)),
                    image_shape=shape,
                    anomaly_map=amap,
                    regions=regions(amap, cal.threshold, shape),
                )
            )
        if return_heatmap:
            for p in out:
                p.heatmap_png = self.render_heatmap(p)
        timings["heatmap"] = time.perf_counter() - t
        ms = {k: round(v * 1000.0, 3) for k, v in timings.items()}
        ms["total"] = round(sum(timings.values()) * 1000.0, 3)
        ms["batch_size"] = len(rgbs)  # images in this forward pass
        for p in out:
            p.timings_ms = dict(ms)
        return out
