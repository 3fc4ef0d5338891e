"""Hyperparameters of a trained class model, as stored in its artifact: what a patch feature is
(`FeatureConfig`) and how the memory bank and threshold were made (`ModelConfig`).

Plain validated data, so the CLI, training and the artifact share one definition; a memory bank is only valid
with the configuration it was built with.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from ivadas_contract.models import MODELS
from model_server import defaults
from model_server.engine.backbones import feature_channels, feature_strides, get_spec
from model_server.engine.geometry import canvas_shape

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that decides what a patch feature is; a memory bank is only valid with the same config."""

    backbone: str = defaults.BACKBONE
    layers: tuple[int, ...] = defaults.LAYERS
    input_size: int = defaults.INPUT_SIZE
    patch_size: int = 3
    #: None keeps every channel (the backbones here are narrow); a number averages each layer's channels
    #: down to feature_dim // len(layers) as the official code's adaptive pooling does.
    feature_dim: int | None = None
    #: "channels": layers as they come (a layer's weight in the distance grows with its width); "equal": each
    #: layer scaled by 1/sqrt(its channels), the distance the official fixed-length averaging gives.
    layer_weighting: str = defaults.LAYER_WEIGHTING
    #: "zeros": cells past the map's edge count as zero in a patch's 3x3 average (the official code's zero
    #: padding; measured better than "inside" on every data set here: docs/decisions.md);
    #: "inside": only the cells within the map, as artifacts from before this setting were trained.
    edge: str = defaults.EDGE
    #: (H, W) box in source pixels that holds the class's training images: one scale for the class, aspect
    #: kept, padding masked (geometry.py). None: every image stretched to the square canvas (older artifacts).
    source_size: tuple[int, int] | None = None
    #: SHA-256 of a brought backbone's weights file (backbones.py "timm:" names); None for shipped backbones.
    weights_sha256: str | None = None
    #: "pool": each layer's 3x3 neighbourhood averaged per channel, layers concatenated (`feature_dim`
    #: optionally averaging channels down); "unfold": the official PatchCore code's embedding, each layer's
    #: 3x3 patch flattened and averaged down to `feature_dim`, then the layers averaged to `feature_dim`.
    aggregation: str = defaults.AGGREGATION

    def __post_init__(self) -> None:
        if get_spec(self.backbone).custom != (self.weights_sha256 is not None):  # raises on an unknown one
            raise ValueError(f"backbone {self.backbone!r} and its weights: a brought (timm:) backbone names "
                             "the SHA-256 of its weights file, a shipped one none")  # fmt: skip
        if self.weights_sha256 is not None and not _SHA256.fullmatch(self.weights_sha256):
            raise ValueError(f"weights SHA-256 must be 64 hex digits, got {self.weights_sha256!r}")
        if self.aggregation not in defaults.AGGREGATIONS:
            raise ValueError(
                f"unknown aggregation '{self.aggregation}' (choose from {', '.join(defaults.AGGREGATIONS)})"
            )
        if self.aggregation == "unfold" and self.feature_dim is None:
            raise ValueError("the unfold aggregation needs a feature dimension (the official code uses 1024)")
        if not self.layers:
            raise ValueError("at least one backbone layer is needed")
        if self.input_size < 32 or self.input_size % 16:
            raise ValueError(f"input size must be a multiple of 16 and at least 32, got {self.input_size}")
        if self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch size must be odd and positive, got {self.patch_size}")
        if self.feature_dim is not None and self.feature_dim < len(self.layers):
            raise ValueError(
                f"feature dimension must be at least the number of layers, got {self.feature_dim}"
            )
        if self.layer_weighting not in defaults.LAYER_WEIGHTINGS:
            raise ValueError(
                f"unknown layer weighting '{self.layer_weighting}' "
                f"(choose from {', '.join(defaults.LAYER_WEIGHTINGS)})"
            )
        if self.edge not in defaults.EDGES:
            raise ValueError(f"unknown edge '{self.edge}' (choose from {', '.join(defaults.EDGES)})")
        if self.source_size is not None and (len(self.source_size) != 2 or min(self.source_size) < 1):
            raise ValueError(f"source size must be (height, width) in pixels, got {self.source_size}")

    def to_dict(self) -> dict:
        d = {**asdict(self), "layers": list(self.layers)}
        d["source_size"] = None if self.source_size is None else list(self.source_size)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> FeatureConfig:
        source = data.get("source_size")
        return cls(
            **{
                "edge": "inside",  # what every artifact without the setting was trained with
                **data,
                "layers": tuple(data["layers"]),
                "source_size": None if source is None else (int(source[0]), int(source[1])),
            }
        )

    @property
    def canvas(self) -> tuple[int, int]:
        """(H, W) of the network input; its long side is `input_size`."""
        return canvas_shape(self.input_size, self.source_size)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch grid: the shallowest layer's resolution."""
        stride = min(feature_strides(self.backbone, self.layers))
        h, w = self.canvas
        return -(-h // stride), -(-w // stride)

    @property
    def dim(self) -> int:
        """Length of one patch feature vector."""
        if self.feature_dim is None:
            return sum(feature_channels(self.backbone, self.layers))
        if self.aggregation == "unfold":
            return self.feature_dim
        return (self.feature_dim // len(self.layers)) * len(self.layers)


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of one trained class model (stored in the artifact and the model card)."""

    model: str = "patchcore"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    coreset_ratio: float = defaults.CORESET_RATIO
    #: None: the bank is `coreset_ratio` of the patches; a ratio: the bank starts at `coreset_ratio` and
    #: doubles, up to this, while the good images' highest held-out scores still fall (bank_growth.py;
    #: `ivadas train` grows it to defaults.MAX_CORESET_RATIO unless told a ratio).
    max_coreset_ratio: float | None = None
    projection_dim: int = 128
    seed: int = 0
    # SoftPatch (official defaults; lof_k really is used)
    weight_method: str = defaults.WEIGHT_METHOD
    lof_k: int = defaults.LOF_K
    filter_fraction: float = defaults.FILTER_FRACTION
    soft_weights: bool = True
    #: image score: from the smoothed anomaly map ("map") or the patch scores ("patch")
    image_score: str = defaults.IMAGE_SCORE
    #: image score: mean of the highest fraction of map values or patch scores (0: the highest one)
    score_top_fraction: float = defaults.SCORE_TOP_FRACTION
    #: the threshold is set so that this share of good images is flagged (training/threshold.py)
    target_false_alarm_rate: float = defaults.TARGET_FALSE_ALARM_RATE

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model '{self.model}' (choose from {', '.join(MODELS)})")
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ValueError(f"coreset ratio must be in (0, 1], got {self.coreset_ratio}")
        if self.max_coreset_ratio is not None and not self.coreset_ratio <= self.max_coreset_ratio <= 1.0:
            raise ValueError(
                f"largest coreset ratio must be in [{self.coreset_ratio}, 1], got {self.max_coreset_ratio}"
            )
        if self.weight_method not in defaults.WEIGHT_METHODS:
            raise ValueError(
                f"unknown SoftPatch method '{self.weight_method}' "
                f"(choose from {', '.join(defaults.WEIGHT_METHODS)})"
            )
        if self.lof_k < 1:
            raise ValueError(f"lof_k must be at least 1, got {self.lof_k}")
        if not 0.0 <= self.filter_fraction < 1.0:
            raise ValueError(f"filter fraction must be in [0, 1), got {self.filter_fraction}")
        if self.image_score not in defaults.IMAGE_SCORES:
            raise ValueError(
                f"unknown image score '{self.image_score}' (choose from {', '.join(defaults.IMAGE_SCORES)})"
            )
        if not 0.0 <= self.score_top_fraction <= 0.5:
            raise ValueError(f"score top fraction must be in [0, 0.5], got {self.score_top_fraction}")
        if not 0.0 < self.target_false_alarm_rate < 0.5:
            raise ValueError(
                f"target false-alarm rate must be in (0, 0.5), got {self.target_false_alarm_rate}"
            )

    def to_dict(self) -> dict:
        return {**asdict(self), "features": self.features.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        data = dict(data)
        data.pop("holdout_fraction", None)  # artifacts before the leave-one-out threshold
        data.setdefault("image_score", "patch")  # artifacts before the map's image score
        if "threshold_quantile" in data:
            data["target_false_alarm_rate"] = round(1.0 - data.pop("threshold_quantile"), 6)
        return cls(**{**data, "features": FeatureConfig.from_dict(data["features"])})
