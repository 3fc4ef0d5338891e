"""`make bench-model`: the engine's quality, speed and size figures, measured through the real CLI.

Measures (and records in docs/benchmarks/bench_model.json):
- MVTec bottle, PatchCore with `--profile fast` (the engine's speed reference: the smallest backbone, a fixed
  1 % bank): image AUROC, pixel AUROC, AUPRO (targets 1.000 / >= 0.985 / >= 0.95), training time (target:
  under 10 s at the reference speed, probe.py) and the memory bank;
- bottle with --noise-ratio 0.1: PatchCore against SoftPatch image AUROC (SoftPatch >= 0.995 and >=
  PatchCore);
- ELPV mono and poly at 256 px, `--profile fast`: image AUROC of both models;
- the predict path at batch 1 (PNG bytes in; verdict, regions and heatmap PNG out), p50 per stage, on the
  served runtime and the torch reference in alternating blocks (target: served p50 <= 30 ms at the reference
  speed);
- bottle trained three ways, predict paths taking turns in blocks: `search` (the per-class search with a
  1 % bank, the default before), `default` (`ivadas train`) and `fast` (`--profile fast`): fast within 0.005
  of the default's metrics, its predict p50 <= 1.1x the search row's (the same run) and <= 30 ms at the
  reference speed;
- explanations (the nearest good training patch of each flagged region): the predict path with `explain` on
  against off, in alternating blocks, on bottle's anomalous and on its good test images (target: the product
  path, a good image with explanations on as the API asks by default, within 1.1x the p50 without), and the
  artifact's size with and without the bank provenance and thumbnails.
Exit code 1 when a target is missed (ELPV has none).

Bottle figures need the MVTec data (IVADAS_MVTEC_ROOT); without it they are skipped and said so.
Run: .venv/bin/python tests/benchmarks/bench_model.py [--skip-elpv] [--skip-profiles] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from infra.cli import main as ivadas  # noqa: E402
from model_server.engine.artifact import load_artifact, save_artifact  # noqa: E402
from model_server.engine.backends import RUNTIMES, default_runtime  # noqa: E402
from model_server.engine.config import ModelConfig  # noqa: E402
from model_server.engine.predictor import STAGES, Predictor  # noqa: E402
from model_server.engine.runtime import set_threads  # noqa: E402
from model_server.training.datasets import load_split  # noqa: E402
from tests.benchmarks.probe import at_reference, beside  # noqa: E402
from tests.benchmarks.tables import Table  # noqa: E402
from tests.benchmarks.verdict import conclude  # noqa: E402

#: ELPV cells are 300 px: upscaling them to the default 384 costs 4x the coreset time for a lower AUROC.
ELPV_INPUT_SIZE = "256"
MVTEC = Path(os.environ.get("IVADAS_MVTEC_ROOT", ROOT.parent / "shared/data/mvtec"))
NAME = "bench_model"


def run(argv: list[str]) -> None:
    code = ivadas([*argv, "--quiet"])
    if code != 0:
        raise SystemExit(f"ivadas {' '.join(argv)} failed with exit code {code}")


def train_and_evaluate(out: Path, data_root: str, classes: str, model: str, *extra: str) -> dict:
    """Train with `extra` flags and evaluate: {class: {metrics..., train_seconds, bank_bytes, config}}."""
    artifact = out / f"{model}.tar.gz"
    with beside() as probe:
        run(["train", "--data-root", data_root, "--classes", classes, "--model", model, "--no-evaluate",
             *extra, "--out", str(artifact)])  # fmt: skip
    report = out / f"report_{model}"
    run(["evaluate", "--artifact", str(artifact), "--data-root", data_root, "--report-dir", str(report)])
    doc = json.loads((report / "metrics.json").read_text())
    loaded = load_artifact(artifact)
    result = {}
    for name, m in doc["classes"].items():
        card = loaded.get(name).card
        result[name] = {
            "image_auroc": m["image_auroc"],
            "pixel_auroc": m["pixel_auroc"],
            "aupro": m["aupro"],
            "f1_max": m["f1_max"],
            "n_test": m["n_test"],
            "train_seconds": card["training"]["total_seconds"],
            "train_seconds_at_reference": round(at_reference(card["training"]["total_seconds"], probe.ms), 2),
            "probe": probe.to_dict(),
            "feature_seconds": card["training"]["feature_seconds"],
            "coreset_seconds": card["training"]["coreset_seconds"],
            "bank_patches": card["training"]["bank_patches"],
            "bank_bytes": card["training"]["bank_bytes"],
            "config": config_label(loaded.get(name).config),
            "search_seconds": (card.get("search") or {}).get("seconds"),
            "artifact": str(artifact),
        }
    return result


def config_label(config: ModelConfig) -> str:
    f = config.features
    return f"{f.backbone}@{f.input_size}/{f.layer_weighting}/top{config.score_top_fraction:g}"


def predict_latency(
    artifact: str, class_name: str, images: list[Path], rounds: int = 3, block: int = 10
) -> dict:
    """p50 per stage and of the whole call (wall) of the full predict path (PNG bytes in; verdict, regions and
    heatmap PNG out), batch 1, for each feature runtime: the served one (OpenVINO) and the torch reference,
    taking turns in blocks of `block` images so that this VM's drift hits both alike."""
    return alternate({r: Predictor(artifact, runtime=r) for r in RUNTIMES}, class_name, images, rounds, block)


