"""`make bench-quality`: how each class is configured, judged on every data set we have.

Sections (all by default; `--only` picks some):
- datasets: MVTec bottle; bottle_crops (bottle cut to random sizes and aspect ratios, real defects);
  bottle_tiny (SYNTHETIC tiny defects on bottle's good test images, scored by bottle's models:
  quality_data.py); ELPV mono and poly (real defects). Rows, each trained the way `ivadas train` does:
  `search` (the per-class configuration search with a fixed 1 % bank, the default before),
  `lite2` (the default backbone at the default size, fixed 1 % bank: the backbone alone),
  `search+grown` (the search's pick with the grown bank: the bank alone), `default` (`ivadas train`: the
  default backbone and the grown bank) and `fast` (`--profile fast`). Per row: image and pixel AUROC,
  AUPRO, recall and false alarms at the calibrated 1 % threshold (counts, 95 % Wilson intervals), training
  seconds (search included), bank size and the grown bank's steps, predict p50 of the rows' models taking
  turns in blocks on the same images. Proxy check: Spearman rank correlation of the search's proxy against
  the real AUROC of every candidate (the search's own bank), the pick's real AUROC against the best.
- softpatch: ELPV (250 good training cells per type) with 10 % and 20 % of the training set made of the cells
  annotated 1/3 or 2/3 defective (real defects, unlabelled, in no test split); PatchCore against SoftPatch on
  the default configuration, seeds 0-2 (10 %) and 0 (20 %).
- scaling: a synthetic class of bottle images flipped, shifted and resized to 1024 px: 100, 200 and 400
  images at the default configuration; training seconds and peak RSS of `ivadas train` in its own process.

Targets (exit 1 when one is missed), on the default row: bottle 1.000 / >= 0.985 / >= 0.95; ELPV mono
>= 0.96, poly >= 0.92 image AUROC; recall at the threshold >= the search row's + 0.10 on ELPV mono and poly;
training (bank growth included) <= 2x the search row's (search included) on every data set; fast's predict
p50 <= 1.1x the search row's; SoftPatch >= PatchCore + 0.02 at 10 % on ELPV, mean over seeds and classes;
400 x 1024 px trains in < 120 s at the reference speed (probe.py), peak RSS < 4 GB. Records
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

from infra.cli import train_parser  # noqa: E402
from model_server.commands import class_config, model_config, search_space  # noqa: E402
from model_server.engine.artifact import save_artifact  # noqa: E402
from model_server.engine.config import ModelConfig  # noqa: E402
from model_server.engine.features import FeatureExtractor  # noqa: E402
from model_server.engine.predictor import Predictor  # noqa: E402
from model_server.engine.runtime import set_threads  # noqa: E402
from model_server.training.datasets import load_split  # noqa: E402
from model_server.training.elpv import load_elpv_split  # noqa: E402
from model_server.training.evaluation import evaluate_class  # noqa: E402
from model_server.training.fit import train_class  # noqa: E402
from model_server.training.metrics import wilson_interval  # noqa: E402
from tests.benchmarks.bench_model import alternate  # noqa: E402
from tests.benchmarks.probe import at_reference, beside  # noqa: E402
from tests.benchmarks.quality_data import make_bottle_crops, make_bottle_tiny  # noqa: E402
from tests.benchmarks.quality_studies import add_unlabelled, judge_ensemble, uncertain_cells  # noqa: E402
from tests.benchmarks.tables import Table  # noqa: E402
from tests.benchmarks.verdict import conclude  # noqa: E402

MVTEC = Path(os.environ.get("IVADAS_MVTEC_ROOT", ROOT.parent / "shared/data/mvtec"))
WORK = ROOT / "runs/bench-quality"
#: The rows: `ivadas train` flags, and what each row is.
ROWS = {
    "search": (
        ["--search", "--coreset-ratio", "0.01", "--image-score", "patch"],
        "the per-class search, 1 % bank, the highest patch (the default before)",
    ),
    "lite2": (
        ["--coreset-ratio", "0.01", "--image-score", "patch"],
        "the default backbone and size instead of the search: the backbone alone",
    ),
    "search+grown": ([], "the search's pick with the grown bank: the bank alone"),
    "search+map": ([], "the search's pick with the map's image score: the image score alone"),
    "default": ([], "`ivadas train`: the default backbone and size, grown bank, the map's image score"),
    "fast": (["--profile", "fast"], "`--profile fast`: efficientnet_lite0, 1 % bank, the map's image score"),
}
BASELINE_ROW = "search"
TARGETS = {
    "bottle": {"image_auroc": 1.0, "pixel_auroc": 0.985, "aupro": 0.95},
    "elpv_mono": {"image_auroc": 0.96},
    "elpv_poly": {"image_auroc": 0.92},
}
RECALL_GAIN = {"elpv_mono": 0.10, "elpv_poly": 0.10}
TRAIN_RATIO = 2.0
FAST_LATENCY_RATIO = 1.1
SOFTPATCH_GAIN = 0.02
SCALING = {"train_seconds": 120.0, "peak_gb": 4.0}
SOFTPATCH_GOOD = 250
NAME = "bench_quality"
PARTIAL = WORK / "partial.json"


def save(results: dict) -> None:
    PARTIAL.parent.mkdir(parents=True, exist_ok=True)
    PARTIAL.write_text(json.dumps(results, indent=2, default=str) + "\n")


def _rate(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{k}/{n} = {k / max(n, 1):.3f} [{lo:.3f}, {hi:.3f}]"


def _label(config: ModelConfig) -> str:
    f = config.features
    return f"{f.backbone}@{f.input_size}/{f.layer_weighting}/top{config.score_top_fraction:g}"


def _metrics(model, extractor: FeatureExtractor, split) -> dict:  # noqa: ANN001
    m = evaluate_class(model, extractor, split, progress=False).metrics
    at = m["at_threshold"]
    return {
        "image_auroc": m["image_auroc"],
        "pixel_auroc": m["pixel_auroc"],
        "aupro": m["aupro"],
        "recall": _rate(at["true_positives"], m["n_anomalous"]),
        "recall_rate": at["true_positives"] / max(m["n_anomalous"], 1),
        "false_alarms": _rate(at["false_positives"], m["n_good"]),
    }


def _train_eval(split, config: ModelConfig) -> tuple[dict, object, FeatureExtractor]:  # noqa: ANN001
    extractor = FeatureExtractor(config.features)
    model = train_class(split, config, extractor, progress=False)
    training = model.card["training"]
    growth = training.get("bank_growth")
    row = {
        "config": _label(config),
        **_metrics(model, extractor, split),
        "expected_false_alarm_rate": model.calibration.fitted_false_alarm_rate,
        "train_seconds": training["total_seconds"],
        "bank_patches": training["bank_patches"],
        "bank_ratio": growth["chosen_ratio"] if growth else config.coreset_ratio,
        "bank_steps": [[s["coreset_ratio"], s["good_tail"]] for s in growth["steps"]] if growth else None,
    }
    return row, model, extractor


def _args(flags: list[str]) -> argparse.Namespace:
    return train_parser().parse_args(["--data-root", "-", "--out", "-", "--quiet", *flags])


# ------------------------------------------------------------------------------------------------ data sets


def dataset_splits() -> dict:
    splits = {name: load_split("elpv", name) for name in ("elpv_mono", "elpv_poly")}
    if (MVTEC / "bottle").is_dir():
        splits["bottle"] = load_split(str(MVTEC), "bottle")
        tiny = make_bottle_tiny(MVTEC / "bottle", WORK / "data")
        splits["bottle_tiny"] = load_split(str(tiny), "bottle_tiny")  # scored by bottle's models
        crops = make_bottle_crops(MVTEC / "bottle", WORK / "data")
        splits["bottle_crops"] = load_split(str(crops), "bottle_crops")
    else:
        print(f"MVTec bottle not found under {MVTEC}: bottle, bottle_crops and bottle_tiny skipped")
    return splits


def ensemble_check(search, audit_labels: np.ndarray) -> dict:  # noqa: ANN001
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


def proxy_check(search) -> dict:  # noqa: ANN001
    proxies = [t.proxy for t in search.trials]
    real = [t.audit_auroc for t in search.trials]
    rho = spearmanr(proxies, real).statistic
    return {
        "candidates": len(real),
        "spearman": round(float(rho), 3) if np.isfinite(rho) else None,  # None: every real AUROC alike
        "picked": search.chosen.candidate.label,
        "picked_real": round(search.chosen.audit_auroc, 4),
        "best_real": round(max(real), 4),
        "best_real_candidate": search.trials[int(np.argmax(real))].candidate.label,
        "median_real": round(float(np.median(real)), 4),
    }


def _row_config(split, row: str, searched: dict) -> ModelConfig:  # noqa: ANN001
    """A row's configuration as `ivadas train` makes it; the search runs once per data set (audited)."""
    args = _args(ROWS[row][0])
    if row == "search+grown":
        return replace(searched["search"].config, max_coreset_ratio=model_config(args).max_coreset_ratio)
    if row == "search+map":
        return replace(searched["search"].config, image_score=model_config(args).image_score)
    config, search = class_config(args, model_config(args), split, search_space(args), None, audit=split.test)
    if search is not None:
        searched["search"] = search
    return config


