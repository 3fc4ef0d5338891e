"""`make bench-server`: the model server's latency, throughput and overhead on the MVTec bottle test images.

Starts the real server (one worker, default settings) on the default PatchCore bottle model and sends raw PNG
requests with a heatmap asked for, from keep-alive HTTP clients at concurrency 1, 4 and 16 (in turn, one pass
over the images each, repeated --rounds times). Prints p50/p95 latency, throughput (images/s), the mean
forward-pass batch size, and the server's overhead over the in-process predict path (same images, same
heatmap) at concurrency 1.
Targets (exit 1 when one is missed): overhead < 10 % of the in-process p50; throughput at 16 >= 1.5x
throughput at 1, and at least 35 images/s at the reference speed (the probe timed beside the load, probe.py).
Records docs/benchmarks/bench_server.json (docs/deploying.md's sizing is rendered from it).
Run: .venv/bin/python tests/benchmarks/bench_server.py [--artifact PATH] [--rounds N]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from infra.cli import main as ivadas  # noqa: E402
from model_server.engine.predictor import Predictor  # noqa: E402
from model_server.engine.runtime import set_threads  # noqa: E402
from tests.benchmarks.probe import Beside, beside, rate_at_reference  # noqa: E402
from tests.benchmarks.tables import Table  # noqa: E402
from tests.benchmarks.verdict import conclude  # noqa: E402

MVTEC = Path(os.environ.get("IVADAS_MVTEC_ROOT", ROOT.parent / "shared/data/mvtec"))
NAME = "bench_server"
HEADERS = {
    "Content-Type": "image/png",
    "X-Amzn-SageMaker-Custom-Attributes": "class_name=bottle,return_heatmap=true",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def in_process(predictor: Predictor, blobs: list[bytes]) -> list[float]:
    out = []
    for blob in blobs:
        t = time.perf_counter()
        predictor.predict("bottle", [blob], return_heatmap=True)
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def overhead_pairs(
    port: int, predictor: Predictor, blobs: list[bytes], rounds: int
) -> tuple[list[float], list[float]]:
    """In-process and server latencies at concurrency 1, measured in alternating blocks of 10 images so that
    both see the same machine (this VM's speed drifts by up to 2x over minutes); the server idles meanwhile.
    """
    local: list[float] = []
    served: list[float] = []
    for _ in range(rounds):
        for start in range(0, len(blobs), 10):
            block = blobs[start : start + 10]
            local.extend(in_process(predictor, block))
            served.extend(load(port, block, 1, len(block))["latencies"])
    return local, served


def load(port: int, blobs: list[bytes], concurrency: int, total: int) -> dict:
    """`total` requests from `concurrency` keep-alive clients; latency per request and overall throughput."""
    latencies: list[float] = []
    batch_sizes: list[int] = []
    errors: list[str] = []
    counter = iter(range(total))
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            t = time.perf_counter()
            conn.request("POST", "/invocations", body=blobs[i % len(blobs)], headers=HEADERS)
            resp = conn.getresponse()
            body = resp.read()
            elapsed = (time.perf_counter() - t) * 1000.0
            if resp.status != 200:
                errors.append(f"{resp.status} {body[:200]!r}")
                continue
            marker = body.find(b'"batch_size":')  # avoid parsing 300 KB of JSON on the client's core
            with lock:
                latencies.append(elapsed)
                batch_sizes.append(int(body[marker + 13 : body.find(b",", marker)]))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, first: {errors[0]}")
    return summarise_load(concurrency, latencies, batch_sizes, wall)


def summarise_load(concurrency: int, latencies: list[float], batch_sizes: list[int], wall: float) -> dict:
    return {
        "latencies": latencies,
        "batch_sizes": batch_sizes,
        "wall_s": wall,
        "concurrency": concurrency,
        "requests": len(latencies),
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(percentile(latencies, 0.95), 2),
        "throughput_img_s": round(len(latencies) / wall, 2),
        "mean_batch": round(statistics.mean(batch_sizes), 2),
    }


def interleaved(
    port: int, blobs: list[bytes], levels: tuple[int, ...], rounds: int, probe: Beside | None = None
) -> list[dict]:
    """Each concurrency level in turn, one pass over the images each, `rounds` times, pooled per level: the
    levels are compared on the same machine even though this VM's speed drifts by up to 2x over minutes (and
    the probe, if given, is read after each round)."""
    runs: dict[int, list[dict]] = {c: [] for c in levels}
    for done in range(1, rounds + 1):
        for c in levels:
            runs[c].append(load(port, blobs, c, len(blobs)))
        if probe is not None and done < rounds:
            probe.read()
    return [
        summarise_load(
            c,
            [x for r in rs for x in r["latencies"]],
            [x for r in rs for x in r["batch_sizes"]],
            sum(r["wall_s"] for r in rs),
        )
        for c, rs in runs.items()
    ]


#: The targets this benchmark prints.
MAX_OVERHEAD_FRACTION = 0.10
MIN_THROUGHPUT_RATIO = 1.5
MIN_THROUGHPUT_C16 = 35.0  # images/s at concurrency 16, at the reference speed


def missed_targets(summary: dict) -> list[str]:
    missed = []
    if summary["overhead_fraction_at_c1"] >= MAX_OVERHEAD_FRACTION:
        missed.append(
            f"server overhead {summary['overhead_fraction_at_c1']:.1%} of the in-process p50 "
            f">= {MAX_OVERHEAD_FRACTION:.0%}"
        )
    if summary["throughput_ratio_c16_c1"] < MIN_THROUGHPUT_RATIO:
        missed.append(
            f"throughput at 16 / at 1 {summary['throughput_ratio_c16_c1']}x < {MIN_THROUGHPUT_RATIO}x"
        )
    c16 = summary["server"][-1] if summary.get("server") else None
    if c16 is not None and c16["throughput_at_reference"] < MIN_THROUGHPUT_C16:
        missed.append(
            f"throughput at 16 {c16['throughput_at_reference']} images/s at the reference speed "
            f"({c16['throughput_img_s']} measured) < {MIN_THROUGHPUT_C16:g}"
        )
    return missed


def tables(summary: dict) -> list[Table]:
    """The tables of a record (docs/benchmarks.md is rendered from them)."""
    rows = [
        [
            r["concurrency"],
            r["p50_ms"],
            r["p95_ms"],
            r["throughput_img_s"],
            r["throughput_at_reference"],
            r["mean_batch"],
        ]
        for r in summary["server"]
    ]
    share = summary["overhead_fraction_at_c1"]
    return [
        Table(
            f"Model server, {summary['images']} bottle test PNGs (900x900) with a heatmap asked for, "
            f"{summary['cpu_threads']} threads; the levels take turns",
            [
                "concurrency",
                "p50 ms",
                "p95 ms",
                "images/s",
                "images/s at the reference speed",
                "mean images per forward pass",
            ],
            rows,
            notes=[
                "Overhead at concurrency 1, in alternating blocks against the in-process predict path: "
                f"server "
                f"p50 {summary['server_p50_ms_interleaved']} ms against {summary['in_process_p50_ms']} ms, "
                f"{summary['overhead_ms_at_c1']} ms = {share:.1%} (target < {MAX_OVERHEAD_FRACTION:.0%}).",
                f"Throughput at 16 / at 1: {summary['throughput_ratio_c16_c1']}x (target >= "
                f"{MIN_THROUGHPUT_RATIO}x); at 16, at the reference speed: target >= {MIN_THROUGHPUT_C16:g} "
                "images/s.",
            ],
        )
    ]


def bottle_artifact(path: str) -> Path | None:
    """The default PatchCore bottle model (trained here if missing); None without the MVTec data."""
    if not (MVTEC / "bottle/test").is_dir():
        print(f"MVTec bottle not found under {MVTEC}: nothing to measure")
        return None
    artifact = Path(path)
    if not artifact.exists():
        print(f"training the default PatchCore bottle model into {artifact}", flush=True)
        code = ivadas(["train", "--data-root", str(MVTEC), "--classes", "bottle", "--no-evaluate",
                       "--quiet", "--out", str(artifact)])  # fmt: skip
        if code:
            raise SystemExit(f"training failed with exit code {code}")
    return artifact


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", default=str(ROOT / "reports/bench_model/bottle/patchcore.tar.gz"))
    parser.add_argument(
        "--rounds", type=int, default=3, help="passes over the 83 test images per measurement"
    )
    parser.add_argument("--out", help="the record (default: docs/benchmarks/bench_server.json)")
    parser.add_argument(
        "--model-lanes", type=int, default=None, help="server setting (default: the server's)"
    )
    args = parser.parse_args()
    artifact = bottle_artifact(args.artifact)
    if artifact is None:
        return 0
    blobs = [p.read_bytes() for p in sorted((MVTEC / "bottle/test").rglob("*.png"))]
    threads = set_threads()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "model_server.server.serve", "--artifact", str(artifact),
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         *(["--model-lanes", str(args.model_lanes)] if args.model_lanes else [])],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("model server did not start")
            time.sleep(0.2)
        load(port, blobs, 1, 20)  # warm-up
        predictor = Predictor(str(artifact))
        in_process(predictor, blobs[:5])
        local, served = overhead_pairs(port, predictor, blobs, args.rounds)
        with beside() as probe:
            results = interleaved(port, blobs, (1, 4, 16), args.rounds, probe)
    finally:
        server.terminate()
        server.wait(timeout=30)
    for r in results:
        for raw in ("latencies", "batch_sizes", "wall_s"):
            r.pop(raw)
        r["throughput_at_reference"] = round(rate_at_reference(r["throughput_img_s"], probe.ms), 2)
    local_p50, served_p50 = statistics.median(local), statistics.median(served)
    c1, c16 = results[0], results[-1]
    summary = {
        "cpu_threads": threads,
        "images": len(blobs),
        "in_process_p50_ms": round(local_p50, 2),
        "in_process_p95_ms": round(percentile(local, 0.95), 2),
        "server": results,
        "server_p50_ms_interleaved": round(served_p50, 2),
        "overhead_ms_at_c1": round(served_p50 - local_p50, 2),
        "overhead_fraction_at_c1": round((served_p50 - local_p50) / local_p50, 4),
        "throughput_ratio_c16_c1": round(c16["throughput_img_s"] / c1["throughput_img_s"], 3),
        "probe": probe.to_dict(),
    }
    return conclude(NAME, summary, missed_targets(summary), tables(summary), args.out)


if __name__ == "__main__":
    sys.exit(main())
