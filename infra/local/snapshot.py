"""Local stack state across `local down` / `local up`: moto keeps all in memory, so the supervisor saves
S3 objects, DynamoDB items, the stack's SSM parameters (deployment records) and the model registry on the way
down and puts them back on the way up (registry versions are re-created in their order, so they keep their
numbers, statuses and decisions; only their creation times become the restore's). Messages still queued are
not saved; instead, after a restore every inbox object that has no result item is announced to the queue
again, so an image that was waiting when the stack stopped is still inspected (idempotency: one result).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote_plus

from ivadas_contract.inspection import inspection_id, is_folder_marker

SNAPSHOT_FILES = ("s3.jsonl", "dynamodb.jsonl", "ssm.jsonl", "registry.jsonl")
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
    counts["parameters"] = _save_lines(directory / "ssm.jsonl.partial", _parameters())
    counts["packages"] = _save_lines(directory / "registry.jsonl.partial", _packages())
    for name in SNAPSHOT_FILES:  # replace the previous snapshot only once this one is whole
        (directory / f"{name}.partial").replace(directory / name)
    return counts


def restore(directory: Path) -> dict[str, int]:
    import boto3

    s3, ddb = boto3.client("s3"), boto3.client("dynamodb")
    counts = {"objects": 0, "items": 0, "parameters": _restore_parameters(directory / "ssm.jsonl"),
              "packages": _restore_packages(directory / "registry.jsonl")}  # fmt: skip
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