def _latency(models: dict, split, work: Path) -> dict:  # noqa: ANN001
    """Predict p50 (ms, the full product path) of every row's model, taking turns on the same images."""
    work.mkdir(parents=True, exist_ok=True)
    paths = {}
    for row, model in models.items():
        paths[row] = work / f"{row}.tar.gz"
        save_artifact(paths[row], {split.class_name: model})
    images = [s.path for s in split.test if s.path is not None][:20]
    found = alternate(
        {row: Predictor(path) for row, path in paths.items()}, split.class_name, images, rounds=2
    )
    return {row: found[row]["wall"] for row in models}


def run_dataset(name: str, split, results: dict, trained: dict) -> None:  # noqa: ANN001
    """Every row on one data set; bottle_tiny is scored by bottle's models (its train set is bottle's)."""
    out = results.setdefault("datasets", {}).setdefault(name, {"rows": {}})
    searched: dict = {}
    models, extractors = {}, {}
    for row in ROWS:
        if name == "bottle_tiny":
            model, extractor = trained["bottle"][row]
            out["rows"][row] = {
                "config": _label(model.config),
                **_metrics(model, extractor, split),
                "train_seconds": None,
                "bank_patches": len(model.bank),
            }
        else:
            config = _row_config(split, row, searched)
            row_figures, model, extractor = _train_eval(split, config)
            if row == "search":
                row_figures["search_seconds"] = round(searched["search"].seconds, 1)
                row_figures["train_seconds"] = round(
                    row_figures["train_seconds"] + searched["search"].seconds, 1
                )
            out["rows"][row] = row_figures
        models[row], extractors[row] = model, extractor
        print(f"  {row:13s} {json.dumps(out['rows'][row])}", flush=True)
    trained[name] = {row: (models[row], extractors[row]) for row in ROWS}
    if name != "bottle_tiny":
        search = searched["search"]
        out["proxy_check"] = proxy_check(search)
        out["ensemble_check"] = ensemble_check(search, np.array([s.label for s in split.test]))
        out["config"] = models["default"].config.to_dict()
        print(f"  proxy  {json.dumps(out['proxy_check'])}", flush=True)
    if name == "bottle_tiny":
        return  # bottle's models: their latency is bottle's
    for row, ms in _latency(models, split, WORK / "artifacts" / name).items():
        out["rows"][row]["predict_p50_ms"] = ms
    print(
        f"  predict p50 ms {json.dumps({r: v['predict_p50_ms'] for r, v in out['rows'].items()})}", flush=True
    )


