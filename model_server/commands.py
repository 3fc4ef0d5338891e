"""`ivadas train`, `ivadas evaluate` and `ivadas predict`: the engine's command-line jobs.

Each function takes the parsed arguments and returns an exit code; input problems raise `IvadasError`,
which the CLI prints as one line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from model_server import defaults
from model_server.engine.artifact import Artifact, check_class_name, git_commit, load_artifact, save_artifact
from model_server.engine.config import FeatureConfig, ModelConfig
from model_server.engine.features import FeatureExtractor
from model_server.engine.geometry import native_sizes
from model_server.engine.heatmap import overlay, png_bytes
from model_server.engine.maps import resize_map
from model_server.engine.predictor import Predictor
from model_server.engine.runtime import set_threads
from model_server.errors import DataError, ImageError, IvadasError
from model_server.training.datasets import list_classes, load_split
from model_server.training.elpv import ELPV_CLASSES, ELPV_ROOT
from model_server.training.evaluation import evaluate_class
from model_server.training.fit import train_class, with_class_geometry
from model_server.training.protocols import apply_noise
from model_server.training.samples import ClassSplit, Sample
from model_server.training.search import SearchResult, SearchSpace, search_class


def data_fingerprint(samples: Sequence[Sample]) -> str:
    """SHA-256 of the training images' names and bytes: equal only for models that saw the same data."""
    digest = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.name):
        digest.update(s.name.encode() + b"\0")
        if s.path is not None:
            digest.update(hashlib.sha256(s.path.read_bytes()).digest())
        else:
            digest.update(hashlib.sha256(s.load_rgb().tobytes()).digest())
    return digest.hexdigest()


def parse_classes(text: str | None, data_root: str) -> list[str]:
    if text:
        names = [c.strip() for c in text.split(",") if c.strip()]
    elif str(data_root) == ELPV_ROOT:
        names = list(ELPV_CLASSES)
    else:
        names = list_classes(data_root)
    if not names:
        raise DataError(f"no classes to use in {data_root}")
    for name in names:
        try:
            check_class_name(name)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    return names


#: What `--profile` and `--preset` set where the user gave no flag; anything neither names is in defaults.py.
PROFILE_VALUES = {
    "quality": {"backbone": defaults.BACKBONE},
    "fast": {"backbone": defaults.FAST_BACKBONE, "max_coreset_ratio": None},
}
#: The PatchCore paper's configuration, as the official code runs it (its weights are the user's to bring).
OFFICIAL = {
    "backbone": "timm:wide_resnet50_2",
    "layers": (2, 3),
    "aggregation": "unfold",
    "feature_dim": 1024,
    "input_size": 224,
    "coreset_ratio": 0.1,
    "max_coreset_ratio": None,
}
#: `ivadas train` flags the search chooses when the user leaves them unset.
SEARCHED_FLAGS = ("backbone", "input_size", "layer_weighting", "score_top_fraction")


def _settings(args: argparse.Namespace) -> dict:
    """Each setting: the user's flag, else the preset's, else the profile's, else the default."""
    values = {
        "backbone": defaults.BACKBONE,
        "layers": defaults.LAYERS,
        "input_size": None,  # per class: `class_input_size`
        "layer_weighting": defaults.LAYER_WEIGHTING,
        "aggregation": defaults.AGGREGATION,
        "feature_dim": None,
        "coreset_ratio": defaults.CORESET_RATIO,
        "max_coreset_ratio": defaults.MAX_CORESET_RATIO,
        "score_top_fraction": defaults.SCORE_TOP_FRACTION,
    }
    values.update(PROFILE_VALUES[getattr(args, "profile", None) or defaults.PROFILE])
    if getattr(args, "preset", None) == "official":
        values.update(OFFICIAL)
    given = {k: getattr(args, k) for k in values if getattr(args, k, None) is not None}
    if "coreset_ratio" in given:
        values["max_coreset_ratio"] = None  # a ratio the user gives is the bank's
    return {**values, **given}


def search_space(args: argparse.Namespace) -> SearchSpace | None:
    """What `--search` varies: every searched flag the user left unset; None without --search or when
    nothing is left to choose."""
    if not getattr(args, "search", False):
        return None
    unset = {k for k in SEARCHED_FLAGS if getattr(args, k, None) is None}
    if not unset:
        return None
    space = SearchSpace()
    if getattr(args, "profile", defaults.PROFILE) == "fast":
        space = replace(space, sizes=tuple(s for s in space.sizes if s <= defaults.FAST_MAX_INPUT_SIZE))
    fixed = {
        "backbone": ("backbones", (getattr(args, "backbone", None),)),
        "input_size": ("sizes", (getattr(args, "input_size", None),)),
        "layer_weighting": ("weightings", (getattr(args, "layer_weighting", None),)),
        "score_top_fraction": ("top_fractions", (getattr(args, "score_top_fraction", None),)),
    }
    return replace(space, **dict(fixed[k] for k in SEARCHED_FLAGS if k not in unset))


