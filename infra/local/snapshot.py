"""Local stack state across `local down` / `local up` and across a kill -9 of the whole stack.

S3 objects and DynamoDB items are never lost: the local moto journals every write it accepts before it answers
(infra/local/journal.py), and `restore` has it put them back once the resources are provisioned. The stack's
SSM parameters (deployment records) and the model registry are saved here: on the way down and every few
seconds while the stack runs (a kill -9 loses at most the last interval's registry and deployment changes),
and put back on the way up (registry versions are re-created in their order, so they keep their numbers,
statuses and decisions; only their creation times become the restore's).

Messages still queued are not saved; instead, after a restore every inbox object that has no result item
is announced to the queue again (`requeue_uninspected`), so an image that was waiting, or whose invocation
was cut short, when the stack stopped is still inspected (idempotency: one result). An idempotency record
still `INPROGRESS` after a restart belongs to an invocation that died with the stack; `clear_interrupted`
removes it, as its expiry would on AWS, so the redelivery is inspected rather than refused as in progress.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path
from urllib.parse import quote_plus

from ivadas_contract.inspection import inspection_id, is_folder_marker

SNAPSHOT_FILES = ("ssm.jsonl", "registry.jsonl")
#: Written by earlier versions, which saved objects and items here instead of a journal: restored once.
LEGACY_FILES = ("s3.jsonl", "dynamodb.jsonl")
#: SSM parameters of the stack (deployment records) live under this path.
PARAMETER_PATH = "/ivadas/"
#: What a model package is re-created from.
_PACKAGE_FIELDS = ("ModelPackageDescription", "InferenceSpecification", "ModelMetrics", "MetadataProperties",
                   "CustomerMetadataProperties", "ModelApprovalStatus")  # fmt: skip


def _save_lines(path: Path, records: list[dict]) -> int:
    path.write_text("".join(json.dumps(r, default=str) + "\n" for r in records))
    return len(records)


def _parameters() -> list[dict]:
    import boto3

    ssm = boto3.client("ssm")
    found = []
    for page in ssm.get_paginator("get_parameters_by_path").paginate(Path=PARAMETER_PATH, Recursive=True):
        found += [{"name": p["Name"], "value": p["Value"], "type": p["Type"]} for p in page["Parameters"]]
    return found


def _packages() -> list[dict]:
    import boto3

    sm = boto3.client("sagemaker")
    found = []
    for page in sm.get_paginator("list_model_package_groups").paginate():
        for group in page["ModelPackageGroupSummaryList"]:
            name = group["ModelPackageGroupName"]
            arns = [s["ModelPackageArn"] for p in sm.get_paginator("list_model_packages").paginate(
                ModelPackageGroupName=name) for s in p["ModelPackageSummaryList"]]  # fmt: skip
            described = [sm.describe_model_package(ModelPackageName=a) for a in arns]
            for desc in sorted(described, key=lambda d: int(d["ModelPackageVersion"])):
                found.append({"group": name, **{k: desc[k] for k in _PACKAGE_FIELDS if desc.get(k)}})
    return found


def _restore_parameters(path: Path) -> int:
    import boto3

    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        rec = json.loads(line)
        boto3.client("ssm").put_parameter(
            Name=rec["name"], Value=rec["value"], Type=rec["type"], Overwrite=True
        )
    return len(lines)


def _restore_packages(path: Path) -> int:
    import boto3

    sm = boto3.client("sagemaker")
    lines = path.read_text().splitlines() if path.exists() else []
    groups: set[str] = set()
    for line in lines:
        rec = json.loads(line)
        group = rec.pop("group")
        if group not in groups:
            sm.create_model_package_group(ModelPackageGroupName=group)
            groups.add(group)
        sm.create_model_package(ModelPackageGroupName=group, **rec)
    return len(lines)


def save(directory: Path) -> dict[str, int]:
    """The stack's SSM parameters and registry (the previous snapshot is replaced once this one is whole)."""
    directory.mkdir(parents=True, exist_ok=True)
    counts = {
        "parameters": _save_lines(directory / "ssm.jsonl.partial", _parameters()),
        "packages": _save_lines(directory / "registry.jsonl.partial", _packages()),
    }
    for name in SNAPSHOT_FILES:
        (directory / f"{name}.partial").replace(directory / name)
    return counts


def restore_journal(moto_url: str, buckets: list[str], tables: list[str]) -> dict[str, int]:
    """Have the local moto put its journal's objects and items of these buckets and tables back."""
    req = urllib.request.Request(
        f"{moto_url}/_ivadas/journal/restore",
        data=json.dumps({"buckets": buckets, "tables": tables}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=600) as resp:  # noqa: S310 - the local moto's URL  # nosec B310
        return json.loads(resp.read())


def _restore_legacy(directory: Path) -> dict[str, int]:
    """Objects and items an earlier version saved as JSON lines: put through the API (so now journalled), then
    the files are removed."""
    import boto3

    s3, ddb = boto3.client("s3"), boto3.client("dynamodb")
    counts = {"objects": 0, "items": 0}
    if (directory / "s3.jsonl").exists():
        for line in (directory / "s3.jsonl").read_text().splitlines():
            rec = json.loads(line)
            extra = {"ContentType": rec["content_type"]} if rec.get("content_type") else {}
            s3.put_object(Bucket=rec["bucket"], Key=rec["key"], Body=base64.b64decode(rec["body"]),
                          Metadata=rec.get("metadata", {}), **extra)  # fmt: skip
            counts["objects"] += 1
    if (directory / "dynamodb.jsonl").exists():
        for line in (directory / "dynamodb.jsonl").read_text().splitlines():
            rec = json.loads(line)
            ddb.put_item(TableName=rec["table"], Item=rec["item"])
            counts["items"] += 1
    for name in LEGACY_FILES:
        (directory / name).unlink(missing_ok=True)
    return counts


def restore(directory: Path, moto_url: str, buckets: list[str], tables: list[str]) -> dict[str, int]:
    """Everything of the last run: the journal's objects and items, then the saved parameters and registry."""
    counts = restore_journal(moto_url, buckets, tables)
    counts["parameters"] = _restore_parameters(directory / "ssm.jsonl")
    counts["packages"] = _restore_packages(directory / "registry.jsonl")
    legacy = _restore_legacy(directory)
    counts["objects"] += legacy["objects"]
    counts["items"] += legacy["items"]
    return counts


def clear_interrupted(idempotency_table: str) -> int:
    """Remove idempotency records left `INPROGRESS` by invocations that died with the stack; their count is
    the number of images cut short (each is inspected again, its result overwriting the same item)."""
    import boto3

    table = boto3.resource("dynamodb").Table(idempotency_table)
    cleared, start = 0, {}
    while True:
        page = table.scan(
            FilterExpression="#s = :p", ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":p": "INPROGRESS"}, ProjectionExpression="id", **start,
        )  # fmt: skip
        for item in page.get("Items", []):
            table.delete_item(Key={"id": item["id"]})
            cleared += 1
        if "LastEvaluatedKey" not in page:
            return cleared
        start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


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
