"""`make bench-faults`: 2,000 images through the local stack while it is hurt, and what became of each.

Faults, in order, at fractions of the images uploaded (uploads paced to --in-flight images in the queue), each
once the one before is over and the images it found in flight have their results: kill -9 of the model server
(the stack replaces it); kill -9 of a worker environment in the middle of a batch; a graceful stop and start
of the whole stack with images queued; a kill -9 of the whole stack (its process group) and a start; the
endpoint slow past the worker's Timeout (20 s); throttled (20 s); answering 503 (30 s); answering 503 for
longer than the worker's backoff schedule. The endpoint faults come last: a restart re-announces every image
still without a result and starts with empty queues (the local SQS keeps no messages today), so the DLQ the
long outage fills is left to redrive. Every S3 event is delivered twice (the benchmark sends each object's
event body to the queue once more).

Recovery, per fault (fault_recovery.py): the images in flight, the time from the fault to the first inspection
after it, and to the last in-flight image's result; targets: within 30 s of the replacement's /ping after the
model server kill, and of the end of the throttling and of the 30 s of 503; the long outage's images in the
DLQ (then inspected after the redrive).

Counted: results INSPECTED / REJECTED (result items), endpoint invocations per image (the model server's admin
counts, by SHA-256 of the bytes: every image here is distinct), result writes per image (the worker's
"result written" log lines), deliveries the idempotency record absorbed (its "already inspected" lines and
in-progress refusals), the dead-letter queue, never uploaded, lost. Then `ivadas redrive` and the same again.

Targets (exit 1 on a miss): the recovery targets above; lost 0; no duplicate inspection that a fault does not
explain (each extra invocation or write must follow a killed, timed-out or failed attempt of the image, or
straddle a stack stop); every DLQ entry explained (a logged failure) and inspected after the redrive.
A small synthetic model (tests/conftest.py's parts, 64 px) keeps the model server fast. Records
docs/benchmarks/bench_faults.json (the first DLQ_SHOWN dead-letter rows of the run with the count).
Run: .venv/bin/python tests/benchmarks/bench_faults.py [--images 2000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from urllib.parse import quote_plus

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from infra.local.state import read_state  # noqa: E402
from infra.local.worker_logs import RETRYING, worker_log_records  # noqa: E402
from infra.uploads import Inbox  # noqa: E402
from ivadas_functions import retries  # noqa: E402
from tests.benchmarks import fault_recovery  # noqa: E402
from tests.benchmarks.fault_recovery import Fault  # noqa: E402
from tests.benchmarks.tables import Table  # noqa: E402
from tests.benchmarks.verdict import conclude  # noqa: E402
from tests.conftest import _part, _scratch, _train, make_mvtec  # noqa: E402

NAME = "bench_faults"
DLQ_SHOWN = 20
CLASS, LINE = "widget", "faults"
TIMEOUT_S, VISIBILITY_S, MAX_RECEIVE = 10, 15, 6
_NO_JITTER = random.Random()
_NO_JITTER.uniform = lambda low, high: high  # every wait its whole step
PARAMETERS = [f"WorkerTimeoutSeconds={TIMEOUT_S}", f"QueueVisibilityTimeoutSeconds={VISIBILITY_S}",
              f"MaxReceiveCount={MAX_RECEIVE}"]  # fmt: skip
FAULT_S, BURST_S = 20, 30
#: the longest a message can keep failing before it moves to the DLQ: each delivery's retries within the
#: invocation and its wait after; the long outage lasts longer
SCHEDULE_S = sum(TIMEOUT_S - retries.RESERVE_S + retries.redelivery_delay(k + 1, _NO_JITTER)
                 for k in range(MAX_RECEIVE))  # fmt: skip
OUTAGE_S = SCHEDULE_S + 30
RECOVERY_S = 30.0  # the target: in-flight images inspected within this long of a fault's end
HOLD_S = 120.0  # the most the next fault waits for the last one's in-flight images
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "infra.cli", *args], env=ENV, capture_output=True, text=True)
    if check and done.returncode:
        raise RuntimeError(f"ivadas {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done


def artifact(out: Path) -> Path:
    """The synthetic class's PatchCore model (trained once, seconds)."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as data:
            _train(make_mvtec(Path(data), CLASS), out, "patchcore")
    return out


