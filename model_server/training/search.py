"""Choosing a class's configuration from its good images alone (`ivadas train --search`). Off by default: on
the data sets here its proxy did not rank configurations as real defects do (docs/benchmarks.md).

Candidate configurations (backbone, input size, layer weighting, image-score pooling) are fitted on
a subsample of the class's training images and judged on images that subsample did not see: held-out good
images and copies of them with synthetic anomalies pasted in (synthetic.py). The proxy is the mean over
anomaly kinds of the image AUROC of synthetic against clean held-out images; a smaller input size within `TIE`
of the best wins (it halves the predict cost; the proxy cannot tell closer than that apart). No label of the
data set is read.

Staged to stay within a few times the training cost: every backbone at the base input size (weightings and
poolings are free on the same features), then the best backbone at the neighbouring sizes. Sizes never go far
past the native resolution (`defaults.MAX_UPSAMPLE`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from model_server import defaults
from model_server.engine.backbones import feature_channels
from model_server.engine.config import FeatureConfig, ModelConfig
from model_server.engine.features import FeatureExtractor
from model_server.engine.geometry import native_sizes, resize_to
from model_server.engine.maps import image_scores
from model_server.engine.memory_bank import NearestNeighbourScorer
from model_server.training.fit import extract_features
from model_server.training.sampler import GreedyCoresetSampler, one_thread_per_op
from model_server.training.samples import Sample, source_box
from model_server.training.synthetic import KINDS, synthesize

#: Image-score pooling candidates (ModelConfig.score_top_fraction): the highest patch, or a few of them.
TOP_FRACTIONS = (0.0, 0.003, 0.01)
#: Training images the search fits each candidate on, and held-out good images it judges them on.
FIT_IMAGES = 40
HELD_OUT_IMAGES = 24
#: Synthetic anomalies per held-out image (kinds taken in turn, so each kind gets the same share).
SYNTHETIC_PER_IMAGE = 3
#: Proxy differences below this are noise at these sample sizes: a smaller input size wins them.
TIE = 0.005


@dataclass(frozen=True)
class Candidate:
    backbone: str
    input_size: int
    layer_weighting: str
    score_top_fraction: float

    @property
    def label(self) -> str:
        return f"{self.backbone}@{self.input_size}/{self.layer_weighting}/top{self.score_top_fraction:g}"

    def apply(self, config: ModelConfig) -> ModelConfig:
        features = replace(
            config.features,
            backbone=self.backbone,
            input_size=self.input_size,
            layer_weighting=self.layer_weighting,
        )
        return replace(config, features=features, score_top_fraction=self.score_top_fraction)


@dataclass
class Trial:
    candidate: Candidate
    proxy: float  # mean synthetic AUROC over kinds
    per_kind: dict[str, float]
    spread: float  # (q90 - q10) / median of held-out good scores: lower is a steadier threshold
    audit_auroc: float | None = None  # benchmarks only: AUROC on labelled images never used for the choice
    #: image scores of the held-out, synthetic (and audit) images, for ensembles; not stored in cards
    scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {
            **asdict(self.candidate),
            "label": self.candidate.label,
            "proxy": round(self.proxy, 4),
            "per_kind": {k: round(v, 4) for k, v in self.per_kind.items()},
            "spread": round(self.spread, 4),
            **({} if self.audit_auroc is None else {"audit_auroc": round(self.audit_auroc, 4)}),
        }


@dataclass(frozen=True)
class SearchSpace:
    """What the search may vary; a dimension the user fixed with a flag has one value."""

    backbones: tuple[str, ...] = defaults.BACKBONE_NAMES
    sizes: tuple[int, ...] = defaults.SIZES
    weightings: tuple[str, ...] = defaults.LAYER_WEIGHTINGS
    top_fractions: tuple[float, ...] = TOP_FRACTIONS

    def sizes_for(self, box: tuple[int, int]) -> tuple[int, ...]:
        """Sizes at most MAX_UPSAMPLE x the native long side (the smallest one always stays)."""
        return native_sizes(box, self.sizes, defaults.MAX_UPSAMPLE)


@dataclass
class SearchResult:
    config: ModelConfig
    chosen: Trial
    trials: list[Trial]
    seconds: float
    n_fit: int
    n_held_out: int
    n_synthetic: int
    stages: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # of each synthetic image, in order

    def to_dict(self) -> dict:
        return {
            "proxy": "mean over synthetic anomaly kinds of image AUROC, synthetic vs clean held-out goods",
            "chosen": self.chosen.to_dict(),
            "candidates": [t.to_dict() for t in self.trials],
            "seconds": round(self.seconds, 1),
            "n_fit": self.n_fit,
            "n_held_out": self.n_held_out,
            "n_synthetic": self.n_synthetic,
            "kinds": list(KINDS),
            "tie": TIE,
            "stages": self.stages,
        }


def base_size(sizes: Sequence[int]) -> int:
    """Where the backbone stage runs: the default size, or the nearest allowed one."""
    return min(sizes, key=lambda s: (abs(s - defaults.INPUT_SIZE), s))


def _split(samples: Sequence[Sample], seed: int) -> tuple[list[Sample], list[Sample]]:
    """(fit subsample, held-out images), disjoint, seeded. Labels are not read: all are the user's goods."""
    order = np.random.default_rng(seed).permutation(len(samples))
    n_held = int(np.clip(len(samples) // 3, 2, HELD_OUT_IMAGES))
    held = [samples[i] for i in sorted(order[:n_held])]
    fit = [samples[i] for i in sorted(order[n_held : n_held + FIT_IMAGES])]
    return fit, held


def synthetic_set(images: Sequence[np.ndarray], seed: int) -> tuple[list[np.ndarray], list[str]]:
    """SYNTHETIC_PER_IMAGE anomalous copies of each image at its native size, with the kind of each."""
    out, kinds = [], []
    for i, img in enumerate(images):
        for r in range(SYNTHETIC_PER_IMAGE):
            kind = KINDS[(i * SYNTHETIC_PER_IMAGE + r) % len(KINDS)]
            donor = images[(i + 1 + r) % len(images)]
            if donor.shape != img.shape:
                donor = resize_to(donor, img.shape[:2])
            anomalous, _ = synthesize(img, kind, np.random.default_rng([seed, i, r]), donor)
            out.append(anomalous)
            kinds.append(kind)
    return out, kinds


def _weighted(features: np.ndarray, channels: Sequence[int], weighting: str) -> np.ndarray:
    """Channel-weighted features as the other weighting would give them (no second forward pass)."""
    if weighting == "channels":
        return features
    scale = np.concatenate([np.full(c, 1.0 / np.sqrt(c), np.float32) for c in channels])
    return features * scale


class _Scored:
    """Features of the fit, held-out and synthetic images for one backbone and size."""

    def __init__(
        self, cfg: FeatureConfig, fit: Sequence, held: Sequence, synthetic: Sequence, audit: Sequence | None
    ) -> None:
        extractor = FeatureExtractor(cfg)
        self.channels = feature_channels(cfg.backbone, cfg.layers)
        self.parts = {}
        sets = [("fit", fit), ("held", held), ("synthetic", synthetic)]
        sets += [("audit", audit)] if audit else []
        for name, images in sets:
            feats, placed = extract_features(extractor, images, progress=False)
            self.parts[name] = (feats, extractor.valid(placed))

    def patch_scores(self, weighting: str, ratio: float, seed: int) -> dict[str, np.ndarray]:
        feats, valid = self.parts["fit"]
        dim = feats.shape[-1]
        patches = _weighted(feats[valid], self.channels, weighting)
        with one_thread_per_op():  # the greedy steps' tensors are too small to share out (sampler.py)
            bank = patches[GreedyCoresetSampler(ratio, 128, seed=seed).select(patches)]
        scorer = NearestNeighbourScorer(bank)
        out = {}
        for name in ("held", "synthetic", *(["audit"] if "audit" in self.parts else [])):
            feats, valid = self.parts[name]
            f = _weighted(feats.reshape(-1, dim), self.channels, weighting)
            scores = scorer.search(np.ascontiguousarray(f))[0].reshape(valid.shape)
            out[name] = np.where(valid, scores, np.float32(0.0))
        return out


def proxy_auroc(held: np.ndarray, synth: np.ndarray, kinds: np.ndarray) -> tuple[float, dict[str, float]]:
    """(mean over kinds, per kind) of the AUROC of synthetic anomalies against clean held-out images."""
    per_kind = {}
    for kind in KINDS:
        sel = synth[kinds == kind]
        if len(sel):
            y = np.r_[np.zeros(len(held)), np.ones(len(sel))]
            per_kind[kind] = float(roc_auc_score(y, np.r_[held, sel]))
    return float(np.mean(list(per_kind.values()))), per_kind


def _judge(candidate: Candidate, patch: dict[str, np.ndarray], kinds: np.ndarray, audit_labels) -> Trial:
    scores = {name: image_scores(p, candidate.score_top_fraction) for name, p in patch.items()}
    proxy, per_kind = proxy_auroc(scores["held"], scores["synthetic"], kinds)
    q10, q50, q90 = np.quantile(scores["held"], [0.1, 0.5, 0.9])
    trial = Trial(candidate, proxy, per_kind, float((q90 - q10) / q50), scores=scores)
    if audit_labels is not None:
        trial.audit_auroc = float(roc_auc_score(audit_labels, scores["audit"]))
    return trial


def best(trials: Sequence[Trial]) -> Trial:
    """The highest proxy, except that a smaller input size within TIE of it wins (backbones of one size
    cost about the same; the input size sets the predict cost)."""
    top = max(t.proxy for t in trials)
    return min((t for t in trials if t.proxy >= top - TIE), key=lambda t: (t.candidate.input_size, -t.proxy))


def search_class(
    train: Sequence[Sample],
    config: ModelConfig,
    space: SearchSpace = SearchSpace(),
    progress: bool = True,
    audit: Sequence[Sample] | None = None,
) -> SearchResult:
    """Pick the configuration of one class from its training images (`config` gives everything else).

    `audit` (benchmarks only) adds each candidate's AUROC on labelled images; it never enters the choice.
    """
    t0 = time.perf_counter()
    box = source_box(list(train))
    fit_samples, held_samples = _split(train, config.seed)
    fit = [s.load_rgb() for s in fit_samples]
    held = [s.load_rgb() for s in held_samples]
    synthetic, kinds = synthetic_set(held, config.seed)
    kinds_arr = np.asarray(kinds)
    audit_labels = None if audit is None else np.array([s.label for s in audit])
    # the configured coreset ratio over the fit subsample: a smaller bank than the final one, which the
    # nearest-neighbour cost of the search needs, and which ranks candidates alike (docs/decisions.md)
    ratio = config.coreset_ratio
    sizes = space.sizes_for(box)
    trials: list[Trial] = []
    stages: list[str] = []

    def run(backbone: str, size: int) -> None:
        cfg = replace(
            config.features, backbone=backbone, input_size=size, source_size=box, layer_weighting="channels"
        )
        scored = _Scored(cfg, fit, held, synthetic, audit)
        for weighting in space.weightings:
            patch = scored.patch_scores(weighting, ratio, config.seed)
            for top in space.top_fractions:
                candidate = Candidate(backbone, size, weighting, top)
                trials.append(_judge(candidate, patch, kinds_arr, audit_labels))

    start_size = base_size(sizes)
    jobs = [(b, start_size) for b in space.backbones]
    with tqdm(total=len(space.backbones) + 2, desc="search", disable=not progress, leave=False) as bar:
        for backbone, size in jobs:
            run(backbone, size)
            bar.update()
        stages.append(f"backbones at {start_size} px: {', '.join(space.backbones)}")
        leader = best(trials).candidate.backbone
        i = sizes.index(start_size)
        more = [s for s in sizes[max(0, i - 1) : i + 2] if s != start_size]
        for size in more:
            run(leader, size)
            bar.update()
        if more:
            stages.append(f"{leader} at {', '.join(map(str, more))} px")
    chosen = best(trials)
    return SearchResult(
        config=chosen.candidate.apply(replace(config, features=replace(config.features, source_size=box))),
        chosen=chosen,
        trials=trials,
        seconds=time.perf_counter() - t0,
        n_fit=len(fit),
        n_held_out=len(held),
        n_synthetic=len(synthetic),
        stages=stages,
        kinds=kinds,
    )
