"""The predict path every caller shares (CLI, model server, benchmarks): bytes in, verdict and map out.

Three steps, each timed into the prediction: `decode` (bytes -> RGB, size-checked), `score` (one forward
pass over images of one class: preprocess, backbone, kNN, then maps and regions, the "heatmap" stage) and
`render` (the heatmap PNG, added to the heatmap stage). `predict` runs them in turn; the model server runs the
same three on its own threads (decode and render off the model lanes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ivadas_contract.limits import MAX_PIXELS
from model_server.engine.artifact import Artifact, load_artifact
from model_server.engine.class_model import ClassModel
from model_server.engine.config import FeatureConfig
from model_server.engine.explain import NO_PROVENANCE, explain_regions
from model_server.engine.features import FeatureExtractor
from model_server.engine.geometry import crop
from model_server.engine.heatmap import heatmap_png, regions
from model_server.engine.images import decode_image
from model_server.engine.maps import anomaly_maps, resize_map

STAGES = ("decode", "preprocess", "backbone", "knn", "heatmap")


@dataclass
class DecodedImage:
    rgb: np.ndarray  # HxWx3 uint8
    decode_ms: float = 0.0
    input: dict | None = None  # what was decoded and done to it (ImageInput); None for an array passed in


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
    anomaly_map: np.ndarray  # raw scores over the image's part of the model's canvas
    regions: list[dict]
    #: ms per stage of STAGES (the forward pass's stages are shared by its images), "total" (their sum) and
    #: "batch_size" (images in the forward pass)
    timings_ms: dict[str, float] = field(default_factory=dict)
    heatmap_png: bytes | None = None
    input: dict | None = None  # the decoded image's ImageInput: format, mode, frames, orientation, notes
    #: the image's patch scores and nearest bank patch per grid cell [rows, cols] (kept for `explain`)
    patch_scores: np.ndarray | None = field(default=None, repr=False)
    nearest: np.ndarray | None = field(default=None, repr=False)
    #: explain.py's explanations when asked for (None: not asked); `explanations_note` says why none
    explanations: list[dict] | None = None
    explanations_note: str | None = None

    def add_time(self, stage: str, ms: float) -> None:
        """Count `ms` more in `stage`; the total stays the sum of the stages."""
        self.timings_ms[stage] = round(self.timings_ms.get(stage, 0.0) + ms, 3)
        self.timings_ms["total"] = round(sum(self.timings_ms.get(k, 0.0) for k in STAGES), 3)

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
            **({"input": self.input} if self.input is not None else {}),
            **({"explanations": self.explanations} if self.explanations is not None else {}),
            **({"explanations_note": self.explanations_note} if self.explanations_note else {}),
        }


def _ms_since(t: float) -> float:
    return (time.perf_counter() - t) * 1000.0


class Predictor:
    """One loaded artifact; feature extractors are shared by classes with the same feature config.

    Thread-safe: forward passes may run concurrently (modules in eval mode, faiss searches are read-only).
    """

    def __init__(
        self, artifact: Artifact | str | Path, max_pixels: int = MAX_PIXELS, runtime: str | None = None
    ) -> None:
        self.artifact = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
        self.max_pixels = max_pixels
        self.runtime = runtime  # the feature network's (backends.py); None: the default
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

    def extractor(self, config: FeatureConfig) -> FeatureExtractor:
        with self._guard:
            if config not in self._extractors:
                self._extractors[config] = FeatureExtractor(config, self.runtime)
            return self._extractors[config]

    def decode(self, data: bytes | np.ndarray | str | Path, name: str | None = None) -> DecodedImage:
        """Bytes or a file -> RGB within the pixel limit (`ImageError` otherwise); an array passes through."""
        t = time.perf_counter()
        if isinstance(data, np.ndarray):
            return DecodedImage(data, 0.0)
        rgb, info = decode_image(data, name=name, max_pixels=self.max_pixels)
        return DecodedImage(rgb, _ms_since(t), info.to_dict())

    def score(self, model: ClassModel, images: Sequence[DecodedImage]) -> list[Prediction]:
        """One forward pass over images of one class: score, verdict, map and regions of each."""
        cfg = model.config.features
        extractor = self.extractor(cfg)
        shared: dict[str, float] = {}
        t = time.perf_counter()
        x, placed = extractor.preprocess([img.rgb for img in images])
        valid = extractor.valid(placed)
        shared["preprocess"] = _ms_since(t)
        t = time.perf_counter()
        features = extractor.embed(x)  # concurrent forward passes are safe: eval mode, no state
        shared["backbone"] = _ms_since(t)
        t = time.perf_counter()
        patch, nearest = model.patch_search(features, valid)
        shared["knn"] = _ms_since(t)
        t = time.perf_counter()
        scores = model.image_scores(patch)
        maps = [crop(m, hw) for m, hw in zip(anomaly_maps(patch, cfg.canvas), placed, strict=True)]
        cal = model.calibration
        out = []
        for img, score, amap in zip(images, scores, maps, strict=True):
            shape = (int(img.rgb.shape[0]), int(img.rgb.shape[1]))
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
                    input=img.input,
                    patch_scores=patch[len(out)],
                    nearest=nearest[len(out)],
                )
            )
        shared["heatmap"] = _ms_since(t)
        for img, pred in zip(images, out, strict=True):
            pred.timings_ms = {"batch_size": len(images)}
            for stage, ms in {"decode": img.decode_ms, **shared}.items():
                pred.add_time(stage, ms)
        return out

    def render(self, prediction: Prediction) -> bytes:
        """The anomaly map as a colour PNG at its own resolution (never larger than the image); safe to run
        off the model thread. The map holds nothing finer than the model's input grid, so a PNG at the
        image's size only repeats it: at 900x900 it took 8x the time (docs/decisions.md). Clients overlay it
        scaled to the image, as the UI does."""
        t = time.perf_counter()
        cal = self.artifact.get(prediction.class_name).calibration
        amap, (h, w) = prediction.anomaly_map, prediction.image_shape
        png = heatmap_png(resize_map(amap, (min(h, amap.shape[0]), min(w, amap.shape[1]))), cal)
        prediction.heatmap_png = png
        prediction.add_time("heatmap", _ms_since(t))
        return png

    def explain(self, prediction: Prediction) -> list[dict]:
        """The nearest good training patch of each flagged region (explain.py); empty for an image that is
        not flagged, so good images cost nothing. Counted in the "heatmap" stage and as "explain"."""
        t = time.perf_counter()
        model = self.artifact.get(prediction.class_name)
        found: list[dict] = []
        if model.provenance is None:
            prediction.explanations_note = NO_PROVENANCE
        elif prediction.is_anomaly and prediction.patch_scores is not None and prediction.nearest is not None:
            found = explain_regions(
                model,
                prediction.anomaly_map,
                prediction.patch_scores,
                prediction.nearest,
                prediction.image_shape,
            )
        prediction.explanations = found
        ms = _ms_since(t)
        prediction.add_time("heatmap", ms)
        prediction.timings_ms["explain"] = round(ms, 3)
        return found

    def predict(
        self,
        class_name: str,
        images: Sequence[bytes | np.ndarray | str | Path],
        names: Sequence[str] | None = None,
        return_heatmap: bool = False,
        explain: bool = False,
    ) -> list[Prediction]:
        """Score a batch of images of one class in one forward pass; `explain`: with explanations."""
        model = self.artifact.get(class_name)
        decoded = [self.decode(img, names[i] if names else None) for i, img in enumerate(images)]
        out = self.score(model, decoded)
        for p in out:
            if return_heatmap:
                self.render(p)
            if explain:
                self.explain(p)
        return out
