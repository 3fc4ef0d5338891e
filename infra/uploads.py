"""Images into the running local stack's inbox, and their results back: the uploads (at a rate, never held
up by the results), the results read by the inspection id the worker derives from bucket, key and ETag, which
images the worker is retrying (its logs), a progress line, and the counts that tell an image still in flight
from one in the dead-letter queue and one lost. `ivadas inspect` and the pipeline benchmarks use it.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from infra.local.state import use_state
from infra.local.worker_logs import FAILED, RETRYING, WorkerLogFollower
from ivadas_contract.inspection import inbox_key, inspection_id
from ivadas_contract.results_table import PARTITION_KEY, from_dynamo

#: BatchGetItem takes 100 keys at most.
_BATCH_GET = 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Inbox:
    """Uploads into the running stack's inbox and reads result items back, by the id the worker derives."""

    def __init__(self, state: dict, class_name: str, line: str, base: Path | None) -> None:
        import boto3
        from boto3.dynamodb.types import TypeDeserializer

        use_state(state)
        self.s3, self.ddb = boto3.client("s3"), boto3.client("dynamodb")
        self.bucket = state["resources"]["InboxBucket"]
        self.table = state["resources"]["ResultsTable"]
        self.class_name, self.line, self.base = class_name, line, base
        self.deserializer = TypeDeserializer()

    def put(self, path: Path) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        name = str(path.relative_to(self.base)) if self.base else path.name
        key = inbox_key(self.line, self.class_name, name.replace(os.sep, "_"))  # test/a/000.png stays unique
        t0 = time.time()
        try:
            etag = self.s3.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes())["ETag"].strip('"')
        except (BotoCoreError, ClientError, OSError) as exc:  # stack gone, file unreadable: report, go on
            return _not_uploaded(path, f"upload failed: {exc}")
        return {"file": str(path), "key": key, "id": inspection_id(self.bucket, key, etag), "t0": t0}

    def collect(self, pending: dict[str, dict]) -> None:
        """Move every pending row whose result item exists out of `pending`, with its item and latency."""
        from botocore.exceptions import BotoCoreError, ClientError

        waiting = list(pending)
        for start in range(0, len(waiting), _BATCH_GET):
            keys = [{PARTITION_KEY: {"S": iid}} for iid in waiting[start : start + _BATCH_GET]]
            try:
                resp = self.ddb.batch_get_item(
                    RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}}
                )
            except (BotoCoreError, ClientError):  # the stack restarting: ask again next round
                continue
            now = time.time()
            for raw in resp["Responses"].get(self.table, []):
                item = {k: self.deserializer.deserialize(v) for k, v in raw.items()}
                row = pending.pop(item[PARTITION_KEY])
                row["item"] = from_dynamo(item)
                row["latency_ms"] = (now - row["t0"]) * 1000.0


def queue_attributes(state: dict) -> dict[str, str]:
    """The inspection queue's depth and redrive policy (empty when the stack does not answer)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    use_state(state)
    try:
        return boto3.client("sqs").get_queue_attributes(
            QueueUrl=state["resources"]["InspectionQueue"], AttributeNames=["All"]
        )["Attributes"]
    except (BotoCoreError, ClientError, KeyError):
        return {}


def queued_messages(attributes: dict[str, str]) -> int:
    """Messages the queue still holds: waiting, being handled or waiting for their retry."""
    names = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed")  # fmt: skip
    return sum(int(attributes.get(name, 0)) for name in names)


class _Retries:
    """Which images the worker is retrying, and which have failed their last delivery (so SQS moves them to
    the dead-letter queue), from the worker logs the local stack writes as it goes."""

    def __init__(self, logs: Path | None, max_receive: int | None) -> None:
        self.follower = WorkerLogFollower(logs) if logs is not None and logs.is_dir() else None
        self.max_receive = max_receive
        self.retrying: set[str] = set()
        self.dead: set[str] = set()

    def read(self) -> None:
        for doc in self.follower.new_records() if self.follower else ():
            iid, message = doc.get("inspection_id"), doc.get("message")
            if not iid or message not in (RETRYING, FAILED[0]):
                continue
            self.retrying.add(iid)
            last = message == FAILED[0] and int(doc.get("delivery") or 0) >= (self.max_receive or sys.maxsize)
            if last:
                self.dead.add(iid)


class _Progress:
    """One line on stderr, redrawn as results come in (tqdm): results of all images, with the uploads, the
    images still waiting and how many of them the worker is retrying."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            tty = sys.stderr.isatty()
            self.bar = tqdm(total=total, desc="results", unit="img", file=sys.stderr, dynamic_ncols=tty,
                            mininterval=0.5 if tty else 5.0)  # fmt: skip

    def show(self, rows: list[dict | None], uploaded: int, pending: dict, retries: _Retries) -> None:
        if self.bar is None:
            return
        done = sum(1 for r in rows if r is not None and r.get("item"))
        rejected = sum(1 for r in rows if r is not None and (r.get("item") or {}).get("status") == "REJECTED")
        retrying = len(retries.retrying & set(pending))
        self.bar.set_postfix_str(f"uploaded {uploaded}/{len(rows)}, pending {len(pending)}, retrying "
                                 f"{retrying}, rejected {rejected}", refresh=False)  # fmt: skip
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Uploads:
    """The uploads of one run: which are due (by the rate, or by the images still waiting), which are under
    way, and the rows of those done."""

    def __init__(self, inbox: Inbox, files: list[Path], rate: float | None, in_flight: int | None) -> None:
        self.inbox, self.files, self.rate, self.in_flight = inbox, files, rate, in_flight
        self.rows: list[dict | None] = [None] * len(files)
        self.pending: dict[str, dict] = {}  # uploaded, no result yet
        self.running: dict[Future, int] = {}
        self.submitted, self.started = 0, time.monotonic()

    @property
    def finished(self) -> bool:
        return self.submitted == len(self.files) and not self.running

    @property
    def uploaded(self) -> int:
        return sum(1 for row in self.rows if row is not None and row["key"] is not None)

    def _due(self) -> bool:
        if self.submitted >= len(self.files):
            return False
        if self.rate is not None and self.submitted >= (time.monotonic() - self.started) * self.rate + 1:
            return False
        return self.in_flight is None or len(self.running) + len(self.pending) < max(1, self.in_flight)

    def step(self, pool: ThreadPoolExecutor) -> None:
        """Take in the uploads that ended, start those now due."""
        for future in [f for f in self.running if f.done()]:
            row = self.rows[self.running.pop(future)] = future.result()
            if row["id"]:
                self.pending[row["id"]] = row
        while self._due():
            self.running[pool.submit(self.inbox.put, self.files[self.submitted])] = self.submitted
            self.submitted += 1