def run_datasets(results: dict) -> None:
    trained: dict = {}
    for name, split in dataset_splits().items():
        done = results.get("datasets", {}).get(name, {}).get("rows", {})
        timed = all("predict_p50_ms" in r for r in done.values()) or name == "bottle_tiny"
        if set(done) == set(ROWS) and timed:
            print(f"\n== {name}: kept from the last run (--resume)", flush=True)
            continue
        if name == "bottle_tiny" and "bottle" not in trained:
            results.get("datasets", {}).pop(name, None)  # bottle's models are gone: tiny is scored anew
            continue
        results.setdefault("datasets", {})[name] = {"rows": {}}
        print(f"\n== {name}: {len(split.train)} train, {len(split.test)} test", flush=True)
        run_dataset(name, split, results, trained)
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
        if chosen:
            base = ModelConfig.from_dict(chosen)
        else:
            base = class_config(_args([]), model_config(_args([])), split, None, None)[0]
        extra = uncertain_cells(name)
        for ratio, seeds in plan:
            done = {r["seed"]: r for r in out.get(f"{name}@{ratio:g}", {}).get("rows", [])}  # --resume
            rows = [done[s] for s in seeds if s in done]
            for seed in (s for s in seeds if s not in done):
                noisy = add_unlabelled(split, extra, ratio, seed=seed)
                row = {"seed": seed, "n_noise": len(noisy.train) - len(split.train)}
                for model in ("patchcore", "softpatch"):
                    row[model] = _train_eval(noisy, replace(base, model=model, seed=seed))[0]["image_auroc"]
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
    """`ivadas train` at its defaults in its own process: wall seconds and its peak RSS."""
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
    card = model.card
    return {
        "wall_seconds": round(wall, 1),
        "train_seconds": card["training"]["total_seconds"],
        "train_seconds_at_reference": round(at_reference(card["training"]["total_seconds"], probe.ms), 1),
        "probe": probe.to_dict(),
        "peak_gb": round(usage.ru_maxrss / 1024**2, 2),
        "bank_patches": card["training"]["bank_patches"],
        "bank_ratio": card["training"]["bank_growth"]["chosen_ratio"],
        "config": _label(model.config),
    }