def alternate(
    predictors: dict[str, Predictor], class_name: str, images: list[Path], rounds: int = 3, block: int = 10
) -> dict:
    """p50 per stage and of the whole call (wall) for each predictor, taking turns in blocks of `block`
    images so that this VM's drift hits them alike."""
    blobs = [p.read_bytes() for p in images]
    for predictor in predictors.values():
        predictor.predict(class_name, blobs[:2], return_heatmap=True)  # warm-up
    samples = {name: {k: [] for k in (*STAGES, "total", "wall")} for name in predictors}
    with beside() as probe:
        for done in range(1, rounds + 1):
            if done > 1:
                probe.read()
            for start in range(0, len(blobs), block):
                for name, predictor in predictors.items():
                    for blob in blobs[start : start + block]:
                        t = time.perf_counter()
                        (pred,) = predictor.predict(class_name, [blob], return_heatmap=True)
                        samples[name]["wall"].append((time.perf_counter() - t) * 1000.0)
                        for k in (*STAGES, "total"):
                            samples[name][k].append(pred.timings_ms[k])
    out = {}
    for name, by in samples.items():
        p50 = {k: round(statistics.median(v), 2) for k, v in by.items()}
        out[name] = p50 | {
            "n": len(by["wall"]),
            "wall_at_reference": round(at_reference(p50["wall"], probe.ms), 2),
            "probe": probe.to_dict(),
        }
    return out


def explain_latency(
    artifact: str, class_name: str, images: list[Path], rounds: int = 3, block: int = 10
) -> dict:
    """p50 of the whole predict call (wall) with explanations on and off on one predictor, taking turns in
    blocks of `block` images: {"on": ms, "off": ms, "n": calls each, "ratio": on / off}."""
    predictor = Predictor(artifact)
    blobs = [p.read_bytes() for p in images]
    predictor.predict(class_name, blobs[:2], return_heatmap=True, explain=True)  # warm-up
    walls: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        for start in range(0, len(blobs), block):
            for mode in walls:
                for blob in blobs[start : start + block]:
                    t = time.perf_counter()
                    predictor.predict(class_name, [blob], return_heatmap=True, explain=mode == "on")
                    walls[mode].append((time.perf_counter() - t) * 1000.0)
    off, on = (round(statistics.median(walls[m]), 2) for m in ("off", "on"))
    return {"off": off, "on": on, "n": len(walls["on"]), "ratio": round(on / off, 3)}


def provenance_size(artifact: str, out: Path) -> dict:
    """The artifact's bytes as trained and re-saved without the bank provenance (older artifacts' shape)."""
    loaded = load_artifact(artifact)
    bare = {name: replace(m, provenance=None) for name, m in loaded.classes.items()}
    with_it, without = out / "with_provenance.tar.gz", out / "without_provenance.tar.gz"
    save_artifact(with_it, dict(loaded.classes))  # re-saved too: the same compression on both sides
    save_artifact(without, bare)
    thumbs = sum(m.provenance.thumbnail_bytes() for m in loaded.classes.values() if m.provenance)
    return {"with": with_it.stat().st_size, "without": without.stat().st_size, "thumbnail_bytes": thumbs}


