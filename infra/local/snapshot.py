"""Local stack state across `local down` / `local up`: moto keeps all in memory, so the supervisor saves
S3 objects and DynamoDB items on the way down and puts them back on the way up. Messages still queued are not
saved; instead, after a restore every inbox object that has no result item is announced to the queue again, so
an image that was waiting when the stack stopped is still inspected (idempotency keeps it to one result).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote_plus

from ivadas_contract.inspection import inspection_id, is_folder_marker


def save(directory: Path, buckets: list[str], tables: list[str]) -> dict[str, int]:
    import boto3

    s3, ddb = boto3.client("s3"), boto3.client("dynamodb")
    directory.mkdir(parents=True, exist_ok=True)
    counts = {"objects": 0, "items": 0}
    with open(directory / "s3.jsonl.partial", "w") as out:
        for bucket in buckets:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in page.get("Contents", []):
                    got = s3.get_object(Bucket=bucket, Key=obj["Key"])
                    out.write(
                        json.dumps(
                            {
                                "bucket": bucket,
                                "key": obj["Key"],
                                "content_type": got.get("ContentType"),
                                "metadata": got.get("Metadata", {}),
                                "body": base64.b64encode(got["Body"].read()).decode(),
                            }
                        )
                        + "\n"
                    )
                    counts["objects"] += 1
    with open(directory / "dynamodb.jsonl.partial", "w") as out:
        for table in tables:
            for page in ddb.get_paginator("scan").paginate(TableName=table):
                for item in page.get("Items", []):
                    out.write(json.dumps({"table": table, "item": item}) + "\n")
                    counts["items"] += 1
    for name in ("s3.jsonl", "dynamodb.jsonl"):  # replace the previous snapshot only once this one is whole
        (directory / f"{name}.partial").replace(directory / name)
    return counts


def restore(directory: Path) -> dict[str, int]:
    import boto3

    s3, ddb = boto3.client("s3"), boto3.client("dynamodb")
    counts = {"objects": 0, "items": 0}
    if (directory / "s3.jsonl").exists():
        for line in (directory / "s3.jsonl").read_text().splitlines():
            rec = json.loads(line)
            extra = {"ContentType": rec["content_type"]} if rec.get("content_type") else {}
            s3.put_object(
                Bucket=rec["bucket"],
                Key=rec["key"],
                Body=base64.b64decode(rec["body"]),
                Metadata=rec.get("metadata", {}),
                **extra,
            )
            counts["objects"] += 1
    if (directory / "dynamodb.jsonl").exists():
        for line in (directory / "dynamodb.jsonl").read_text().splitlines():
            rec = json.loads(line)
            ddb.put_item(TableName=rec["table"], Item=rec["item"])
            counts["items"] += 1
    return counts


def requeue_uninspected(inbox: str, results_table: str, queue_url: str) -> int:
    """Announce every inbox object without a result item to the queue, as S3 would have (folder markers are
    never inspected, so they are never announced)."""
    import boto3

    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    table = boto3.resource("dynamodb").Table(results_table)
    sent = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=inbox):
        for obj in page.get("Contents", []):
            if is_folder_marker(obj["Key"]):
                continue
            etag = obj["ETag"].strip('"')
            if table.get_item(Key={"inspection_id": inspection_id(inbox, obj["Key"], etag)}).get("Item"):
                continue
            record = {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": inbox},
                    "object": {"key": quote_plus(obj["Key"], safe="/"), "eTag": etag, "size": obj["Size"]},
                },
            }
            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"Records": [record]}))
            sent += 1
    return sent