def _weights_sha256(backbone: str, source: str | None) -> str | None:
    """The SHA-256 of a brought backbone's weights, fetched into the cache; shipped backbones have theirs."""
    if not backbone.startswith("timm:"):
        if source:
            raise IvadasError(f"--weights is for a timm: backbone; {backbone} ships with its weights")
        return None
    if not source:
        raise IvadasError(f"{backbone} needs --weights: a state dict file, an s3:// URI, or 'hub'")
    from model_server.engine.weights import fetch  # torch, only for a brought backbone

    sha, _ = fetch(source, backbone.removeprefix("timm:"))
    return sha


def model_config(args: argparse.Namespace) -> ModelConfig:
    """The configuration from the flags, the profile and the preset; the input size is the default here
    until a class's images set it (`class_input_size`), and the search, when it runs, replaces what it
    chooses."""
    v = _settings(args)
    try:
        features = FeatureConfig(
            backbone=v["backbone"],
            layers=tuple(v["layers"]),
            input_size=v["input_size"] or defaults.INPUT_SIZE,
            feature_dim=v["feature_dim"],
            layer_weighting=v["layer_weighting"],
            aggregation=v["aggregation"],
            weights_sha256=_weights_sha256(v["backbone"], getattr(args, "weights", None)),
        )
        return ModelConfig(
            model=args.model,
            features=features,
            coreset_ratio=v["coreset_ratio"],
            max_coreset_ratio=v["max_coreset_ratio"],
            seed=args.seed,
            weight_method=args.weight_method,
            lof_k=args.lof_k,
            filter_fraction=args.filter_fraction,
            image_score=getattr(args, "image_score", defaults.IMAGE_SCORE),
            score_top_fraction=v["score_top_fraction"],
            target_false_alarm_rate=args.target_false_alarm_rate,
        )
    except ValueError as exc:
        raise IvadasError(str(exc)) from None


def class_input_size(args: argparse.Namespace, box: tuple[int, int]) -> int | None:
    """The input size of a class whose images fit `box`, when no flag or preset fixed it: the default, or
    the largest size within MAX_UPSAMPLE x the images' long side."""
    if _settings(args)["input_size"] is not None:
        return None
    sizes = [s for s in defaults.SIZES if s <= defaults.INPUT_SIZE]
    return max(native_sizes(box, sizes, defaults.MAX_UPSAMPLE))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def class_config(
    args: argparse.Namespace,
    config: ModelConfig,
    split: ClassSplit,
    space: SearchSpace | None,
    source: Artifact | None,
    audit: Sequence[Sample] | None = None,
) -> tuple[ModelConfig, SearchResult | None]:
    """One class's configuration: its geometry and input size, then the search's choice or that of
    `source`'s model. `audit`: labelled images the search scores its candidates on, for benchmarks only."""
    cfg = with_class_geometry(config, split.train)
    size = class_input_size(args, cfg.features.source_size or (0, 0))
    if size is not None:
        cfg = replace(cfg, features=replace(cfg.features, input_size=size))
    name = split.class_name
    progress = not args.quiet
    if source is not None:
        chosen = source.get(name).config
        _log(f"{name}: configuration from {source.model_version}")
        features = replace(chosen.features, source_size=cfg.features.source_size)
        return replace(cfg, features=features, score_top_fraction=chosen.score_top_fraction), None
    if space is None:
        return cfg, None
    _log(f"searching a configuration for {name} from its {len(split.train)} training images")
    search = search_class(split.train, cfg, space, audit=audit, progress=progress)
    _log(
        f"  chose {search.chosen.candidate.label} (proxy {search.chosen.proxy:.4f}, "
        f"{len(search.trials)} candidates, {search.seconds:.1f} s)"
    )
    return search.config, search