def explanations(artifact: str, class_name: str, out: Path) -> dict:
    test = MVTEC / class_name / "test"
    good = sorted((test / "good").glob("*.png"))
    anomalous = sorted(p for p in test.rglob("*.png") if p.parent.name != "good")
    return {
        "good": explain_latency(artifact, class_name, good),
        "anomalous": explain_latency(artifact, class_name, anomalous),
        "artifact_bytes": provenance_size(artifact, out),
    }


def profiles(out: Path, root: str, threads_arg: list[str]) -> dict:
    """Bottle trained as each of PROFILES says, its metrics and its predict path on the served runtime, the
    three taking turns."""
    found = {}
    for name, flags in PROFILES.items():
        trained = train_and_evaluate(
            out / f"profile_{name}", root, "bottle", "patchcore", *flags, *threads_arg
        )
        found[name] = trained["bottle"]
    test = sorted((MVTEC / "bottle/test").rglob("*.png"))
    latency = alternate({p: Predictor(found[p]["artifact"]) for p in PROFILES}, "bottle", test)
    return {p: found[p] | {"predict_ms": latency[p]} for p in PROFILES}


#: The targets this benchmark prints (bottle, default PatchCore; bottle with 10 % noise, SoftPatch). Times are
#: judged at the reference speed (probe.py): the seconds measured, scaled by the probe timed beside them.
BOTTLE_TARGETS = {"image_auroc": 1.0, "pixel_auroc": 0.985, "aupro": 0.95}
BOTTLE_TRAIN_SECONDS = 10.0
#: Full predict path p50 (900x900 PNG in; verdict, regions and heatmap PNG out), batch 1, served runtime.
PREDICT_P50_MS = 30.0
NOISY_SOFTPATCH_AUROC = 0.995
#: The fast profile's metrics may trail the default's by at most this much, its predict p50 may be at most
#: FAST_LATENCY_RATIO x the search row's (the default before), and meet PREDICT_P50_MS.
FAST_PROFILE_MARGIN = 0.005
FAST_LATENCY_RATIO = 1.1
#: The three ways bottle is trained for the comparison: `ivadas train` flags.
PROFILES = {
    "search": ["--search", "--coreset-ratio", "0.01"],
    "default": [],
    "fast": ["--profile", "fast"],
}
FAST = ["--profile", "fast"]
#: Explanations on a good image (the product path: the API asks for them by default) may cost at most this
#: ratio of the p50 without.
EXPLAIN_GOOD_RATIO = 1.1


def missed_targets(results: dict) -> list[str]:
    """The printed targets these figures miss (none measured without the MVTec data: nothing to miss)."""
    missed = []
    b = results.get("bottle")
    if b:
        missed += [f"bottle {k} {b[k]} < {t}" for k, t in BOTTLE_TARGETS.items() if b[k] is None or b[k] < t]
        if b["train_seconds_at_reference"] >= BOTTLE_TRAIN_SECONDS:
            missed.append(
                f"bottle trained in {b['train_seconds_at_reference']} s at the reference speed "
                f"({b['train_seconds']} s measured) >= {BOTTLE_TRAIN_SECONDS}"
            )
    served = results.get("predict_latency_ms", {}).get(default_runtime())
    if served and served["wall_at_reference"] > PREDICT_P50_MS:
        missed.append(
            f"predict path p50 {served['wall_at_reference']} ms at the reference speed "
            f"({served['wall']} ms measured) > {PREDICT_P50_MS} ms"
        )
    noise = results.get("bottle_noise_0.1")
    if noise:
        sp, pc = noise["softpatch"]["image_auroc"], noise["patchcore"]["image_auroc"]
        if sp < NOISY_SOFTPATCH_AUROC:
            missed.append(f"bottle noise 0.1 SoftPatch image AUROC {sp} < {NOISY_SOFTPATCH_AUROC}")
        if sp < pc:
            missed.append(f"bottle noise 0.1 SoftPatch image AUROC {sp} < PatchCore {pc}")
    explained = results.get("explanations")
    if explained and explained["good"]["ratio"] > EXPLAIN_GOOD_RATIO:
        missed.append(
            f"good images with explanations on: p50 {explained['good']['on']} ms, "
            f"{explained['good']['ratio']}x the {explained['good']['off']} ms without > {EXPLAIN_GOOD_RATIO}x"
        )
    return missed + missed_by_fast_profile(results.get("profiles"))