def upload_and_wait(
    files: list[Path],
    class_name: str,
    line: str,
    timeout: float,
    state: dict,
    threads: int = 8,
    base: Path | None = None,
    rate: float | None = None,
    in_flight: int | None = None,
    logs: Path | None = None,
    progress: bool = False,
) -> list[dict]:
    """Upload every file into the inbox, then wait up to `timeout` s for the results; one row per file in
    input order. Uploads never wait for results: at most `rate` a second (None: as fast as `threads` go).

    `in_flight` (for benchmarks) instead keeps at most that many uploaded images without a result, so the
    queue stays short and latency is the pipeline's own rather than time spent queueing behind the rest.
    `logs` (the local stack's) tells which images the worker is retrying; `progress` draws them on stderr.
    """
    uploads = _Uploads(Inbox(state, class_name, line, base), files, rate, in_flight)
    max_receive = json.loads(queue_attributes(state).get("RedrivePolicy", "{}")).get("maxReceiveCount")
    retries = _Retries(logs, int(max_receive) if max_receive else None)
    bar = _Progress(len(files), progress)
    deadline = None
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            while True:
                uploads.step(pool)
                if deadline is None and uploads.finished:
                    deadline = time.monotonic() + timeout  # the timeout counts from the last upload
                uploads.inbox.collect(uploads.pending)
                retries.read()
                bar.show(uploads.rows, uploads.uploaded, uploads.pending, retries)
                if deadline is not None and (not uploads.pending or time.monotonic() >= deadline):
                    break
                # light polling (moto shares the cores with the pipeline): about four reads a second
                time.sleep(0.25 * max(1, -(-len(uploads.pending) // _BATCH_GET)))
    finally:
        bar.close()
    for row in uploads.rows:
        if row is not None and row["id"] in retries.dead and not row.get("item"):
            row["dead_lettered"] = True
    return [_finished(row, path) for row, path in zip(uploads.rows, files, strict=True)]


def _finished(row: dict | None, path: Path) -> dict:
    if row is None:
        return _not_uploaded(path, "not uploaded")
    row.setdefault("item", None)
    return row


def _not_uploaded(path: Path, reason: str) -> dict:
    return {"file": str(path), "key": None, "id": None, "t0": None, "item": None, "error": reason}


def summarise(rows: list[dict], still_queued: int = 0) -> dict:
    """Counts and latency. An uploaded image without a result is `dead_lettered` when the worker failed its
    last delivery, `in_flight` while the queue still holds a message for it (`still_queued` messages left),
    and `lost` beyond that: no result, and nothing left that could bring one."""
    done = [r for r in rows if r["item"]]
    inspected = [r for r in done if r["item"]["status"] == "INSPECTED"]
    latencies = [r["latency_ms"] for r in done]
    uploaded = sum(1 for r in rows if r["key"] is not None)
    dead = sum(1 for r in rows if r.get("dead_lettered"))
    waiting = uploaded - len(done) - dead
    return {
        "uploaded": uploaded,
        "not_uploaded": len(rows) - uploaded,
        "inspected": len(inspected),
        "anomalous": sum(1 for r in inspected if r["item"].get("is_anomaly")),
        "rejected": sum(1 for r in done if r["item"]["status"] == "REJECTED"),
        "in_flight": min(waiting, still_queued),
        "dead_lettered": dead,
        "lost": max(0, waiting - still_queued),
        "latency_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "latency_p95_ms": round(percentile(latencies, 0.95), 1) if latencies else None,
    }