def run_scaling(results: dict) -> None:
    if not (MVTEC / "bottle").is_dir():
        print("MVTec bottle not found: scaling skipped")
        return
    out = results.setdefault("scaling", {})
    for n in (100, 200, 400):
        if str(n) in out:  # --resume
            continue
        root = make_bottle_1024(WORK / "data", n)
        row = _train_process(root, f"bottle1024_{n}", WORK / f"bottle1024_{n}.tar.gz")
        row["train_ms_per_image"] = round(1000 * row["train_seconds"] / n, 1)
        out[str(n)] = row
        print(f"  scaling {n} images: {json.dumps(row)}", flush=True)
        save(results)


# ------------------------------------------------------------------------------------------------- verdicts


def _cost_verdicts(name: str, rows: dict) -> list[str]:
    """Training of the default within TRAIN_RATIO x, and fast's predict p50 within FAST_LATENCY_RATIO x,
    the search row's."""
    missed = []
    base, default, fast = rows.get(BASELINE_ROW, {}), rows.get("default", {}), rows.get("fast", {})
    before, after = base.get("train_seconds"), default.get("train_seconds")
    if before and after and after > TRAIN_RATIO * before:
        missed.append(f"{name} training {after} s > {TRAIN_RATIO}x the search row's {before} s")
    before, after = base.get("predict_p50_ms"), fast.get("predict_p50_ms")
    if before and after and after > FAST_LATENCY_RATIO * before:
        missed.append(
            f"{name} fast predict p50 {after} ms > {FAST_LATENCY_RATIO}x the search row's {before} ms"
        )
    return missed


