"""`make bench-pipeline`: 500 images through the whole local stack (S3 inbox -> SQS -> poller -> worker ->
model server -> S3 + DynamoDB), end-to-end throughput and latency, against the model server's own throughput
at the same concurrency (the worker concurrency), measured on the same running server right after.

Targets (exit 1 when one is missed): the pipeline reaches at least 80 % of the model server's throughput
(a ratio measured in the same run); zero images lost. Records docs/benchmarks/bench_pipeline.json.
Uses the MVTec bottle test images (cycled under distinct keys) and the bench-model bottle artifact (trained if
missing). Run: .venv/bin/python tests/benchmarks/bench_pipeline.py [--images 500] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests/benchmarks"))

from bench_server import MVTEC, bottle_artifact, load  # noqa: E402

from infra.local.state import read_state  # noqa: E402
from infra.uploads import summarise, upload_and_wait  # noqa: E402
from tests.benchmarks.tables import Table  # noqa: E402
from tests.benchmarks.verdict import conclude  # noqa: E402

NAME = "bench_pipeline"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


#: The targets this benchmark prints.
MIN_RATIO_TO_MODEL_SERVER = 0.80


def missed_targets(result: dict) -> list[str]:
    missed = []
    if result["lost"]:
        missed.append(f"{result['lost']} of {result['images']} images lost (target 0)")
    if result["ratio_to_model_server"] < MIN_RATIO_TO_MODEL_SERVER:
        missed.append(
            f"pipeline / server {result['ratio_to_model_server']:.2f} < {MIN_RATIO_TO_MODEL_SERVER}"
        )
    return missed


def tables(result: dict) -> list[Table]:
    """The tables of a record (docs/benchmarks.md is rendered from them)."""
    direct = result["model_server_at_same_concurrency"]
    return [
        Table(
            f"{result['images']} bottle test images through the local stack, worker concurrency "
            f"{result['worker_concurrency']}, everything on one machine",
            ["figure", "measured", "target"],
            [
                [
                    "inspected / rejected / lost",
                    f"{result['inspected']} / {result['rejected']} / {result['lost']}",
                    "0 lost",
                ],
                [
                    "end-to-end throughput",
                    f"{result['pipeline_images_per_second']} images/s ({result['wall_seconds']} s)",
                    "",
                ],
                [
                    "model server alone, same concurrency, same run",
                    f"{direct['throughput_img_s']} images/s",
                    "",
                ],
                [
                    "pipeline / model server",
                    result["ratio_to_model_server"],
                    f">= {MIN_RATIO_TO_MODEL_SERVER}",
                ],
                [
                    "latency, upload to result visible",
                    f"p50 {result['latency_p50_ms']} ms, p95 {result['latency_p95_ms']} ms",
                    "",
                ],
            ],
            notes=[
                "CPU ms per image: "
                + ", ".join(f"{k} {v}" for k, v in result["cpu_ms_per_image"].items())
                + " (the worker processes are not in this count)."
            ],
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4, help="worker concurrency (Lambda instances)")
    parser.add_argument("--artifact", default=str(ROOT / "reports/bench_model/bottle/patchcore.tar.gz"))
    parser.add_argument("--out", help="the record (default: docs/benchmarks/bench_pipeline.json)")
    args = parser.parse_args()
    artifact = bottle_artifact(args.artifact)
    if artifact is None:
        return 0
    sources = sorted((MVTEC / "bottle/test").rglob("*.png"))
    work = Path(tempfile.mkdtemp(prefix="ivadas-bench-"))
    images = work / "images"
    images.mkdir()
    for i in range(args.images):  # distinct keys, so 500 distinct inspections
        shutil.copyfile(sources[i % len(sources)], images / f"{i:04d}.png")
    state_dir = work / "state"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    up = subprocess.run(
        [sys.executable, "-m", "infra.cli", "local", "up", "--state-dir", str(state_dir), "--patchcore",
         str(artifact), "--worker-concurrency", str(args.concurrency)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if up.returncode:
        print(up.stdout, up.stderr, (state_dir / "supervisor.log").read_text())
        return 1
    try:
        state = read_state(state_dir)
        files = sorted(images.iterdir())
        pids = {
            "supervisor (poller, worker, API shim)": state["pid"],
            "model server": state["model_server_pid"],
            "moto server": state["moto_pid"],
            "benchmark client": os.getpid(),
        }
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.monotonic()
        rows = upload_and_wait(files, "bottle", "bench", 1800, state, base=images, in_flight=64)
        wall = time.monotonic() - t0
        cpu = {
            name: round((cpu_seconds(pid) - cpu0[name]) / max(1, args.images) * 1000, 1)
            for name, pid in pids.items()
        }
        summary = summarise(rows)
        pipeline_rate = summary["inspected"] / wall
        blobs = [p.read_bytes() for p in sources]
        load(state["model_port"], blobs, args.concurrency, 10)  # warm the direct path
        direct = load(state["model_port"], blobs, args.concurrency, len(sources) * 2)
    finally:
        subprocess.run(
            [sys.executable, "-m", "infra.cli", "local", "down", "--state-dir", str(state_dir)], env=env
        )
        shutil.rmtree(images, ignore_errors=True)
    for raw in ("latencies", "batch_sizes", "wall_s"):
        direct.pop(raw)
    result = {
        **summary,
        "images": args.images,
        "worker_concurrency": args.concurrency,
        "wall_seconds": round(wall, 1),
        "pipeline_images_per_second": round(pipeline_rate, 2),
        "model_server_at_same_concurrency": direct,
        "ratio_to_model_server": round(pipeline_rate / direct["throughput_img_s"], 3),
        "cpu_ms_per_image": cpu,
    }
    return conclude(NAME, result, missed_targets(result), tables(result), args.out)


if __name__ == "__main__":
    sys.exit(main())