def missed_by_fast_profile(found: dict | None) -> list[str]:
    if not found:
        return []
    fast, default, before = found["fast"], found["default"], found["search"]
    missed = [
        f"fast profile {k} {fast[k]} < default {default[k]} - {FAST_PROFILE_MARGIN}"
        for k in BOTTLE_TARGETS
        if fast[k] is None or (default[k] is not None and fast[k] < default[k] - FAST_PROFILE_MARGIN)
    ]
    wall = fast["predict_ms"]["wall_at_reference"]
    if wall > PREDICT_P50_MS:
        missed.append(f"fast profile predict path p50 {wall} ms at the reference speed > {PREDICT_P50_MS} ms")
    ratio = fast["predict_ms"]["wall"] / before["predict_ms"]["wall"]
    if ratio > FAST_LATENCY_RATIO:
        missed.append(f"fast profile predict path p50 {ratio:.2f}x the search row's > {FAST_LATENCY_RATIO}x")
    return missed


def _bottle_table(b: dict) -> Table:
    return Table(
        f"MVTec bottle, PatchCore with --profile fast ({b['config']}; {b.get('n_train_images')} training "
        f"images, {b['n_test']} test)",
        ["figure", "measured", "target"],
        [
            ["image AUROC", b["image_auroc"], f">= {BOTTLE_TARGETS['image_auroc']}"],
            ["pixel AUROC", b["pixel_auroc"], f">= {BOTTLE_TARGETS['pixel_auroc']}"],
            ["AUPRO (FPR <= 0.3)", b["aupro"], f">= {BOTTLE_TARGETS['aupro']}"],
            [
                "training s at the reference speed (measured; features, coreset)",
                f"{b['train_seconds_at_reference']} ({b['train_seconds']}; {b['feature_seconds']}, "
                f"{b['coreset_seconds']})",
                f"< {BOTTLE_TRAIN_SECONDS:g}",
            ],
            ["memory bank", f"{b['bank_patches']} patches, {b['bank_bytes']:,} bytes", ""],
        ],
    )


def _latency_table(lat: dict) -> Table:
    rows = [
        [
            f"{name}{' (served)' if name == default_runtime() else ''}",
            *(r[k] for k in (*STAGES, "total", "wall")),
            r["wall_at_reference"],
        ]
        for name, r in lat.items()
    ]
    return Table(
        "Predict path, batch 1, p50 ms (bottle test PNGs, verdict, regions and heatmap PNG out; runtimes in "
        "alternating blocks of 10 images)",
        ["runtime", *STAGES, "total of stages", "wall", "wall at the reference speed"],
        rows,
        notes=[f"Target: the served runtime's wall p50 <= {PREDICT_P50_MS:g} ms at the reference speed."],
    )