def make_images(folder: Path, n: int) -> list[Path]:
    """n distinct images of the synthetic part (one in ten scratched); one in a hundred is not an image."""
    rng = np.random.default_rng(14)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        path = folder / f"{i:05d}.png"
        if i % 100 == 99:
            path.write_bytes(b"not an image %d" % i)
        else:
            img = _part(rng)
            Image.fromarray(_scratch(img, rng)[0] if i % 10 == 9 else img).save(path)
        files.append(path)
    return files


@dataclass
class Run:
    """The stack under test and what the benchmark did to it."""

    state_dir: Path
    artifact: Path
    concurrency: int
    events: list[tuple[float, str]] = field(default_factory=list)  # (unix time, what)

    @property
    def state(self) -> dict:
        return read_state(self.state_dir)

    def up(self, fresh: bool = False) -> None:
        params = [a for p in PARAMETERS for a in ("--parameter", p)]
        args = ["local", "up", "--state-dir", str(self.state_dir), "--patchcore", str(self.artifact),
                "--worker-concurrency", str(self.concurrency), *params]  # fmt: skip
        cli(*args, *(["--fresh"] if fresh else []))

    def down(self) -> None:
        cli("local", "down", "--state-dir", str(self.state_dir))

    def note(self, what: str) -> None:
        self.events.append((time.time(), what))
        print(f"  [{time.strftime('%H:%M:%S')}] {what}", flush=True)

    def admin(self, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        url = f"http://127.0.0.1:{self.state['model_port']}{path}"
        req = urllib.request.Request(url, data=data, method="PUT" if data else "GET")
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - the local model server
            return json.loads(resp.read())


class Driver:
    """Uploads steadily, sends every event a second time, collects results, fires the faults on schedule."""

    def __init__(self, run: Run, files: list[Path], in_flight: int) -> None:
        self.run, self.files, self.in_flight = run, files, in_flight
        self.rows: dict[int, dict] = {}
        self.pending: dict[str, dict] = {}
        self.not_uploaded: list[int] = []
        self.next_file = 0
        self.connect()

    def connect(self) -> None:
        import boto3

        state = self.run.state
        self.inbox = Inbox(state, CLASS, LINE, None)
        self.sqs = boto3.client("sqs")
        self.queue = state["resources"]["InspectionQueue"]

    def put(self, i: int) -> dict:
        row = self.inbox.put(self.files[i])
        if row["id"]:  # deliver it twice: the S3 event body again, as S3's at-least-once delivery may
            obj = {"key": quote_plus(row["key"], safe="/"), "size": self.files[i].stat().st_size}
            s3 = {"bucket": {"name": self.inbox.bucket}, "object": obj}
            body = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": s3}]}
            try:
                self.sqs.send_message(QueueUrl=self.queue, MessageBody=json.dumps(body))
            except Exception as exc:  # noqa: BLE001 - the stack went down meanwhile: one delivery only
                row["second_delivery_failed"] = str(exc)
        return row

    def depth(self) -> int:
        """Messages in the inspection queue, visible or in flight."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def step(self, pool: ThreadPoolExecutor, uploading: dict) -> None:
        for future in [f for f in uploading if f.done()]:
            i = uploading.pop(future)
            row = self.rows[i] = future.result()
            if row["id"]:
                self.pending[row["id"]] = row
            else:
                self.not_uploaded.append(i)
        try:  # paced by what the queue holds (two messages an image), not by results: some go to the DLQ
            queued = self.depth() // 2
        except Exception:  # noqa: BLE001 - the stack restarting
            queued = self.in_flight
        while len(uploading) + queued < self.in_flight and self.next_file < len(self.files):
            uploading[pool.submit(self.put, self.next_file)] = self.next_file
            self.next_file += 1
        self.inbox.collect(self.pending)

    def drain(self, pool: ThreadPoolExecutor, uploading: dict) -> None:
        while uploading:
            for future in [f for f in uploading if f.done()]:
                i = uploading.pop(future)
                row = self.rows[i] = future.result()
                (self.pending.__setitem__(row["id"], row) if row["id"] else self.not_uploaded.append(i))
            time.sleep(0.1)


@dataclass
class Event:
    at: float  # fraction of the images uploaded
    what: str
    action: object  # () -> None
    #: how long the fault lasts once fired; None: until the model server's replacement answers /ping
    lasts_s: float | None = 0.0
    restarts: bool = False  # the stack goes down: uploads pause, clients reconnect after
    target_s: float | None = None  # its in-flight images' results within this long of its end
    dead_letters: bool = False  # outlasts the backoff schedule: its images end in the DLQ


def schedule(run: Run) -> list[Event]:
    def kill_model_server() -> None:
        os.kill(run.state["model_server_pid"], signal.SIGKILL)

    def kill_worker() -> None:
        os.kill(random.Random(14).choice(run.state["worker_pids"]), signal.SIGKILL)  # all are busy under load

    def fault(doc: dict, seconds: float = FAULT_S) -> object:
        return lambda: run.admin("/admin/faults", {**doc, "for_seconds": seconds})

    def graceful() -> None:
        run.down()
        run.up()

    def kill_stack() -> None:
        pid = run.state["pid"]
        os.killpg(pid, signal.SIGKILL)  # the supervisor and every child: moto, model server, workers
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.1)
        run.up()

    error = {"mode": "error", "status": 503}
    return [
        Event(0.08, "kill -9 the model server", kill_model_server, None, target_s=RECOVERY_S),
        Event(0.16, "kill -9 a worker environment mid-batch", kill_worker),
        Event(0.25, "graceful stop and start of the whole stack, images queued", graceful, restarts=True),
        Event(0.40, "kill -9 of the whole stack (its process group), then start", kill_stack, restarts=True),
        Event(0.52, f"endpoint slow (15 s, past the worker's {TIMEOUT_S} s timeout) for {FAULT_S} s",
              fault({"mode": "slow", "delay_seconds": 15}), FAULT_S),
        Event(0.62, f"endpoint throttled for {FAULT_S} s", fault({"mode": "throttle"}), FAULT_S,
              target_s=RECOVERY_S),
        Event(0.72, f"endpoint answering 503 for {BURST_S} s", fault(error, BURST_S), BURST_S,
              target_s=RECOVERY_S),
        Event(0.85, f"endpoint answering 503 for {OUTAGE_S} s, longer than the backoff schedule",
              fault(error, OUTAGE_S), OUTAGE_S, dead_letters=True),
    ]  # fmt: skip


def settled(driver: Driver, fault: Fault) -> bool:
    """The fault is over and every image it found in flight has its result (or it is a while since)."""
    if fault.over is None or time.time() < fault.over:
        return False
    waiting = any(r["t0"] < fault.over for r in driver.pending.values())
    return not waiting or time.time() > fault.over + HOLD_S


def fire(run: Run, driver: Driver, event: Event, pool: ThreadPoolExecutor, uploading: dict) -> Fault:
    if event.restarts:
        driver.drain(pool, uploading)
    fault = Fault(event.what, time.time(), target_s=event.target_s, dead_letters=event.dead_letters)
    run.note(event.what)
    event.action()
    if event.restarts:
        driver.connect()
        run.note("the stack is up again")
        fault.over = time.time()
    elif event.lasts_s is not None:
        fault.over = fault.started + event.lasts_s
    return fault


def drive(run: Run, driver: Driver, timeout: float) -> list[Fault]:
    """Upload everything, fire each event once the one before is over and its images have results, wait until
    the queue has nothing left to deliver. The faults, with when each was over."""
    events, faults = schedule(run), []
    quiet_since, replacements = None, run.state["model_server_replacements"]
    deadline = time.monotonic() + timeout
    uploading: dict = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        while time.monotonic() < deadline:
            if faults and faults[-1].over is None and run.state["model_server_replacements"] > replacements:
                faults[-1].over = time.time()  # the replacement answered /ping (state.json says so after)
                run.note("the model server's replacement answers /ping")
            ready = not faults or settled(driver, faults[-1])
            if events and ready and driver.next_file >= events[0].at * len(driver.files):
                replacements = run.state["model_server_replacements"]
                faults.append(fire(run, driver, events.pop(0), pool, uploading))
            driver.step(pool, uploading)
            if driver.next_file == len(driver.files) and not uploading and not events:
                if not driver.pending:
                    return faults
                # what is left is in the DLQ, or still to be delivered: stop once the queue stays empty
                if driver.depth() == 0:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > VISIBILITY_S:
                        return faults
                else:
                    quiet_since = None
            time.sleep(0.25)
    print(f"timed out after {timeout:.0f} s with {len(driver.pending)} images still waiting")
    return faults


def read_logs(logs: Path) -> dict:
    """What the worker logged: result writes, replays, failures per inspection id; killed batches."""
    writes, replays, in_progress = Counter(), Counter(), Counter()
    failures: dict[str, list[str]] = defaultdict(list)
    by_message: dict[str, set[str]] = defaultdict(set)
    killed_messages: set[str] = set()
    for doc in worker_log_records(logs):
        iid, message = doc.get("inspection_id"), doc.get("message")
        if iid and doc.get("message_id"):
            by_message[doc["message_id"]].add(iid)
        if message == "result written":
            writes[iid] += 1
        elif message == "already inspected: delivered again":
            replays[iid] += 1
        elif message == "inspection failed: the message returns to the queue":
            error = str(doc.get("error", ""))
            in_progress[iid] += "IdempotencyAlreadyInProgressError" in error
            failures[iid].append(error)
        elif message == RETRYING:  # a failed call tried again within the invocation
            failures[iid].append(str(doc.get("error", "")))
        elif message == "invocation failed":  # the platform's line for a killed or timed-out batch
            killed_messages.update(doc.get("message_ids") or [])
    killed = {iid for mid in killed_messages for iid in by_message.get(mid, ())}
    return {"writes": writes, "replays": replays, "in_progress": in_progress, "failures": failures,
            "killed": killed}  # fmt: skip


def invocation_times(journal: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = defaultdict(list)
    for line in journal.read_text().splitlines() if journal.exists() else []:
        parts = line.split(" ")
        if parts[0] == "invocation" and len(parts) == 3:
            times[parts[2]].append(float(parts[1]))
    return times


def why_again(
    iid: str,
    sha: str,
    logs: dict,
    times: dict,
    stops: list[tuple[float, float]],
    write: bool,
    worker_kills: tuple[float, ...] = (),
) -> str:
    """Why an image reached the endpoint (or, `write`, had its result written) more than once."""
    if iid in logs["killed"]:
        return "an attempt was killed (worker kill -9 or past its Timeout) after the endpoint had the image"
    if not write and any("unreachable" in e for e in logs["failures"].get(iid, [])):
        return "the model server died while answering it (the worker saw it unreachable)"
    seen = times.get(sha, [])
    # the killed batch's messages are known by id only; when a stack restart then drops the queue, the image
    # comes back under a new message, so the first reach is matched to the kill by time, as stops are
    if seen and any(kill - TIMEOUT_S <= min(seen) <= kill + 1.0 < max(seen) for kill in worker_kills):
        return "an attempt was killed (worker kill -9 mid-batch, the image announced again after a restart)"
    # first reached within a Timeout before the stack went down (or while it went), again once it restarted
    if seen and any(start - TIMEOUT_S <= min(seen) <= end and max(seen) > start for start, end in stops):
        return "in flight when the whole stack stopped"
    return "UNEXPLAINED"


def figures(driver: Driver, run: Run, dlq_rows: list[dict] | None) -> dict:
    """The printed figures from the result items, the model server's counts and the worker's logs."""
    logs = read_logs(run.state_dir / "logs")
    counts = run.admin("/admin/invocations")
    invocations = counts["invocations"]
    times = invocation_times(run.state_dir / "logs" / "invocations.log")
    starts = [t for t, what in run.events if "whole stack" in what]
    ends = [t for t, what in run.events if what == "the stack is up again"]
    stops = list(zip(starts, ends, strict=False))
    worker_kills = tuple(t for t, what in run.events if what.startswith("kill -9 a worker"))
    uploaded = [r for r in driver.rows.values() if r["id"]]
    done = [r for r in uploaded if r.get("item")]
    statuses = Counter(r["item"]["status"] for r in done)
    extra_inv, extra_writes = Counter(), Counter()
    for row in uploaded:
        sha = sha256(Path(row["file"]).read_bytes()).hexdigest()
        for extra, n, write in ((extra_inv, invocations.get(sha, 0), False),
                                (extra_writes, logs["writes"][row["id"]], True)):  # fmt: skip
            if n > 1:
                extra[why_again(row["id"], sha, logs, times, stops, write, worker_kills)] += n - 1
    ids = {r["id"] for r in uploaded}
    by_key = {r["key"]: r["id"] for r in uploaded}
    in_dlq = {by_key[k] for row in dlq_rows or [] for _, k, _ in row["objects"] if k in by_key}
    unexplained_dlq = [r for r in dlq_rows or [] if r["last_error"] == "no failure logged for it"]
    return {
        "images_in": len(driver.files),
        "uploaded": len(uploaded),
        "never_uploaded": len(driver.not_uploaded),
        "inspected": statuses.get("INSPECTED", 0),
        "rejected": statuses.get("REJECTED", 0),
        "endpoint_invocations": sum(
            invocations.get(sha256(Path(r["file"]).read_bytes()).hexdigest(), 0) for r in uploaded
        ),  # fmt: skip
        "refused_by_faults": counts["refused"],
        "extra_invocations": dict(extra_inv),
        "result_writes": sum(logs["writes"][i] for i in ids),
        # killed between the item's put and its log line: written, never counted
        "results_without_write_line": sum(1 for r in done if not logs["writes"][r["id"]]),
        "extra_writes": dict(extra_writes),
        "absorbed_replays": sum(logs["replays"][i] for i in ids),
        "absorbed_in_progress": sum(logs["in_progress"][i] for i in ids),
        "dlq_messages": len(dlq_rows or []),
        "dlq_images": len(in_dlq),
        "dlq_images_with_result": len(in_dlq & {r["id"] for r in done}),
        "dlq_unexplained": len(unexplained_dlq),
        "lost": len(ids - {r["id"] for r in done} - in_dlq),
    }


def _reasons(extra: dict) -> str:
    return "; ".join(f"{n}: {why}" for why, n in sorted(extra.items(), key=lambda kv: -kv[1])) or "none"


def recovery_figures(driver: Driver, run: Run, faults: list[Fault], dlq_rows: list[dict]) -> list[dict]:
    """Each fault's recovery, from the results collected so far (the long outage's are in the DLQ)."""
    times = invocation_times(run.state_dir / "logs" / "invocations.log")
    uploaded = [r for r in driver.rows.values() if r["id"]]
    digests = {r["id"]: sha256(Path(r["file"]).read_bytes()).hexdigest() for r in uploaded}
    by_key = {r["key"]: r["id"] for r in uploaded}
    in_dlq = {by_key[k] for row in dlq_rows for _, k, _ in row["objects"] if k in by_key}
    reached = lambda row: times.get(digests[row["id"]], [])  # noqa: E731
    return [fault_recovery.recovery(fault, uploaded, reached, in_dlq) for fault in faults]


def tables(result: dict) -> list[Table]:
    """The tables of a record (docs/benchmarks.md is rendered from them)."""
    b, a = result["before_redrive"], result["after_redrive"]

    def row(label: str, f) -> list:  # noqa: ANN001
        return [label, f(b), f(a)]

    rows = [
        row("images in / never uploaded", lambda f: f"{f['images_in']} / {f['never_uploaded']}"),
        row("INSPECTED / REJECTED", lambda f: f"{f['inspected']} / {f['rejected']}"),
        row(
            "endpoint invocations (beyond one per image)",
            lambda f: f"{f['endpoint_invocations']} ({sum(f['extra_invocations'].values())})",
        ),
        row(
            "result writes logged (beyond one per image)",
            lambda f: f"{f['result_writes']} ({sum(f['extra_writes'].values())})",
        ),
        row(
            "absorbed by idempotency: stored result returned / refused in progress",
            lambda f: f"{f['absorbed_replays']} / {f['absorbed_in_progress']}",
        ),
        row(
            "DLQ messages / images / without a logged reason",
            lambda f: f"{f['dlq_messages']} / {f['dlq_images']} / {f['dlq_unexplained']}",
        ),
        row("lost", lambda f: f["lost"]),
    ]
    recovery = Table(
        "Recovery per fault (in flight: uploaded before the fault was over, no result when it began)",
        [
            "fault",
            "in flight",
            "over after s",
            "first inspection after s",
            "last in-flight result s after it was over",
            "without a result (in the DLQ)",
            "target s",
        ],  # fmt: skip
        [
            [
                f["fault"],
                f["in_flight"],
                f["over_after_s"],
                f["first_inspection_s"],
                f["after_over_s"],
                f"{f['without_result']} ({f['in_dlq']})",
                f["target_s"],
            ]
            for f in result.get("recovery", [])
        ],  # fmt: skip
    )
    return [
        recovery,
        Table(
            f"{b['images_in']} images through the local stack under faults, then `ivadas redrive` "
            f"({result['wall_seconds_before_redrive']} s before the redrive)",
            ["", "before redrive", "after redrive"],
            rows,
            notes=[
                f"Extra invocations, why: {_reasons(b['extra_invocations'])}.",
                f"Extra result writes, why: {_reasons(b['extra_writes'])}; results whose write left no log "
                f"line "
                f"(a writer killed between its write and its log line): {b['results_without_write_line']}.",
                "Faults, in order: " + "; ".join(what for _, what in result["events"]) + ".",
            ],
        ),
    ]


def missed(before: dict, after: dict, redrive_left: int) -> list[str]:
    out = []
    for name, f in (("before redrive", before), ("after redrive", after)):
        if f["lost"]:
            out.append(f"{f['lost']} images lost {name} (target 0)")
        for kind in ("extra_invocations", "extra_writes"):
            if f[kind].get("UNEXPLAINED"):
                out.append(f"{f[kind]['UNEXPLAINED']} unexplained duplicate {kind[6:]} {name} (target 0)")
    if before["dlq_unexplained"]:
        out.append(f"{before['dlq_unexplained']} DLQ entries without a logged reason (target 0)")
    if redrive_left:
        out.append(f"{redrive_left} redriven images still without a result (target 0)")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4, help="worker concurrency (Lambda instances)")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--artifact", default=str(ROOT / "reports/bench_faults/widget.tar.gz"))
    parser.add_argument("--out", help="the record (default: docs/benchmarks/bench_faults.json)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ivadas-faults-"))
    files = make_images(work / "images", args.images)
    run = Run(work / "state", artifact(Path(args.artifact)), args.concurrency)
    t0 = time.monotonic()
    run.up(fresh=True)
    try:
        driver = Driver(run, files, args.in_flight)
        print(f"{len(files)} images, worker Timeout {TIMEOUT_S} s, visibility {VISIBILITY_S} s, "
              f"MaxReceiveCount {MAX_RECEIVE}, {args.concurrency} workers; events:", flush=True)  # fmt: skip
        faults = drive(run, driver, args.timeout)
        redrive = cli("redrive", "--state-dir", str(run.state_dir), "--json")
        dlq_rows = json.loads(redrive.stdout)["moved"]
        before = figures(driver, run, dlq_rows)
        recoveries = recovery_figures(driver, run, faults, dlq_rows)
        wall = time.monotonic() - t0
        run.note(f"ivadas redrive moved {len(dlq_rows)} messages back to the queue")
        deadline = time.monotonic() + VISIBILITY_S * MAX_RECEIVE + 120
        while driver.pending and time.monotonic() < deadline:
            driver.inbox.collect(driver.pending)
            time.sleep(0.5)
        after = figures(driver, run, [])
    finally:
        run.down()
    result = {"recovery": recoveries, "before_redrive": before, "after_redrive": after, "events": run.events,
              "dlq_rows": len(dlq_rows), "dlq": dlq_rows[:DLQ_SHOWN],
              "wall_seconds_before_redrive": round(wall, 1)}  # fmt: skip
    misses = fault_recovery.missed(recoveries) + missed(before, after, len(driver.pending))
    return conclude(NAME, result, misses, tables(result), args.out)


if __name__ == "__main__":
    sys.exit(main())
