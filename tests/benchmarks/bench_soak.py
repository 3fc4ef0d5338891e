"""`make bench-soak`: 10,000 images through the local stack at a steady rate, watching that nothing grows.

Every few seconds it samples the resident memory (RSS) and CPU time (/proc) of the model server, of each
worker execution environment (the Lambda processes), of the supervisor (poller, API shim) and of moto. Per
minute it prints the images done, RSS per process and CPU milliseconds per image per process.
Targets (exit 1 on a miss): lost 0; the model server's and each worker's RSS grows under 5 % after the first
minute (its end is the reference: warm-up, and the allocator keeping its peak, are inside it); their CPU ms
per image stays within 10 % of the first minute's. Moto's and the supervisor's figures are printed beside
them: moto holds every stored object and item in memory, as S3 and DynamoDB hold them on disk, so its RSS
grows with the data by design.

The model is the synthetic widget class of tests/conftest.py trained at 64 px (a small fast model: the stack,
not the model, is what soaks); images are its test parts with distinct trailing bytes (distinct objects).
The images are put one by one on a fixed schedule (--rate per second), as cameras do, not as fast as
possible. Records docs/benchmarks/bench_soak.json.
Run: .venv/bin/python tests/benchmarks/bench_soak.py [--images 10000] [--rate 6] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from infra.local.state import read_state, use_state  # noqa: E402
from ivadas_contract.inspection import inspection_id  # noqa: E402
from tests.benchmarks.probe import cpu_probe_ms  # noqa: E402
from tests.benchmarks.tables import Table  # noqa: E402
from tests.benchmarks.verdict import conclude  # noqa: E402
from tests.conftest import make_mvtec  # noqa: E402

NAME = "bench_soak"
#: A fixed piece of CPU work timed beside every sample (probe.cpu_probe_ms): this VM's speed drifts by up to
#: 2x over minutes, and with it the CPU time every process spends on the same work (a first 27-minute run saw
#: the model server, moto, the supervisor and the workers rise and fall by 10-50 % together, minute by
#: minute).
#: Per-image CPU is compared in units of this probe's CPU time, so what is left is the processes' own growth.
PROBE_BYTES = 8 * 1024 * 1024
RSS_GROWTH_MAX = 0.05
CPU_DRIFT_MAX = 0.10
SAMPLE_S = 5.0
TARGETED = ("model server", "workers")  # the targets; moto and the supervisor are reported


def proc_sample(pid: int) -> tuple[float, float] | None:
    """(RSS in MB, own user + system CPU seconds) of a running process, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss_kb = next(
            int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )  # fmt: skip
    except (OSError, StopIteration, IndexError):
        return None
    return rss_kb / 1024, (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def stack_pids(state_dir: Path) -> dict[str, int]:
    """The processes to watch, by name (the workers' pids as the supervisor last published them)."""
    state = read_state(state_dir)
    pids = {"model server": state["model_server_pid"], "supervisor": state["pid"], "moto": state["moto_pid"]}
    pids.update({f"worker-{i}": pid for i, pid in enumerate(state.get("worker_pids", []))})
    return pids


def train_artifact(work: Path) -> Path:
    from infra.cli import main

    root = make_mvtec(work / "data")
    out = work / "patchcore.tar.gz"
    code = main(["train", "--data-root", str(root), "--classes", "widget", "--model", "patchcore",
                 "--input-size", "64", "--coreset-ratio", "0.25", "--quiet",
                 "--out", str(out)])  # fmt: skip
    if code:
        raise SystemExit("training the soak's model failed")
    return out


class Soak:
    """The camera (paced puts), the result collector and the sampler, each a thread."""

    def __init__(self, state_dir: Path, images: list[bytes], count: int, rate: float) -> None:
        import boto3

        self.state_dir, self.images, self.count, self.rate = state_dir, images, count, rate
        state = read_state(state_dir)
        use_state(state)
        self.s3, self.ddb = boto3.client("s3"), boto3.client("dynamodb")
        self.inbox, self.table = state["resources"]["InboxBucket"], state["resources"]["ResultsTable"]
        self.pending: dict[str, float] = {}  # id -> put time
        self.done: list[tuple[float, str]] = []  # (time, status)
        self.lock = threading.Lock()
        self.uploaded = self.upload_errors = 0
        self.max_lag_s = 0.0
        self.samples: list[tuple[float, dict[str, tuple[float, float]]]] = []
        self.probes: list[tuple[float, float]] = []  # (time, probe CPU ms)
        self.pids_seen: dict[str, set[int]] = {}
        self.finished_uploading = threading.Event()
        self.stop = threading.Event()

    def camera(self, prefix: str, count: int) -> None:
        start = time.monotonic()
        for n in range(count):
            lag = time.monotonic() - (start + n / self.rate)
            if lag < 0:
                time.sleep(-lag)
            self.max_lag_s = max(self.max_lag_s, lag)
            key = f"soak/widget/{prefix}-{n:05d}.png"
            body = self.images[n % len(self.images)] + n.to_bytes(4, "big")
            try:
                etag = self.s3.put_object(Bucket=self.inbox, Key=key, Body=body)["ETag"].strip('"')
            except Exception:  # noqa: BLE001 - counted: an image never uploaded is reported, not lost
                self.upload_errors += 1
                continue
            with self.lock:
                self.pending[inspection_id(self.inbox, key, etag)] = time.monotonic()
                self.uploaded += 1

    def collect(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                ids = list(self.pending)[:500]
            for start in range(0, len(ids), 100):
                keys = [{"inspection_id": {"S": i}} for i in ids[start : start + 100]]
                got = self.ddb.batch_get_item(RequestItems={self.table: {
                    "Keys": keys, "ProjectionExpression": "inspection_id, #s",
                    "ExpressionAttributeNames": {"#s": "status"}}})  # fmt: skip
                now = time.monotonic()
                with self.lock:
                    for item in got["Responses"].get(self.table, []):
                        if self.pending.pop(item["inspection_id"]["S"], None) is not None:
                            self.done.append((now, item["status"]["S"]))
            self.stop.wait(1.0)

    def sample(self) -> None:
        buffer = bytes(range(256)) * (PROBE_BYTES // 256)
        while not self.stop.is_set():
            self.probes.append((time.monotonic(), cpu_probe_ms(buffer)))
            pids = stack_pids(self.state_dir)
            taken = {name: s for name, pid in pids.items() if (s := proc_sample(pid)) is not None}
            for name, pid in pids.items():
                self.pids_seen.setdefault(name, set()).add(pid)
            self.samples.append((time.monotonic(), taken))
            self.stop.wait(SAMPLE_S)


def minutes(soak: Soak, t0: float, t_end: float) -> list[dict]:
    """Per whole minute from t0: images done, RSS per process at its end, CPU ms per image per process, and
    the probe's median CPU ms."""
    rows = []
    edges = [t0 + 60 * m for m in range(int((t_end - t0) // 60) + 1)]
    for a, b in zip(edges, edges[1:], strict=False):
        first = max((s for s in soak.samples if s[0] <= a), key=lambda s: s[0], default=soak.samples[0])
        last = max((s for s in soak.samples if s[0] <= b), key=lambda s: s[0])
        done = sum(1 for t, _ in soak.done if a <= t < b)
        names = sorted(set(first[1]) & set(last[1]))
        cpu = {n: (last[1][n][1] - first[1][n][1]) * 1000 / max(1, done) for n in names}
        workers = [n for n in names if n.startswith("worker-")]
        cpu["workers"] = sum(cpu[n] for n in workers)
        rss = {n: last[1][n][0] for n in names}
        probe = statistics.median([ms for t, ms in soak.probes if a <= t < b] or [float("nan")])
        rows.append({"minute": len(rows) + 1, "images": done, "rss_mb": rss, "cpu_ms_per_image": cpu,
                     "probe_ms": round(probe, 3)})  # fmt: skip
    return rows


def steady_cpu(rows: list[dict], minute: dict, name: str) -> float:
    """`name`'s CPU ms per image in `minute`, in minute 1's probe units: what it would have cost on the CPU
    as fast as it was in minute 1."""
    return minute["cpu_ms_per_image"][name] * rows[0]["probe_ms"] / minute["probe_ms"]


def missed_targets(rows: list[dict], lost: int, restarted: list[str]) -> list[str]:
    missed = [f"{lost} images lost (target 0)"] if lost else []
    missed += [f"{name} was restarted during the soak (pids differ)" for name in restarted]
    if len(rows) < 2:
        return [*missed, "under two whole minutes measured: nothing to compare"]
    first, later = rows[0], rows[1:]
    for name in first["rss_mb"]:
        if name == "moto" or name == "supervisor":
            continue
        peak = max(r["rss_mb"].get(name, 0.0) for r in later)
        if peak > first["rss_mb"][name] * (1 + RSS_GROWTH_MAX):
            missed.append(f"{name} RSS grew {peak / first['rss_mb'][name] - 1:+.1%} (target < 5 %)")
    for name in TARGETED:
        ref = steady_cpu(rows, first, name)
        for r in later:
            drift = steady_cpu(rows, r, name) / ref - 1
            if abs(drift) > CPU_DRIFT_MAX:
                missed.append(
                    f"{name} CPU ms/image in minute {r['minute']} {drift:+.1%} of minute 1's (probe units)"
                )
    return missed


def tables(result: dict) -> list[Table]:
    """The tables of a record (docs/benchmarks.md is rendered from them)."""
    rows = result["minutes"]
    if not rows:
        return []
    names = sorted({n for r in rows for n in r["rss_mb"]}, key=lambda n: (n.startswith("worker"), n))
    cpu_names = [
        n for n in ("model server", "workers", "supervisor", "moto") if n in rows[0]["cpu_ms_per_image"]
    ]
    first, last = rows[0], rows[-1]
    off = {
        n: sum(abs(steady_cpu(rows, r, n) / steady_cpu(rows, first, n) - 1) > CPU_DRIFT_MAX for r in rows[1:])
        for n in TARGETED
    }
    summary = [
        [
            "images scheduled / lost",
            f"{result['images']} / {result['lost']} (upload errors {result['upload_errors']})",
            "0 lost",
        ],
        *[
            [
                f"{n} RSS, minute 1 -> last",
                f"{first['rss_mb'][n]:.1f} -> {last['rss_mb'][n]:.1f} MB "
                f"({last['rss_mb'][n] / first['rss_mb'][n] - 1:+.1%})",
                "< +5 %" if n not in ("moto", "supervisor") else "",
            ]
            for n in names
            if n in last["rss_mb"]
        ],
        *[
            [
                f"{n}: minutes whose CPU per image is off by more than {CPU_DRIFT_MAX:.0%} (probe units)",
                off[n],
                "0",
            ]
            for n in TARGETED
        ],
    ]
    per_minute = [
        [
            r["minute"],
            r["images"],
            r["probe_ms"],
            *(f"{r['cpu_ms_per_image'][n]:.2f} ({steady_cpu(rows, r, n):.2f})" for n in cpu_names),
        ]
        for r in rows
    ]
    return [
        Table(
            f"{result['images']} images at {result['rate']}/s through the local stack, "
            f"{result['concurrency']} "
            "workers",
            ["figure", "measured", "target"],
            summary,
        ),
        Table(
            "CPU ms per image per minute, as measured (in minute 1's probe units)",
            ["minute", "images", "probe CPU ms", *cpu_names],
            per_minute,
        ),
    ]


def run(args: argparse.Namespace, work: Path) -> int:
    artifact = train_artifact(work)
    blobs = [p.read_bytes() for p in sorted((work / "data/widget/test").rglob("*.png"))]
    state_dir = work / "state"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    up = subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.cli",
            "local",
            "up",
            "--state-dir",
            str(state_dir),
            "--fresh",
            "--patchcore",
            str(artifact),
            "--worker-concurrency",
            str(args.concurrency),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if up.returncode:
        print(up.stdout, up.stderr, (state_dir / "supervisor.log").read_text())
        return 1
    soak = Soak(state_dir, blobs, args.images, args.rate)
    threads = [threading.Thread(target=f, daemon=True) for f in (soak.collect, soak.sample)]
    for t in threads:
        t.start()
    try:
        warm = int(args.rate * args.warmup_s)  # cold starts and first requests, before the clock
        soak.camera("warmup", warm)
        deadline = time.monotonic() + args.drain_s
        while soak.pending and time.monotonic() < deadline:
            time.sleep(0.5)
        if soak.pending:
            print(f"the warm-up's {len(soak.pending)} images got no result in {args.drain_s:.0f} s")
            return 1
        soak.done.clear()
        soak.samples.clear()
        soak.pids_seen.clear()
        time.sleep(SAMPLE_S + 0.5)  # a first sample at the start of minute 1
        t0 = soak.samples[0][0]
        started = time.time()
        soak.camera("soak", args.images)
        t_end = time.monotonic()
        backlog = len(soak.pending)  # uploaded, no result yet, when the last image went in
        deadline = t_end + args.drain_s
        while soak.pending and time.monotonic() < deadline:
            time.sleep(1.0)
        t_drained = time.monotonic()
        time.sleep(1.5)
        soak.stop.set()
        for t in threads:
            t.join(timeout=10)
    finally:
        subprocess.run(
            [sys.executable, "-m", "infra.cli", "local", "down", "--state-dir", str(state_dir)], env=env
        )
    rows = minutes(soak, t0, t_end)
    lost = len(soak.pending)
    restarted = [n for n, pids in soak.pids_seen.items() if len(pids) > 1]
    statuses = [s for _, s in soak.done]
    print(
        f"soak: {args.images} images at {args.rate}/s ({args.concurrency} workers), started "
        f"{time.strftime('%H:%M:%S', time.localtime(started))}, uploads took {t_end - t0:.0f} s "
        f"(max lag behind schedule {soak.max_lag_s:.1f} s); {backlog} without a result at the last "
        f"upload, drained {t_drained - t_end:.0f} s later"
    )
    print(
        f"uploaded {soak.uploaded} (upload errors {soak.upload_errors}), INSPECTED "
        f"{statuses.count('INSPECTED')}, REJECTED {statuses.count('REJECTED')}, lost {lost}"
    )
    missed = missed_targets(rows, lost + soak.upload_errors, restarted)
    result = {
        "images": args.images,
        "rate": args.rate,
        "concurrency": args.concurrency,
        "lost": lost,
        "upload_errors": soak.upload_errors,
        "max_lag_s": round(soak.max_lag_s, 1),
        "minutes": rows,
    }
    return conclude(NAME, result, missed, tables(result), args.out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=6.0, help="images per second, steady")
    parser.add_argument("--concurrency", type=int, default=2, help="worker concurrency (Lambda instances)")
    parser.add_argument("--warmup-s", type=float, default=20.0, help="seconds of images before the clock")
    parser.add_argument("--drain-s", type=float, default=300.0, help="wait for the last results")
    parser.add_argument("--out", help="the record (default: docs/benchmarks/bench_soak.json)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ivadas-soak-"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