def tables(results: dict) -> list[Table]:
    """The tables of a record (docs/benchmarks.md is rendered from them)."""
    out = []
    b = results.get("bottle")
    if b:
        out.append(_bottle_table(b))
    noise = results.get("bottle_noise_0.1")
    if noise:
        out.append(
            Table(
                "Bottle with 10 % of the defective test images moved into training (`--noise-ratio 0.1`)",
                ["model", "image AUROC", "pixel AUROC", "AUPRO", "train s", "bank bytes"],
                [
                    [
                        m,
                        r["image_auroc"],
                        r["pixel_auroc"],
                        r["aupro"],
                        r["train_seconds"],
                        f"{r['bank_bytes']:,}",
                    ]
                    for m, r in noise.items()
                ],
                notes=[f"Target: SoftPatch image AUROC >= {NOISY_SOFTPATCH_AUROC} and >= PatchCore's."],
            )
        )
    elpv = results.get("elpv")
    if elpv:
        out.append(
            Table(
                f"ELPV at {ELPV_INPUT_SIZE} px (image labels only)",
                ["class", "test images", "PatchCore image AUROC", "SoftPatch image AUROC", "train s PC / SP"],
                [
                    [
                        c,
                        pc["n_test"],
                        pc["image_auroc"],
                        elpv["softpatch"][c]["image_auroc"],
                        f"{pc['train_seconds']} / {elpv['softpatch'][c]['train_seconds']}",
                    ]
                    for c, pc in elpv["patchcore"].items()
                ],
            )
        )
    if results.get("predict_latency_ms"):
        out.append(_latency_table(results["predict_latency_ms"]))
    explained = results.get("explanations")
    if explained:
        size = explained["artifact_bytes"]
        out.append(
            Table(
                "Explanations: predict path p50 ms with `explain` off and on (alternating blocks of 10), "
                "and the artifact's size",
                ["bottle test images", "off", "on", "on / off"],
                [
                    [k, explained[k]["off"], explained[k]["on"], explained[k]["ratio"]]
                    for k in ("good", "anomalous")
                ],
                notes=[
                    f"Artifact: {size['with']:,} bytes with the bank provenance "
                    f"({size['thumbnail_bytes']:,} of thumbnails), {size['without']:,} without.",
                    f"Target: good images within {EXPLAIN_GOOD_RATIO:g}x the p50 without explanations.",
                ],
            )
        )
    found = results.get("profiles")
    if found:
        out.append(
            Table(
                "Bottle trained three ways (the search with a 1 % bank, as before; `ivadas train`; "
                "`--profile fast`), predict paths in alternating blocks",
                [
                    "profile",
                    "chosen",
                    "image AUROC",
                    "pixel AUROC",
                    "AUPRO",
                    "train s (search s)",
                    "predict p50 ms (at the reference speed)",
                ],
                [
                    [
                        p,
                        r["config"],
                        r["image_auroc"],
                        r["pixel_auroc"],
                        r["aupro"],
                        f"{r['train_seconds']} ({r['search_seconds'] or '-'})",
                        f"{r['predict_ms']['wall']} ({r['predict_ms']['wall_at_reference']})",
                    ]
                    for p, r in found.items()
                ],
                notes=[
                    f"Target: the fast profile within {FAST_PROFILE_MARGIN} of the default on every metric, "
                    f"its p50 <= {FAST_LATENCY_RATIO:g}x the search row's and <= {PREDICT_P50_MS:g} ms "
                    "at the reference speed."
                ],
            )
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "reports/bench_model"), help="artifacts and reports")
    parser.add_argument("--out", help="the record (default: docs/benchmarks/bench_model.json)")
    parser.add_argument("--skip-elpv", action="store_true")
    parser.add_argument(
        "--skip-profiles", action="store_true", help="no bottle search/default/fast comparison"
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    out = Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    threads_arg = ["--threads", str(threads)]
    results: dict = {"cpu_threads": threads}
    t_start = time.perf_counter()

    if (MVTEC / "bottle/train/good").is_dir():
        root = str(MVTEC)
        print("bottle, --profile fast: training and evaluating", flush=True)
        b = train_and_evaluate(out / "bottle", root, "bottle", "patchcore", *FAST, *threads_arg)["bottle"]
        b["n_train_images"] = len(load_split(MVTEC, "bottle").train)
        results["bottle"] = b
        print("bottle with 10 % noise: PatchCore and SoftPatch", flush=True)
        results["bottle_noise_0.1"] = {
            model: train_and_evaluate(
                out / "bottle_noise", root, "bottle", model, "--noise-ratio", "0.1", *FAST, *threads_arg
            )["bottle"]
            for model in ("patchcore", "softpatch")
        }
        print("predict path: served runtime and torch reference in alternating blocks", flush=True)
        test = sorted((MVTEC / "bottle/test").rglob("*.png"))
        results["predict_latency_ms"] = predict_latency(b["artifact"], "bottle", test)
        print("explanations: on against off, and the artifact's size", flush=True)
        results["explanations"] = explanations(b["artifact"], "bottle", out / "bottle")
        if not args.skip_profiles:
            print("bottle: search, default and fast", flush=True)
            results["profiles"] = profiles(out, root, threads_arg)
    else:
        print(f"MVTec bottle not found under {MVTEC}: bottle figures skipped", flush=True)

    if not args.skip_elpv:
        print(f"ELPV mono and poly at {ELPV_INPUT_SIZE} px: PatchCore and SoftPatch", flush=True)
        results["elpv"] = {
            model: train_and_evaluate(
                out / "elpv",
                "elpv",
                "elpv_mono,elpv_poly",
                model,
                "--input-size",
                ELPV_INPUT_SIZE,
                *FAST,
                *threads_arg,
            )
            for model in ("patchcore", "softpatch")
        }
    results["bench_seconds"] = round(time.perf_counter() - t_start, 1)
    return conclude(NAME, results, missed_targets(results), tables(results), args.out)


if __name__ == "__main__":
    sys.exit(main())