def train(args: argparse.Namespace) -> int:
    if not args.data_root:
        raise DataError("--data-root is required: the data to train on")
    config = model_config(args)
    classes = parse_classes(args.classes, args.data_root)
    set_threads(args.threads)
    splits: dict[str, ClassSplit] = {}
    for name in classes:  # read every listing first: a typo in the last class fails before any training
        split = load_split(args.data_root, name)
        splits[name] = apply_noise(split, args.noise_ratio, seed=args.seed) if args.noise_ratio else split
    space = search_space(args)
    source = load_artifact(args.config_from) if getattr(args, "config_from", None) else None
    report_dir = getattr(args, "report_dir", None)
    if report_dir and args.no_evaluate:
        raise IvadasError("--report-dir reports the evaluation that --no-evaluate skips: give one of them")
    commit = git_commit()
    models, evaluations = {}, []
    for name, split in splits.items():
        cfg, search = class_config(args, config, split, space, source)
        extractor = FeatureExtractor(cfg.features)
        _log(f"training {config.model} on {name}: {len(split.train)} images ({split.source})")
        model = train_class(split, cfg, extractor, progress=not args.quiet, fingerprint=data_fingerprint)
        model.card.update(
            {
                "hyperparameters": cfg.to_dict(),
                "noise_ratio": args.noise_ratio,
                "profile": getattr(args, "profile", None),
                "preset": getattr(args, "preset", None),
                "search": None if search is None else search.to_dict(),
                "configuration_from": None if source is None else source.model_version,
                "git_commit": commit,
                "trained_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
        if not args.no_evaluate:
            ev = evaluate_class(model, extractor, split, progress=not args.quiet)
            model.card["metrics"] = ev.metrics
            evaluations.append(ev)
        t = model.card["training"]
        _log(
            f"  {name}: {cfg.features.backbone}@{cfg.features.input_size}, bank "
            f"{t['bank_patches']} patches ({t['bank_bytes'] / 1e6:.1f} MB), threshold "
            f"{model.calibration.threshold:.4g}, trained in {t['total_seconds']:.1f} s"
            + (
                f", test image AUROC {model.card['metrics']['image_auroc']:.4f}"
                if "metrics" in model.card
                else ""
            )
        )
        models[name] = model
    artifact = save_artifact(args.out, models)
    _log(f"wrote {args.out} ({artifact.model_version}, classes: {', '.join(sorted(models))})")
    if report_dir:
        from model_server.training.report import write_report  # matplotlib only when a report is written

        tests = {name: split.test for name, split in splits.items()}
        cards = {name: m.card for name, m in models.items()}
        write_report(report_dir, artifact.model, artifact.model_version, evaluations, tests, cards)
        _log(f"wrote {Path(report_dir) / 'metrics.json'} and report.md")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    artifact = load_artifact(args.artifact)
    classes = (
        [c.strip() for c in args.classes.split(",") if c.strip()]
        if args.classes
        else sorted(artifact.classes)
    )
    set_threads(args.threads)
    predictor = Predictor(artifact)
    evaluations, samples, cards = [], {}, {}
    for name in classes:
        model = artifact.get(name)
        split = load_split(args.data_root, name)
        t0 = time.perf_counter()
        ev = evaluate_class(model, predictor.extractor(model.config.features), split, progress=not args.quiet)
        evaluations.append(ev)
        samples[name], cards[name] = split.test, model.card
        m = ev.metrics
        _log(
            f"{name}: image AUROC {m['image_auroc']}, pixel AUROC {m['pixel_auroc']}, AUPRO {m['aupro']} "
            f"({m['n_test']} test images, {time.perf_counter() - t0:.1f} s)"
        )
    from model_server.training.report import write_report  # matplotlib only when a report is written

    doc = write_report(args.report_dir, artifact.model, artifact.model_version, evaluations, samples, cards)
    print(json.dumps(doc["mean"]))
    _log(f"wrote {Path(args.report_dir) / 'metrics.json'} and report.md")
    return 0


def predict(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    predictor = Predictor(args.artifact)
    heatmap_dir = Path(args.heatmap_dir) if args.heatmap_dir else None
    if heatmap_dir:
        heatmap_dir.mkdir(parents=True, exist_ok=True)
    model = predictor.artifact.get(args.class_name)  # unknown class: fail before reading any image
    failed = 0
    for path in args.images:
        try:
            decoded = predictor.decode(Path(path), name=path)  # decoded once, kept for the overlay
        except ImageError as exc:
            _log(f"error: {exc}")
            failed += 1
            continue
        (pred,) = predictor.score(model, [decoded])
        record = {"image": path, **pred.to_dict()}
        if heatmap_dir:
            stem = Path(path).stem
            (heatmap_dir / f"{stem}_heatmap.png").write_bytes(predictor.render(pred))
            amap = resize_map(pred.anomaly_map, pred.image_shape)
            (heatmap_dir / f"{stem}_overlay.png").write_bytes(
                png_bytes(overlay(decoded.rgb, amap, model.calibration))
            )
            record["heatmap"] = str(heatmap_dir / f"{stem}_heatmap.png")
        print(json.dumps(record), flush=True)
    return 1 if failed else 0
