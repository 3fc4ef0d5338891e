"""`ivadas redrive`: every message of the local stack's dead-letter queue back to the inspection queue, each
with why it was there: how often it had been delivered, and the last error the worker (or, for a timeout or a
crash, the Lambda platform) logged for it. The images are then inspected as any other; `--wait` waits for
their results.

moto 5.2 has no StartMessageMoveTask, so messages move as that task moves them: received from the DLQ, sent
to the source queue, then deleted from the DLQ (sent before deleted: a crash in between delivers one twice,
which the worker's idempotency absorbs, and never loses one).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from urllib.parse import unquote_plus

from infra.local.state import read_state, use_state
from infra.local.worker_logs import FAILED, worker_log_records
from ivadas_contract.inspection import inspection_id


def last_errors(logs: Path) -> dict[str, tuple[str, str]]:
    """message id -> (time, error) of the last failure logged for it in the worker logs."""
    found: dict[str, tuple[str, str]] = {}
    for doc in worker_log_records(logs):
        if doc.get("message") not in FAILED:
            continue
        ids = doc.get("message_ids") or [doc.get("message_id")]
        for mid in filter(None, ids):
            stamp = str(doc.get("timestamp", ""))
            if mid not in found or stamp >= found[mid][0]:
                found[mid] = (stamp, str(doc.get("error", "")))
    return found


def _objects(body: str) -> list[tuple[str, str, str]]:
    """(bucket, key, etag) of each inbox object an S3 event names (etag may be empty)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    out = []
    for record in doc.get("Records", []) if isinstance(doc, dict) else []:
        s3 = record.get("s3", {})
        obj = s3.get("object", {})
        out.append(
            (s3.get("bucket", {}).get("name", ""), unquote_plus(obj.get("key", "")), obj.get("eTag", ""))
        )
    return out


def move_all(dlq_url: str, queue_url: str, logs: Path) -> list[dict]:
    """Move every DLQ message to `queue_url`; one row per message moved."""
    import boto3

    sqs = boto3.client("sqs")
    errors = last_errors(logs)
    moved: list[dict] = []
    while True:
        got = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=120,
            AttributeNames=["All"], MessageAttributeNames=["All"],
        ).get("Messages", [])  # fmt: skip
        if not got:
            return moved
        for m in got:
            extra = {"MessageAttributes": m["MessageAttributes"]} if m.get("MessageAttributes") else {}
            sqs.send_message(QueueUrl=queue_url, MessageBody=m["Body"], **extra)
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=m["ReceiptHandle"])
            # this receive from the DLQ counts too: the deliveries before it are one fewer
            deliveries = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")) - 1
            stamp, error = errors.get(m["MessageId"], ("", "no failure logged for it"))
            moved.append({"message_id": m["MessageId"], "deliveries": deliveries, "last_error": error,
                          "failed_at": stamp, "objects": _objects(m["Body"])})  # fmt: skip


def wait_results(rows: list[dict], table_name: str, timeout: float) -> tuple[int, int]:
    """(inspected or rejected, still without a result) of the redriven objects after at most `timeout` s."""
    import boto3

    s3 = boto3.client("s3")
    table = boto3.resource("dynamodb").Table(table_name)
    ids = set()
    for row in rows:
        for bucket, key, etag in row["objects"]:
            try:
                etag = etag or s3.head_object(Bucket=bucket, Key=key)["ETag"]
            except s3.exceptions.ClientError:
                continue  # gone from the inbox: the worker records it REJECTED, not waited for here
            ids.add(inspection_id(bucket, key, etag.strip('"')))
    done: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        for iid in ids - done:
            if table.get_item(Key={"inspection_id": iid}, ConsistentRead=True).get("Item"):
                done.add(iid)
        if done == ids or time.monotonic() >= deadline:
            return len(done), len(ids - done)
        time.sleep(0.5)


def run(args: argparse.Namespace) -> int:
    state = read_state(args.state_dir)
    use_state(state)
    names = state["resources"]
    rows = move_all(
        names["InspectionDeadLetterQueue"], names["InspectionQueue"], Path(args.state_dir) / "logs"
    )
    if args.json:
        print(json.dumps({"moved": rows}, indent=2))
    else:
        print(f"moved {len(rows)} message(s) from the dead-letter queue back to the inspection queue")
        for row in rows:
            keys = ", ".join(key for _, key, _ in row["objects"]) or "(no inbox object)"
            print(f"  {keys}: delivered {row['deliveries']} times; last error: {row['last_error']}")
    if args.wait > 0 and rows:
        done, left = wait_results(rows, names["ResultsTable"], args.wait)
        print(f"after redrive: {done} with a result, {left} still without one after {args.wait:.0f} s")
        return 1 if left else 0
    return 0
