"""`make bench-quality`: detection quality of the old fixed defaults against the per-class search.

On every data set we have: how well the search's proxy ranks configurations, SoftPatch under real unlabelled
defects, and training cost against the number of images.

Sections (all by default; `--only` picks some):
- datasets: MVTec bottle, bottle_crops (bottle cut to random sizes and aspect ratios 0.35-2.9, made here:
  the aspect-keeping geometry's test), ELPV mono and poly. Before: efficientnet_lite0, 384 px, channels, max,
  image stretched to a square (the defaults before the search). After: `ivadas train`'s default, the search.
  Image and pixel AUROC, AUPRO, recall and false alarms at the threshold (counts, 95 % Wilson intervals),
  training and search seconds, bank size, the configuration. Proxy check: Spearman rank correlation of
  proxy against the real AUROC of every candidate (same search bank), and the real AUROC of the pick against
  the best one.
- softpatch: ELPV (250 good training cells per type) with 10 % and 20 % of the training set made of the cells
  annotated 1/3 or 2/3 defective (real defects, unlabelled, in no test split); PatchCore against SoftPatch on
  the configuration the search chose for the class, seeds 0-2 (10 %) and 0 (20 %).
- scaling: a synthetic class of bottle images flipped, shifted and resized to 1024 px: 400 images with the
  search, then 100 and 200 with the configuration it chose; search and training seconds and peak RSS of
  `ivadas train` in its own process.

Targets (exit 1 when one is missed): bottle after 1.000 / >= 0.985 / >= 0.95; ELPV mono >= 0.96, poly
>= 0.92 (after); SoftPatch >= PatchCore + 0.02 at 10 % on ELPV, mean over seeds and classes; 400 x 1024 px
trains in < 120 s at the reference speed (probe.py), search <= 3x that training, peak RSS < 4 GB. Records
docs/benchmarks/bench_quality.json (runs/bench-quality/partial.json while it runs, for --resume).
Run: .venv/bin/python tests/benchmarks/bench_quality.py [--only datasets,softpatch,scaling]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from model_server.engine.config import ModelConfig  # noqa: E402
from model_server.engine.features import FeatureExtractor  # noqa: E402
from model_server.engine.runtime import set_threads  # noqa: E402
from model_server.training.datasets import load_split  # noqa: E402
from model_server.training.elpv import load_elpv_split  # noqa: E402
from model_server.training.evaluation import evaluate_class  # noqa: E402
from model_server.training.fit import train_class, with_class_geometry  # noqa: E402
from model_server.training.metrics import wilson_interval  # noqa: E402
from model_server.training.search import search_class  # noqa: E402
from tests.benchmarks.probe import at_reference, beside  # noqa: E402
from tests.benchmarks.quality_studies import add_unlabelled, judge_ensemble, uncertain_cells  # noqa: E402
from tests.benchmarks.tables import Table  # noqa: E402
from tests.benchmarks.verdict import conclude  # noqa: E402

MVTEC = Path(os.environ.get("IVADAS_MVTEC_ROOT", ROOT.parent / "shared/data/mvtec"))
WORK = ROOT / "runs/bench-quality"
OLD_DEFAULT = ModelConfig()  # lite0, 384 px, channels, max; no source size: stretched to a square
TARGETS = {
    "bottle": {"image_auroc": 1.0, "pixel_auroc": 0.985, "aupro": 0.95},
    "elpv_mono": {"image_auroc": 0.96},
    "elpv_poly": {"image_auroc": 0.92},
}
SOFTPATCH_GAIN = 0.02
SCALING = {"train_seconds": 120.0, "search_ratio": 3.0, "peak_gb": 4.0}
SOFTPATCH_GOOD = 250
NAME = "bench_quality"
PARTIAL = WORK / "partial.json"


def save(results: dict) -> None:
    PARTIAL.parent.mkdir(parents=True, exist_ok=True)
    PARTIAL.write_text(json.dumps(results, indent=2, default=str) + "\n")


def _rate(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{k}/{n} = {k / max(n, 1):.3f} [{lo:.3f}, {hi:.3f}]"


def _train_eval(split, config: ModelConfig) -> dict:
    extractor = FeatureExtractor(config.features)
    model = train_class(split, config, extractor, progress=False)
    m = evaluate_class(model, extractor, split, progress=False).metrics
    at = m["at_threshold"]
    f = config.features
    return {
        "config": f"{f.backbone}@{f.input_size}/{f.layer_weighting}/top{config.score_top_fraction:g}"
        + ("" if f.source_size is None else f" box {f.source_size[0]}x{f.source_size[1]}"),
        "image_auroc": m["image_auroc"],
        "pixel_auroc": m["pixel_auroc"],
        "aupro": m["aupro"],
        "recall": _rate(at["true_positives"], m["n_anomalous"]),
        "false_alarms": _rate(at["false_positives"], m["n_good"]),
        "expected_false_alarm_rate": model.calibration.fitted_false_alarm_rate,
        "train_seconds": model.card["training"]["total_seconds"],
        "bank_patches": model.card["training"]["bank_patches"],
    }


# ------------------------------------------------------------------------------------------------ data sets


def _crop_box(rng: np.random.Generator, side: int, need: tuple[int, int, int, int] | None) -> tuple:
    """(y, x, h, w) of a random crop with sides 35-100 % of the image holding `need` (y0, x0, y1, x1)."""
    lo = int(0.35 * side)
    y0, x0, y1, x1 = need if need else (side, side, 0, 0)
    h = int(rng.integers(max(lo, y1 - y0 if need else lo), side + 1))
    w = int(rng.integers(max(lo, x1 - x0 if need else lo), side + 1))
    y = int(rng.integers(max(0, y1 - h) if need else 0, min(side - h, y0) + 1 if need else side - h + 1))
    x = int(rng.integers(max(0, x1 - w) if need else 0, min(side - w, x0) + 1 if need else side - w + 1))
    return y, x, h, w


def make_bottle_crops(root: Path) -> Path | None:
    """bottle_crops: every bottle image cut to a random crop (defects kept whole), in the MVTec layout."""
    src = MVTEC / "bottle"
    out = root / "bottle_crops"
    if not src.is_dir():
        return None
    if (out / "done").exists():
        return root
    rng = np.random.default_rng(0)
    for img_path in sorted(src.glob("*/*/*.png")):
        part, kind = img_path.parts[-3], img_path.parts[-2]
        if part == "ground_truth":
            continue
        img = np.asarray(Image.open(img_path).convert("RGB"))
        mask_path = src / "ground_truth" / kind / f"{img_path.stem}_mask.png"
        mask = np.asarray(Image.open(mask_path)) > 0 if mask_path.exists() else None
        need = None
        if mask is not None and mask.any():
            ys, xs = np.nonzero(mask)
            need = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
        y, x, h, w = _crop_box(rng, img.shape[0], need)
        dest = out / part / kind / img_path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[y : y + h, x : x + w]).save(dest)
        if mask is not None:
            mdest = out / "ground_truth" / kind / mask_path.name
            mdest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((mask[y : y + h, x : x + w] * 255).astype(np.uint8)).save(mdest)
    (out / "done").write_text("")
    return root


def dataset_splits() -> dict:
    splits = {}
    if (MVTEC / "bottle").is_dir():
        splits["bottle"] = load_split(str(MVTEC), "bottle")
        crops = make_bottle_crops(WORK / "data")
        splits["bottle_crops"] = load_split(str(crops), "bottle_crops")
    else:
        print(f"MVTec bottle not found under {MVTEC}: bottle and bottle_crops skipped")
    for name in ("elpv_mono", "elpv_poly"):
        splits[name] = load_split("elpv", name)
    return splits


def ensemble_check(search, audit_labels: np.ndarray) -> dict:
    """What an ensemble of backbones would buy: the best trial of each backbone at the base size, the top two
    and all of them averaged (standardised scores), by proxy and by real AUROC."""
    base = search.trials[0].candidate.input_size
    per_backbone: dict = {}
    for t in (t for t in search.trials if t.candidate.input_size == base):
        if t.proxy >= per_backbone.get(t.candidate.backbone, t).proxy:
            per_backbone[t.candidate.backbone] = t
    ranked = sorted(per_backbone.values(), key=lambda t: -t.proxy)
    best_single = ranked[0]
    return {
        "best_single": {
            "label": best_single.candidate.label,
            "proxy": round(best_single.proxy, 4),
            "audit_auroc": round(best_single.audit_auroc, 4),
        },  # fmt: skip
        "top2": judge_ensemble(ranked[:2], search.kinds, audit_labels),
        "all": judge_ensemble(ranked, search.kinds, audit_labels),
    }


def proxy_check(search) -> dict:
    proxies = [t.proxy for t in search.trials]
    real = [t.audit_auroc for t in search.trials]
    rho = spearmanr(proxies, real).statistic
    return {
        "candidates": len(real),
        "spearman": round(float(rho), 3) if np.isfinite(rho) else None,  # None: every real AUROC alike
        "picked_real": round(search.chosen.audit_auroc, 4),
        "best_real": round(max(real), 4),
        "best_real_candidate": search.trials[int(np.argmax(real))].candidate.label,
        "median_real": round(float(np.median(real)), 4),
    }


def run_datasets(results: dict) -> None:
    for name, split in dataset_splits().items():
        print(f"\n== {name}: {len(split.train)} train, {len(split.test)} test", flush=True)
        before = _train_eval(split, OLD_DEFAULT)
        print(f"  before {json.dumps(before)}", flush=True)
        search = search_class(split.train, with_class_geometry(OLD_DEFAULT, split.train), audit=split.test)
        after = _train_eval(split, search.config)
        after["search_seconds"] = round(search.seconds, 1)
        after["proxy"] = round(search.chosen.proxy, 4)
        print(f"  after  {json.dumps(after)}", flush=True)
        check = proxy_check(search)
        print(f"  proxy  {json.dumps(check)}", flush=True)
        ensemble = ensemble_check(search, np.array([s.label for s in split.test]))
        print(f"  ensemble {json.dumps(ensemble)}", flush=True)
        results.setdefault("datasets", {})[name] = {
            "before": before,
            "after": after,
            "proxy_check": check,
            "ensemble_check": ensemble,
            "candidates": [t.to_dict() for t in search.trials],
            "config": search.config.to_dict(),
        }
        save(results)


# ---------------------------------------------------------------------------------------- SoftPatch study


#: SoftPatch study: (share of unlabelled defects in training, seeds); --softpatch-plan overrides.
SOFTPATCH_PLAN = "0.1:0,1,2;0.2:0"


def _plan(text: str) -> list[tuple[float, tuple[int, ...]]]:
    plan = []
    for part in text.split(";"):
        ratio, seeds = part.split(":")
        plan.append((float(ratio), tuple(int(x) for x in seeds.split(","))))
    return plan


def run_softpatch(results: dict, plan_text: str = SOFTPATCH_PLAN) -> None:
    plan = _plan(plan_text)
    out = results.setdefault("softpatch", {})
    for name in ("elpv_mono", "elpv_poly"):
        split = load_elpv_split(name, max_train=SOFTPATCH_GOOD)
        chosen = results.get("datasets", {}).get(name, {}).get("config")
        base = ModelConfig.from_dict(chosen) if chosen else with_class_geometry(OLD_DEFAULT, split.train)
        extra = uncertain_cells(name)
        for ratio, seeds in plan:
            done = {r["seed"]: r for r in out.get(f"{name}@{ratio:g}", {}).get("rows", [])}  # --resume
            rows = [done[s] for s in seeds if s in done]
            for seed in (s for s in seeds if s not in done):
                noisy = add_unlabelled(split, extra, ratio, seed=seed)
                row = {"seed": seed, "n_noise": len(noisy.train) - len(split.train)}
                for model in ("patchcore", "softpatch"):
                    row[model] = _train_eval(noisy, replace(base, model=model, seed=seed))["image_auroc"]
                rows.append(row)
                print(f"  {name} noise {ratio:.0%} {json.dumps(row)}", flush=True)
            rows.sort(key=lambda r: r["seed"])
            pc = float(np.mean([r["patchcore"] for r in rows]))
            sp = float(np.mean([r["softpatch"] for r in rows]))
            out[f"{name}@{ratio:g}"] = {"rows": rows, "patchcore": pc, "softpatch": sp, "gain": sp - pc}
            save(results)


# -------------------------------------------------------------------------------------------------- scaling


def make_bottle_1024(root: Path, n: int) -> Path:
    """n bottle train images flipped, turned and shifted, at 1024 px (JPEG q95), as class bottle1024_<n>."""
    out = root / f"bottle1024_{n}"
    if (out / "done").exists():
        return root
    src = sorted((MVTEC / "bottle/train/good").glob("*.png"))
    rng = np.random.default_rng(n)
    (out / "train/good").mkdir(parents=True, exist_ok=True)
    (out / "test/good").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = Image.open(src[i % len(src)]).convert("RGB")
        img = img.transpose(Image.FLIP_LEFT_RIGHT) if (i // len(src)) % 2 else img
        img = img.rotate(90 * ((i // (2 * len(src))) % 4))
        dx, dy = (int(v) for v in rng.integers(-40, 41, 2))
        img = img.transform(img.size, Image.AFFINE, (1, 0, dx, 0, 1, dy)).resize((1024, 1024), Image.BILINEAR)
        img.save(out / f"train/good/{i:04d}.jpg", quality=95)
    Image.open(src[0]).convert("RGB").resize((1024, 1024)).save(out / "test/good/0000.jpg", quality=95)
    (out / "done").write_text("")
    return root


def _train_process(root: Path, cls: str, out: Path, *extra: str) -> dict:
    """`ivadas train` (default: with the search) in its own process: wall seconds and its peak RSS."""
    argv = [sys.executable, "-m", "infra.cli", "train", "--data-root", str(root), "--classes", cls,
            "--no-evaluate", "--quiet", "--out", str(out), *extra]  # fmt: skip
    with beside() as probe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    if status:
        raise SystemExit(f"training {cls} failed: {proc.stderr.read().decode()[-2000:]}")
    from model_server.engine.artifact import load_artifact

    model = load_artifact(out).get(cls)
    card, f = model.card, model.config.features
    return {
        "wall_seconds": round(wall, 1),
        "search_seconds": card["search"]["seconds"] if card["search"] else None,
        "train_seconds": card["training"]["total_seconds"],
        "train_seconds_at_reference": round(at_reference(card["training"]["total_seconds"], probe.ms), 1),
        "probe": probe.to_dict(),
        "peak_gb": round(usage.ru_maxrss / 1024**2, 2),
        "bank_patches": card["training"]["bank_patches"],
        "config": f"{f.backbone}@{f.input_size}/{f.layer_weighting}/top{model.config.score_top_fraction:g}",
    }


def _flags(artifact: Path, cls: str) -> tuple[str, ...]:
    """The searched choices of a trained class as `ivadas train` flags."""
    from model_server.engine.artifact import load_artifact

    config = load_artifact(artifact).get(cls).config
    f = config.features
    return ("--backbone", f.backbone, "--input-size", str(f.input_size), "--layer-weighting",
            f.layer_weighting, "--score-top-fraction", str(config.score_top_fraction))  # fmt: skip


def run_scaling(results: dict) -> None:
    if not (MVTEC / "bottle").is_dir():
        print("MVTec bottle not found: scaling skipped")
        return
    out = results.setdefault("scaling", {})
    for n in (400, 100, 200):
        if str(n) in out:  # --resume
            continue
        root = make_bottle_1024(WORK / "data", n)
        extra = () if n == 400 else _flags(WORK / "bottle1024_400.tar.gz", "bottle1024_400")
        row = _train_process(root, f"bottle1024_{n}", WORK / f"bottle1024_{n}.tar.gz", *extra)
        row["train_ms_per_image"] = round(1000 * row["train_seconds"] / n, 1)
        out[str(n)] = row
        print(f"  scaling {n} images: {json.dumps(row)}", flush=True)
        save(results)


# ------------------------------------------------------------------------------------------------- verdicts


def verdicts(results: dict) -> list[str]:
    missed = []
    for name, targets in TARGETS.items():
        after = results.get("datasets", {}).get(name, {}).get("after")
        for key, target in targets.items() if after else ():
            if after[key] is None or after[key] < target:
                missed.append(f"{name} {key} {after[key]} < {target}")
    sp = results.get("softpatch", {})
    gains = [v["gain"] for k, v in sp.items() if k.endswith("@0.1")]
    if gains and float(np.mean(gains)) < SOFTPATCH_GAIN:
        missed.append(f"SoftPatch gain at 10 % real noise {np.mean(gains):+.4f} < +{SOFTPATCH_GAIN}")
    big = results.get("scaling", {}).get("400")
    if big:
        if big["train_seconds_at_reference"] >= SCALING["train_seconds"]:
            missed.append(
                f"400 x 1024 px trains in {big['train_seconds_at_reference']} s at the reference speed "
                f"({big['train_seconds']} s measured) >= {SCALING['train_seconds']}"
            )
        if big["search_seconds"] > SCALING["search_ratio"] * big["train_seconds"]:
            missed.append(f"search {big['search_seconds']} s > {SCALING['search_ratio']}x training")
        if big["peak_gb"] >= SCALING["peak_gb"]:
            missed.append(f"peak RSS {big['peak_gb']} GB >= {SCALING['peak_gb']}")
    return missed


LABELS = ("before", "after")


def _ensemble_cell(e: dict) -> str:
    label = e.get("label") or " + ".join(m.split("@")[0] for m in e["members"])
    return f"{label}: {e['proxy']} / {e.get('audit_auroc')}"


def _dataset_tables(ds: dict) -> list[Table]:
    keys = [
        "config",
        "image_auroc",
        "pixel_auroc",
        "aupro",
        "recall",
        "false_alarms",
        "train_seconds",
        "search_seconds",
        "bank_patches",
    ]
    checks = ["candidates", "spearman", "picked_real", "best_real", "best_real_candidate", "median_real"]
    return [
        Table(
            "Old fixed defaults (before) against the per-class search (after); rates at the threshold with "
            "Wilson 95 % intervals",
            [
                "data set",
                "defaults",
                "config",
                "image AUROC",
                "pixel AUROC",
                "AUPRO",
                "recall at thr",
                "false alarms at thr",
                "train s",
                "search s",
                "bank",
            ],
            [[n, lb, *(r[lb].get(k) for k in keys)] for n, r in ds.items() for lb in LABELS if lb in r],
        ),
        Table(
            "The search's proxy against real defects (every candidate with the search's own small bank)",
            [
                "data set",
                "candidates",
                "Spearman proxy vs real",
                "real AUROC of pick",
                "best real",
                "best real candidate",
                "median real",
            ],
            [[n, *(r["proxy_check"][k] for k in checks)] for n, r in ds.items()],
        ),
        Table(
            "Ensembles by the same judge (proxy / real AUROC)",
            ["data set", "best single backbone", "top-2 ensemble", "all-4 ensemble"],
            [
                [n, *(_ensemble_cell(r["ensemble_check"][k]) for k in ("best_single", "top2", "all"))]
                for n, r in ds.items()
                if r.get("ensemble_check")
            ],
        ),
    ]


def tables(results: dict) -> list[Table]:
    """The tables of a record (docs/benchmarks.md is rendered from them)."""
    out = _dataset_tables(results["datasets"]) if results.get("datasets") else []
    sp = results.get("softpatch", {})
    if sp:
        out.append(
            Table(
                f"SoftPatch under real unlabelled defects (ELPV, {SOFTPATCH_GOOD} good training cells per "
                "type)",
                ["class @ noise", "seeds", "PatchCore", "SoftPatch", "gain", "per seed (PC / SP)"],
                [
                    [
                        key,
                        len(v["rows"]),
                        v["patchcore"],
                        v["softpatch"],
                        f"{v['gain']:+.4f}",
                        ", ".join(f"{r['patchcore']:.4f} / {r['softpatch']:.4f}" for r in v["rows"]),
                    ]
                    for key, v in sp.items()
                ],
            )
        )
    sc = results.get("scaling", {})
    if sc:
        out.append(
            Table(
                "Training cost against N (bottle images flipped, turned and shifted at 1024 px; `ivadas "
                "train` "
                "in its "
                "own process)",
                [
                    "images",
                    "config",
                    "train s",
                    "train s at the reference speed",
                    "ms/image",
                    "search s",
                    "peak RSS GB",
                    "bank",
                ],
                [
                    [
                        n,
                        r["config"],
                        r["train_seconds"],
                        r.get("train_seconds_at_reference"),
                        r["train_ms_per_image"],
                        r["search_seconds"],
                        r["peak_gb"],
                        r["bank_patches"],
                    ]
                    for n, r in sc.items()
                ],
            )
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="datasets,softpatch,scaling")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--softpatch-plan", default=SOFTPATCH_PLAN, help="ratio:seeds;... e.g. 0.1:0,1,2")
    parser.add_argument("--resume", action="store_true", help="keep the last run's other sections")
    parser.add_argument("--out", help="the record (default: docs/benchmarks/bench_quality.json)")
    args = parser.parse_args()
    set_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    if args.resume and PARTIAL.exists():
        results = json.loads(PARTIAL.read_text())
    sections = {
        "datasets": run_datasets,
        "softpatch": lambda r: run_softpatch(r, args.softpatch_plan),
        "scaling": run_scaling,
    }
    for name in args.only.split(","):
        sections[name](results)
        save(results)
    return conclude(NAME, results, verdicts(results), tables(results), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