def verdicts(results: dict) -> list[str]:
    missed = []
    datasets = results.get("datasets", {})
    for name, targets in TARGETS.items():
        row = datasets.get(name, {}).get("rows", {}).get("default")
        for key, target in targets.items() if row else ():
            if row[key] is None or row[key] < target:
                missed.append(f"{name} {key} {row[key]} < {target}")
    for name, gain in RECALL_GAIN.items():
        rows = datasets.get(name, {}).get("rows", {})
        if "default" in rows and BASELINE_ROW in rows:
            before, after = rows[BASELINE_ROW]["recall_rate"], rows["default"]["recall_rate"]
            if after < before + gain:
                missed.append(
                    f"{name} recall at the threshold {after:.3f} < {before:.3f} + {gain} (search row)"
                )
    for name, ds in datasets.items():
        missed += _cost_verdicts(name, ds.get("rows", {}))
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
        if big["peak_gb"] >= SCALING["peak_gb"]:
            missed.append(f"peak RSS {big['peak_gb']} GB >= {SCALING['peak_gb']}")
    return missed


def _ensemble_cell(e: dict) -> str:
    label = e.get("label") or " + ".join(m.split("@")[0] for m in e["members"])
    return f"{label}: {e['proxy']} / {e.get('audit_auroc')}"


ROW_KEYS = ["config", "image_auroc", "pixel_auroc", "aupro", "recall", "false_alarms", "train_seconds",
            "bank_patches", "bank_ratio", "predict_p50_ms"]  # fmt: skip
CHECK_KEYS = ["candidates", "spearman", "picked", "picked_real", "best_real", "best_real_candidate",
              "median_real"]  # fmt: skip


def _dataset_tables(ds: dict) -> list[Table]:
    return [
        Table(
            "Each row trained as `ivadas train` does with its flags; rates at the calibrated 1 % threshold "
            "with Wilson 95 % intervals; train s includes the search where it ran; predict p50 of the rows' "
            "models taking turns on the same images (bottle_tiny: bottle's models)",
            [
                "data set",
                "row",
                "config",
                "image AUROC",
                "pixel AUROC",
                "AUPRO",
                "recall at thr",
                "false alarms at thr",
                "train s",
                "bank",
                "bank ratio",
                "predict p50 ms",
            ],  # fmt: skip
            [[n, row, *(r.get(k) for k in ROW_KEYS)] for n, d in ds.items() for row, r in d["rows"].items()],
            notes=[
                f"`{row}`: {what}" + (f" (`ivadas train {' '.join(flags)}`)" if flags else "")
                for row, (flags, what) in ROWS.items()
            ],
        ),
        Table(
            "The grown bank, step by step: ratio and the good images' score tail (mean of their highest 10 % "
            "leave-one-out scores); the growth stops at the first doubling that lowers it by less than 1 %",
            ["data set", "row", "steps (ratio: tail)", "kept"],
            [
                [
                    n,
                    row,
                    ", ".join(f"{r:g}: {t}" for r, t in d["rows"][row]["bank_steps"]),
                    d["rows"][row]["bank_ratio"],
                ]
                for n, d in ds.items()
                for row in ("default", "search+grown")
                if d["rows"].get(row, {}).get("bank_steps")
            ],
        ),
        Table(
            "The search's proxy against real defects (every candidate with the search's own small bank)",
            [
                "data set",
                "candidates",
                "Spearman proxy vs real",
                "pick",
                "real AUROC of pick",
                "best real",
                "best real candidate",
                "median real",
            ],  # fmt: skip
            [[n, *(r["proxy_check"][k] for k in CHECK_KEYS)] for n, r in ds.items() if r.get("proxy_check")],
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
                "type, the default configuration)",
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
                "Training cost against N (bottle images flipped, turned and shifted at 1024 px; "
                "`ivadas train` at its defaults in its own process)",
                [
                    "images",
                    "config",
                    "train s",
                    "train s at the reference speed",
                    "ms/image",
                    "peak RSS GB",
                    "bank",
                    "bank ratio",
                ],  # fmt: skip
                [
                    [
                        n,
                        r["config"],
                        r["train_seconds"],
                        r.get("train_seconds_at_reference"),
                        r["train_ms_per_image"],
                        r["peak_gb"],
                        r["bank_patches"],
                        r.get("bank_ratio"),
                    ]  # fmt: skip
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
