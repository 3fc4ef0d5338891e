"""`ivadas inspect` and `ivadas results`: put images into the running stack's inbox and read what came out.

`inspect` uploads every image of a folder to `<line>/<class_name>/<file>`, waits until each has its result
item (found by the same inspection id the worker derives from bucket, key and ETag), and prints a table and a
summary with end-to-end latency (upload to result visible). `results` queries the results API as a signed-in
user (--user or $IVADAS_USER, password from $IVADAS_PASSWORD or asked).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from infra.local.state import read_state, use_state
from ivadas_contract.images import has_image_suffix
from ivadas_contract.inspection import inbox_key, inspection_id
from ivadas_contract.results_table import PARTITION_KEY, from_dynamo

#: BatchGetItem takes 100 keys at most.
_BATCH_GET = 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class _Inbox:
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


def upload_and_wait(
    files: list[Path],
    class_name: str,
    line: str,
    timeout: float,
    state: dict,
    threads: int = 8,
    base: Path | None = None,
    in_flight: int = 64,
) -> list[dict]:
    """Put every file into the inbox and wait for its result; returns one row per file in input order.

    At most `in_flight` images are uploaded and not yet done at any time, as cameras on a line upload steadily
    rather than all at once: the queue stays short, so latency is the pipeline's own and not time spent
    queueing behind the rest of the folder (moto's SQS also scans the whole queue on every receive).
    """
    inbox = _Inbox(state, class_name, line, base)
    rows: list[dict | None] = [None] * len(files)
    pending: dict[str, dict] = {}
    uploading: dict = {}  # future -> index
    queued = iter(range(len(files)))
    in_flight = max(1, in_flight)
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(max_workers=threads) as pool:
        while time.monotonic() < deadline:
            for future in [f for f in uploading if f.done()]:
                row = rows[uploading.pop(future)] = future.result()
                if row["id"]:
                    pending[row["id"]] = row
            while len(uploading) + len(pending) < in_flight and (i := next(queued, None)) is not None:
                uploading[pool.submit(inbox.put, files[i])] = i
            if not pending and not uploading:
                break
            inbox.collect(pending)
            time.sleep(0.25)  # light polling: moto shares the cores with the pipeline
        for future, i in uploading.items():  # the timeout came while these were queued or uploading
            if not future.cancel():
                rows[i] = future.result()  # it is in the inbox now: count it, as missing
    return [_finished(row, path) for row, path in zip(rows, files, strict=True)]


def _finished(row: dict | None, path: Path) -> dict:
    if row is None:
        return _not_uploaded(path, "the timeout came before its turn to upload")
    row.setdefault("item", None)
    return row


def _not_uploaded(path: Path, reason: str) -> dict:
    return {"file": str(path), "key": None, "id": None, "t0": None, "item": None, "error": reason}


def summarise(rows: list[dict]) -> dict:
    """Counts and latency; `missing` are uploaded images without a result (in the DLQ, or still queued)."""
    done = [r for r in rows if r["item"]]
    inspected = [r for r in done if r["item"]["status"] == "INSPECTED"]
    latencies = [r["latency_ms"] for r in done]
    uploaded = sum(1 for r in rows if r["key"] is not None)
    return {
        "uploaded": uploaded,
        "not_uploaded": len(rows) - uploaded,
        "inspected": len(inspected),
        "anomalous": sum(1 for r in inspected if r["item"].get("is_anomaly")),
        "rejected": sum(1 for r in done if r["item"]["status"] == "REJECTED"),
        "missing": uploaded - len(done),
        "latency_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "latency_p95_ms": round(percentile(latencies, 0.95), 1) if latencies else None,
    }


def _files(args: argparse.Namespace) -> tuple[list[Path], Path]:
    if args.data_root:
        from model_server.training.datasets import load_split  # numpy and PIL only

        split = load_split(args.data_root, args.class_name)
        files = [s.path for s in split.test if s.path is not None]
        return files, Path(os.path.commonpath([str(p.parent) for p in files])) if files else Path(".")
    if not args.folder:
        raise SystemExit("ivadas inspect: error: give a folder or --data-root")
    folder = Path(args.folder)
    if not folder.is_dir():
        raise SystemExit(f"ivadas inspect: error: {folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and has_image_suffix(p.name)), folder


def inspect(args: argparse.Namespace) -> int:
    files, folder = _files(args)
    if not files:
        print(f"ivadas inspect: error: no images in {folder}", file=sys.stderr)
        return 2
    state = read_state(args.state_dir)
    t0 = time.monotonic()
    rows = upload_and_wait(
        files, args.class_name, args.line, args.timeout, state, base=folder, in_flight=args.in_flight
    )
    wall = time.monotonic() - t0
    print(f"{'file':40} {'status':10} {'verdict':8} {'score':>8} {'latency ms':>10}  reason")
    for r in rows:
        item = r["item"] or {}
        status = item.get("status", "MISSING" if r["key"] else "NOT_UPLOADED")
        verdict = "" if status != "INSPECTED" else ("DEFECT" if item.get("is_anomaly") else "good")
        score = f"{item['normalized_score']:.3f}" if item.get("normalized_score") is not None else ""
        latency = f"{r['latency_ms']:.0f}" if "latency_ms" in r else ""
        name = str(Path(r["file"]).relative_to(folder))[-40:]
        reason = item.get("reason") or r.get("error", "")
        print(f"{name:40} {status:10} {verdict:8} {score:>8} {latency:>10}  {reason}")
    summary = summarise(rows) | {
        "wall_seconds": round(wall, 1),
        "images_per_second": round(len(rows) / wall, 2),
    }
    print(json.dumps(summary))
    return 0 if summary["missing"] == 0 and summary["not_uploaded"] == 0 else 1


def results(args: argparse.Namespace) -> int:
    state = read_state(args.state_dir)
    query = {"limit": str(args.limit)}
    for name in ("class_name", "line", "reviewed", "since", "until", "next_token"):
        if getattr(args, name, None):
            query[name] = getattr(args, name)
    if args.anomalous:
        query["anomalous"] = "true"
    from infra.local.users import signed_in_headers

    headers = signed_in_headers(state, args.user, None)  # /results is a person's route: sign in
    url = f"{state['api_url']}/results?{urllib.parse.urlencode(query)}"
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # the stack's API (or the local shim)  # nosec B310
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        from infra.cli_errors import api_error, describe

        print(f"ivadas results: error: {describe(api_error(err.code, err.read()))}", file=sys.stderr)
        return 2
    print(f"{'time':24} {'class':12} {'status':9} {'verdict':7} {'score':>6}  key")
    for item in doc["items"]:
        verdict = "" if item["status"] != "INSPECTED" else ("DEFECT" if item.get("is_anomaly") else "good")
        score = f"{item['normalized_score']:.3f}" if item.get("normalized_score") is not None else ""
        reason = f"  ({item['reason']})" if item.get("reason") else ""
        when, cls = item["created_at"], item["class_name"][:12]
        print(f"{when:24} {cls:12} {item['status']:9} {verdict:7} {score:>6}  {item['key']}{reason}")
    if doc.get("next_token"):
        print(f"more: --next-token {doc['next_token']}")
    return 0
