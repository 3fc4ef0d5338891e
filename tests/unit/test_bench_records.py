"""How a benchmark's figures reach docs/: the record verdict.conclude writes, the time targets judged at the
reference speed, and the tables render.py makes of each benchmark's record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.benchmarks import probe, render, sizing, verdict
from tests.paths import REPO_ROOT


def test_a_time_measured_in_a_slow_hour_is_judged_at_the_reference_speed() -> None:
    """The probe took twice its reference time: the machine was twice as slow, so 20.4 s of training is
    10.2 s at the reference speed, and a rate twice as high."""
    slow = 2 * probe.REFERENCE_PROBE_MS
    assert probe.at_reference(20.4, slow) == pytest.approx(10.2)
    assert probe.rate_at_reference(20.0, slow) == pytest.approx(40.0)
    with probe.beside() as measured:
        measured.read()
    assert len(measured.readings) == 3 and all(r > 0 for r in measured.readings)
    assert measured.ms == pytest.approx(sum(measured.readings) / 3)


def test_conclude_records_the_run_and_names_its_command(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.argv", ["bench_server.py", "--rounds", "1"])
    figures = {"artifact": str(REPO_ROOT / "reports/x.tar.gz"), "data": "/elsewhere/on/a/machine/000.png"}
    out = tmp_path / "bench_server.json"
    code = verdict.conclude("bench_server", figures, ["a target"], out=str(out))
    record = json.loads(out.read_text())
    assert code == 1 and record["exit_code"] == 1 and record["missed"] == ["a target"]
    assert record["command"] == ".venv/bin/python tests/benchmarks/bench_server.py --rounds 1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", record["date"]) and record["machine"]["cpus"] >= 1
    assert record["figures"] == {"artifact": "reports/x.tar.gz", "data": ".../000.png"}  # no machine's paths
    assert "MISSED: a target" in capsys.readouterr().out
    monkeypatch.setattr("sys.argv", ["bench_server.py"])
    assert verdict.command_line("bench_server", []) == "make bench-server"


# Each benchmark's figures, trimmed to what its tables read (the keys its run writes).
RATE = {"count": 3, "n": 100, "rate": 0.03, "wilson95": [0.01, 0.085]}
LEVEL = {"p50_ms": 27.0, "p95_ms": 30.0, "throughput_img_s": 37.0, "throughput_at_reference": 36.0}
SERVER = {
    "cpu_threads": 2,
    "images": 83,
    "in_process_p50_ms": 27.6,
    "server_p50_ms_interleaved": 28.0,
    "overhead_ms_at_c1": 0.4,
    "overhead_fraction_at_c1": 0.015,
    "throughput_ratio_c16_c1": 1.25,
    "server": [{**LEVEL, "concurrency": c, "mean_batch": 1.0} for c in (1, 4)]
    + [{**LEVEL, "concurrency": 16, "throughput_img_s": 46.11, "p50_ms": 335.0, "mean_batch": 1.98}],
}
BOTTLE = {
    "config": "efficientnet_lite0@384/channels/top0",
    "n_train_images": 209,
    "n_test": 83,
    "image_auroc": 1.0,
    "pixel_auroc": 0.9863,
    "aupro": 0.9574,
    "train_seconds": 9.5,
    "train_seconds_at_reference": 9.1,
    "feature_seconds": 5.0,
    "coreset_seconds": 2.8,
    "bank_patches": 4815,
    "bank_bytes": 2927520,
    "search_seconds": None,
}
LATENCY = {
    "decode": 10.4,
    "preprocess": 1.9,
    "backbone": 9.8,
    "knn": 3.6,
    "heatmap": 1.9,
    "total": 27.4,
    "wall": 27.6,
    "wall_at_reference": 27.0,
    "n": 249,
}
STUDY = {
    "configuration": "efficientnet_lite0@384",
    "n_train": 170,
    "held_out_sources": 39,
    "copies": 6,
    "sources_reviewed_evaluation": [8, 31],
    "reviewed_false_alarms": 21,
    "reviewed_images": 48,
    "coverage_radius": 2.1,
    "out_of_fold_flagged": 5,
    "false_alarms_before": {**RATE, "count": 114},
    "false_alarms_after": {**RATE, "count": 12},
    "test_before": {"recall": RATE, "image_auroc": 1.0},
    "test_after": {"recall": RATE, "image_auroc": 1.0},
    "pooled_test_after": {"recall": RATE, "image_auroc": 1.0},
    "threshold": [30.17, 30.17],
    "threshold_policy": "keep",
    "bank": [3917, 4063],
    "patches_added": 146,
    "train_seconds": 22.6,
    "update_artifact_wall_seconds": 1.56,
    "update_share_of_training": 0.069,
    "train_cpu_seconds": 42.7,
    "update_artifact_cpu_seconds": 2.77,
    "update_cpu_share_of_training": 0.065,
    "pooled_threshold": 32.8,
    "pooled_false_alarms_after": RATE,
}
FAULT_COUNTS = {
    "images_in": 2000,
    "never_uploaded": 0,
    "inspected": 1980,
    "rejected": 20,
    "endpoint_invocations": 2004,
    "extra_invocations": {"in flight when the whole stack stopped": 4},
    "result_writes": 1999,
    "extra_writes": {},
    "results_without_write_line": 1,
    "absorbed_replays": 1799,
    "absorbed_in_progress": 697,
    "dlq_messages": 0,
    "dlq_images": 0,
    "dlq_unexplained": 0,
    "lost": 0,
}
MINUTE = {
    "images": 360,
    "probe_ms": 4.1,
    "rss_mb": {"model server": 931.0, "worker-0": 79.4, "moto": 242.0},
    "cpu_ms_per_image": {"model server": 30.0, "workers": 14.0, "moto": 28.0},
}
OURS = {
    "n_train": 209,
    "train_seconds": 5.6,
    "train_seconds_at_reference": 5.4,
    "wall_seconds": 16.2,
    "peak_gb": 1.55,
    "bank_patches": 2140,
}
FIGURES = {
    "bench_model": {
        "bottle": BOTTLE,
        "predict_latency_ms": {"openvino": LATENCY, "torch": LATENCY},
        "bottle_noise_0.1": {m: BOTTLE for m in ("patchcore", "softpatch")},
        "elpv": {m: {"elpv_mono": {**BOTTLE, "n_test": 413}} for m in ("patchcore", "softpatch")},
        "profiles": {
            p: {**BOTTLE, "search_seconds": 33.9, "predict_ms": LATENCY}
            for p in ("search", "default", "fast")
        },
    },
    "bench_quality": {
        "datasets": {
            "bottle": {
                "rows": {
                    "search": {
                        "config": "efficientnet_lite2@384/channels/top0",
                        "image_auroc": 1.0,
                        "recall": "63/63",
                        "train_seconds": 81.8,
                        "bank_patches": 9216,
                        "bank_ratio": 0.02,
                        "predict_p50_ms": 31.2,
                    },
                    "default": {
                        "config": "efficientnet_lite2@384/channels/top0",
                        "image_auroc": 1.0,
                        "bank_ratio": 0.02,
                        "bank_steps": [[0.01, 30.2], [0.02, 29.4], [0.04, 29.2]],
                    },
                },
                "proxy_check": {
                    "candidates": 36,
                    "spearman": -0.367,
                    "picked": "lite1@448",
                    "picked_real": 0.9992,
                    "best_real": 1.0,
                    "best_real_candidate": "lite0@384",
                    "median_real": 1.0,
                },
                "ensemble_check": {
                    "best_single": {"label": "lite1@384", "proxy": 0.93, "audit_auroc": 1.0},
                    "top2": {"members": ["lite1@384", "mobilenetv2_100@384"], "proxy": 0.93},
                    "all": {"members": ["lite1@384"], "proxy": 0.93, "audit_auroc": 1.0},
                },
            }
        },
        "softpatch": {
            "elpv_mono@0.1": {
                "rows": [{"seed": 0, "patchcore": 0.93, "softpatch": 0.917}],
                "patchcore": 0.93,
                "softpatch": 0.917,
                "gain": -0.013,
            }
        },
        "scaling": {
            "400": {
                "config": "lite2@384",
                "train_seconds": 113.8,
                "train_seconds_at_reference": 100.1,
                "train_ms_per_image": 284.4,
                "peak_gb": 2.21,
                "bank_patches": 9216,
            }
        },
    },
    "bench_server": SERVER,
    "bench_pipeline": {
        "images": 500,
        "worker_concurrency": 4,
        "inspected": 500,
        "rejected": 0,
        "lost": 0,
        "pipeline_images_per_second": 19.47,
        "wall_seconds": 25.7,
        "ratio_to_model_server": 0.45,
        "model_server_at_same_concurrency": {"throughput_img_s": 42.93},
        "latency_p50_ms": 2700.0,
        "latency_p95_ms": 3600.0,
        "cpu_ms_per_image": {"model server": 33.1, "moto server": 28.9},
    },
    "bench_feedback": {"studies": {"bottle": STUDY}},
    "bench_faults": {
        "before_redrive": {**FAULT_COUNTS, "dlq_messages": 148, "dlq_images": 76},
        "after_redrive": FAULT_COUNTS,
        "wall_seconds_before_redrive": 610.2,
        "events": [[0.0, "kill -9 of the model server"], [1.0, "503 for 45 s"]],
    },
    "bench_soak": {
        "images": 10000,
        "rate": 6.0,
        "concurrency": 2,
        "lost": 0,
        "upload_errors": 0,
        "minutes": [{**MINUTE, "minute": 1}, {**MINUTE, "minute": 2, "probe_ms": 4.2}],
    },
    "bench_peers": {
        "config": {"input_size": 256, "coreset_ratio": 0.01, "threads": 2},
        "fit": {
            "ours": OURS,
            "anomalib": {"fit_seconds": 184.9, "wall_seconds": 192.3, "peak_gb": 1.85},
            "ratio": 33.3,
        },
        "quality": {
            s: {"image_auroc": 1.0, "pixel_auroc": 0.983, "aupro": 0.935} for s in ("ours", "anomalib")
        },
        "latency": {
            f"{k}:{p}": {"p50_ms": 19.4, "p95_ms": 20.7}
            for k in ("ours", "torch", "openvino")
            for p in ("a", "b")
        }
        | {"ours:product": {"p50_ms": 19.9, "p95_ms": 22.0}},
        "ratios": {"bytes_p50": 2.72, "decoded_p50": 3.9},
        "floor": {
            "peak_gflops": 213.6,
            "backbone_gflops": {"ours": 0.635, "anomalib": 0.95},
            "backbone_ours_ms": 2.98,
            "backbone_anomalib_ms": 4.45,
            "queries": 1024,
            "dim": 152,
            "knn_ours_ms": 3.12,
            "knn_anomalib_ms": 3.12,
            "png_decode_p50_ms": 14.85,
        },
        "scaling": {"50": {"ours": OURS, "anomalib": {"fit_seconds": 17.3}}, "default@209": {"ours": OURS}},
    },
}


def _records(folder: Path) -> Path:
    for name, figures in FIGURES.items():
        record = {
            "benchmark": name,
            "date": "2026-12-07 10:00 UTC",
            "command": f"make {name.replace('_', '-')}",
            "machine": {"cpus": 2, "cpu": "a test CPU"},
            "exit_code": 0,
            "missed": [],
            "figures": figures,
        }
        (folder / f"{name}.json").write_text(json.dumps(record))
    return folder


def test_every_benchmark_renders_its_record_into_its_block(tmp_path: Path) -> None:
    assert set(FIGURES) == set(render.BENCHMARKS)
    page = "".join(f"## {n}\n<!-- generated: {n} -->\nSTALE\n<!-- end generated: {n} -->\n" for n in FIGURES)
    out = render.render(page, _records(tmp_path))
    for name in FIGURES:
        block = out.split(f"<!-- generated: {name} -->\n")[1].split(f"<!-- end generated: {name} -->")[0]
        assert block.startswith(f"Run 2026-12-07 10:00 UTC, `make {name.replace('_', '-')}`, on 2 CPUs")
        assert "exit 0, every target met" in block and "\n| " in block and "STALE" not in block
    assert "| 16 | 335.0 | 30.0 | 46.11 | 36.0 | 1.98 |" in out  # bench-server's row, as recorded
    assert render.render(out, tmp_path) == out  # rendering again changes nothing


def test_a_benchmark_without_a_record_says_how_to_make_one(tmp_path: Path) -> None:
    page = "<!-- generated: bench_soak -->\n<!-- end generated: bench_soak -->\n"
    assert "No run recorded yet: `make bench-soak`" in render.render(page, tmp_path)
    with pytest.raises(KeyError, match="bench_nothing"):
        render.render("<!-- generated: bench_nothing -->\n<!-- end generated: bench_nothing -->", tmp_path)


def test_sizing_follows_the_measured_throughput(tmp_path: Path) -> None:
    found = sizing.sizing(SERVER)
    # 75 % of 46.11 images/s: 34.58 per instance, 2,074 a minute -> 2,070; 100 images/s need 3 instances
    assert found["per_instance"] == 34.58 and found["invocations_per_instance_target"] == 2070
    assert found["instances_for_example"] == 3 and found["worker_concurrency_for_example"] == 12
    assert found["instance_dollars_per_million"] == round(1e6 / 34.5825 / 3600 * 0.134, 2)
    block = render.render("<!-- generated: sizing -->\n<!-- end generated: sizing -->", _records(tmp_path))
    assert "| `InvocationsPerInstanceTarget` | 2070 |" in block
