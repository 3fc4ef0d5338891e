"""Each benchmark's decision on the targets it prints (its exit code is 1 exactly when this lists a miss):
figures that meet every target pass, and each target missed on its own is named."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def bench(name: str) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def changed(figures: dict, path: str, value: object) -> dict:
    out = copy.deepcopy(figures)
    *parents, leaf = path.split("/")
    node = out
    for key in parents:
        node = node[key]
    node[leaf] = value
    return out


MODEL = {
    "bottle": {"image_auroc": 1.0, "pixel_auroc": 0.986, "aupro": 0.951, "train_seconds": 25.0},
    "bottle_noise_0.1": {"patchcore": {"image_auroc": 0.99}, "softpatch": {"image_auroc": 0.997}},
}


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("bottle/image_auroc", 0.9992, "bottle image_auroc"),
        ("bottle/pixel_auroc", 0.984, "bottle pixel_auroc"),
        ("bottle/aupro", 0.94, "bottle aupro"),
        ("bottle/train_seconds", 60.0, "trained in 60.0 s"),
        ("bottle_noise_0.1/softpatch/image_auroc", 0.994, "SoftPatch image AUROC 0.994 < 0.995"),
        ("bottle_noise_0.1/patchcore/image_auroc", 0.998, "< PatchCore 0.998"),
    ],
)
def test_bench_model_names_each_missed_target(path: str, value: object, named: str) -> None:
    check = bench("bench_model").missed_targets
    assert check(MODEL) == []
    (missed,) = check(changed(MODEL, path, value))
    assert named in missed
    assert check({}) == []  # no MVTec data: nothing measured, nothing missed


SERVER = {"overhead_fraction_at_c1": 0.04, "throughput_ratio_c16_c1": 1.8}


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [("overhead_fraction_at_c1", 0.1, "overhead 10.0%"), ("throughput_ratio_c16_c1", 1.49, "1.49x < 1.5x")],
)
def test_bench_server_names_each_missed_target(path: str, value: object, named: str) -> None:
    check = bench("bench_server").missed_targets
    assert check(SERVER) == []
    (missed,) = check(changed(SERVER, path, value))
    assert named in missed


PIPELINE = {"images": 500, "missing": 0, "ratio_to_model_server": 0.81}


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [("missing", 3, "3 of 500 images lost"), ("ratio_to_model_server", 0.79, "0.79 < 0.8")],
)
def test_bench_pipeline_names_each_missed_target(path: str, value: object, named: str) -> None:
    check = bench("bench_pipeline").missed_targets
    assert check(PIPELINE) == []
    (missed,) = check(changed(PIPELINE, path, value))
    assert named in missed


QUALITY = {
    "datasets": {
        "bottle": {"after": {"image_auroc": 1.0, "pixel_auroc": 0.99, "aupro": 0.96}},
        "elpv_mono": {"after": {"image_auroc": 0.97}},
        "elpv_poly": {"after": {"image_auroc": 0.93}},
    },
    "softpatch": {"elpv_mono@0.1": {"gain": 0.03}, "elpv_poly@0.1": {"gain": 0.02}},
    "scaling": {"400": {"train_seconds": 100.0, "search_seconds": 250.0, "peak_gb": 3.1}},
}


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("datasets/bottle/after/aupro", 0.94, "bottle aupro 0.94 < 0.95"),
        ("datasets/elpv_poly/after/image_auroc", None, "elpv_poly image_auroc None"),
        ("softpatch/elpv_poly@0.1/gain", -0.01, "SoftPatch gain"),
        ("scaling/400/train_seconds", 120.0, "trains in 120.0 s"),
        ("scaling/400/search_seconds", 301.0, "search 301.0 s > 3.0x"),
        ("scaling/400/peak_gb", 4.0, "peak RSS 4.0 GB"),
    ],
)
def test_bench_quality_names_each_missed_target(path: str, value: object, named: str) -> None:
    check = bench("bench_quality").verdicts
    assert check(QUALITY) == []
    (missed,) = check(changed(QUALITY, path, value))
    assert named in missed


FEEDBACK = {
    "false_alarms_before": {"count": 40},
    "false_alarms_after": {"count": 8},
    "test_before": {"recall": {"count": 60}, "image_auroc": 0.990},
    "test_after": {"recall": {"count": 59}, "image_auroc": 0.987},
    "update_share_of_training": 0.04,
    "update_cpu_share_of_training": 0.06,
}


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("false_alarms_before/count", 19, "false alarms before"),
        ("false_alarms_after/count", 21, "at least halved"),
        ("test_after/recall/count", 58, "recall down"),
        ("test_after/image_auroc", 0.984, "image AUROC within"),
        ("update_cpu_share_of_training", 0.1, "of training"),
    ],
)
def test_bench_feedback_names_each_missed_target(path: str, value: object, named: str) -> None:
    check = bench("bench_feedback").verdicts
    assert all(ok for _, ok in check(FEEDBACK))
    (missed,) = [what for what, ok in check(changed(FEEDBACK, path, value)) if not ok]
    assert named in missed
