"""`ivadas rescore --version V --since T [--class-name C]`: the inbox images behind stored results scored
again by a registered version with SageMaker Batch Transform (the version's own image, POST /invocations
per image, a manifest of the keys per class), compared with the stored baseline answers: verdict agreement,
score correlation and the images whose verdict would change. The comparison is kept in the model bucket, where
`ivadas compare --rescored V` shows it and `ivadas promote` reports it.

boto3 throughout: CreateModel and CreateTransformJob take a manifest as plainly as anything, and the SDK's
Transformer would add a model and a session to get there.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from infra.lifecycle.context import Context
from ivadas_functions.promotion import read_json, rescore_key
from ivadas_functions.promotion import rescore_summary as summary
from model_server.errors import IvadasError

ENDED = ("Completed", "Failed", "Stopped")


def stored_results(ctx: Context, class_name: str | None, since: str, until: str | None) -> list[dict]:
    """Inspected results from `since` on (one class, or every class month by month), oldest first."""
    import boto3
    from boto3.dynamodb.conditions import Key

    from ivadas_contract.results_table import RESULT_INDEXES, SORT_KEY, from_dynamo, month_of

    table = boto3.resource("dynamodb").Table(ctx.stack.ref("ResultsTable"))
    end = until or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.999Z")
    if class_name:
        scopes = [(RESULT_INDEXES[("class", False)], class_name)]
    else:
        months, month = [], month_of(since)
        while month <= month_of(end):
            months.append(month)
            year, number = int(month[:4]), int(month[5:7])
            month = f"{year + number // 12}-{number % 12 + 1:02d}"
        scopes = [(RESULT_INDEXES[("all", False)], m) for m in months]
    items: list[dict] = []
    for index, value in scopes:
        condition = Key(index.partition).eq(value) & Key(SORT_KEY).between(since, end)
        kwargs: dict = {"IndexName": index.name, "KeyConditionExpression": condition}
        while True:
            page = table.query(**kwargs)
            items += [from_dynamo(i) for i in page.get("Items", []) if i.get("status") == "INSPECTED"]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return sorted(items, key=lambda i: i["created_at"])


def still_there(ctx: Context, items: list[dict]) -> tuple[list[dict], list[dict]]:
    """(results whose image is still the one scored, the others with why): the inbox expires images, and a
    key uploaded again holds another image (its ETag differs)."""

    def check(item: dict) -> str | None:
        try:
            etag = ctx.s3.head_object(Bucket=item["bucket"], Key=item["key"])["ETag"].strip('"')
        except ctx.s3.exceptions.ClientError:
            return "the image is gone (inbox retention)"
        return None if etag == item["etag"] else "the key holds another image now"

    kept, skipped = [], []  # one result per image: an inspection id is the key and the image's ETag
    with ThreadPoolExecutor(8) as pool:
        for item, why in zip(items, pool.map(check, items), strict=True):
            if why is None:
                kept.append(item)
            else:
                skipped.append({"class_name": item["class_name"], "key": item["key"],
                                "inspection_id": item["inspection_id"], "why": why})  # fmt: skip
    return kept, skipped


def start_job(
    ctx: Context, args: argparse.Namespace, version, run: str, class_name: str, items: list[dict]
) -> str:  # noqa: ANN001
    from model_server.server.serve import CLASS_ENV

    inbox = items[0]["bucket"]
    manifest = [{"prefix": f"s3://{inbox}/"}, *(i["key"] for i in items)]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", class_name).strip("-")[:24] or "class"
    key = f"{ctx.stage}/rescore-input/{run}/{slug}.manifest"
    ctx.s3.put_object(Bucket=ctx.model_bucket, Key=key, Body=json.dumps(manifest).encode())
    name = f"ivadas-{ctx.stage}-rescore-{slug}-{run}"[:63]
    ctx.sagemaker.create_transform_job(
        TransformJobName=name,
        ModelName=f"ivadas-{ctx.stage}-rescore-{version.name}-{run}",
        Environment={CLASS_ENV: class_name},
        MaxConcurrentTransforms=args.concurrency,
        BatchStrategy="SingleRecord",
        MaxPayloadInMB=6,
        TransformInput={
            "DataSource": {
                "S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": f"s3://{ctx.model_bucket}/{key}"}
            },
            "ContentType": "application/x-image",
            "SplitType": "None",
        },
        TransformOutput={
            "S3OutputPath": f"s3://{ctx.model_bucket}/{ctx.stage}/rescore-output/{run}/{slug}/",
            "Accept": "application/json",
        },
        TransformResources={"InstanceType": args.instance_type, "InstanceCount": 1},
    )
    return name


def _wait(ctx: Context, names: list[str], poll_s: float) -> dict[str, dict]:
    done: dict[str, dict] = {}
    t0 = time.monotonic()
    while len(done) < len(names):
        time.sleep(poll_s)
        for name in set(names) - set(done):
            d = ctx.sagemaker.describe_transform_job(TransformJobName=name)
            if d["TransformJobStatus"] in ENDED:
                done[name] = d
                why = f"  {d['FailureReason']}" if d.get("FailureReason") else ""
                print(
                    f"  {name}: {d['TransformJobStatus']} [{time.monotonic() - t0:.0f} s]{why}",
                    file=sys.stderr,
                )
    return done


def _answers(ctx: Context, described: dict, items: list[dict]) -> list[dict]:
    """The stored results with the version's answer beside each (as a shadow answer is stored)."""
    bucket, prefix = described["TransformOutput"]["S3OutputPath"].removeprefix("s3://").split("/", 1)

    def read(item: dict) -> dict:
        answer = json.loads(ctx.s3.get_object(Bucket=bucket, Key=f"{prefix}{item['key']}.out")["Body"].read())
        new = {k: answer.get(k) for k in ("normalized_score", "is_anomaly", "model_version", "anomaly_score")}
        return {**item, "shadow": new, "shadow_agrees": bool(new["is_anomaly"]) == bool(item["is_anomaly"])}

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(read, items))


def create_model(ctx: Context, args: argparse.Namespace, version, run: str) -> None:  # noqa: ANN001
    """The version as a SageMaker model the transform jobs run, as the transform role."""
    role = args.role_arn or f"arn:aws:iam::{ctx.caller.split(':')[4]}:role/ivadas-{ctx.stage}-transform"
    ctx.sagemaker.create_model(
        ModelName=f"ivadas-{ctx.stage}-rescore-{version.name}-{run}",
        PrimaryContainer={"Image": version.image, "ModelDataUrl": version.model_data_url},
        ExecutionRoleArn=role,
        EnableNetworkIsolation=True,
    )


def rescore(args: argparse.Namespace) -> int:
    from infra.lifecycle.compare import agreement
    from infra.lifecycle.context import context_from_args
    from infra.lifecycle.registry import get_version

    ctx = context_from_args(args)
    version = get_version(ctx, args.version)
    if args.class_name and args.class_name not in version.classes:
        raise IvadasError(
            f"{version.name} has no class {args.class_name} (classes: {', '.join(version.classes)})"
        )
    found = stored_results(ctx, args.class_name, args.since, args.until)
    items, skipped = still_there(ctx, [i for i in found if i["class_name"] in version.classes])
    if not items:
        raise IvadasError(
            f"no stored result since {args.since} of a class {version.name} serves has its image left"
        )
    by_class: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        by_class[item["class_name"]].append(item)
    run = datetime.now(UTC).strftime("%y%m%d%H%M%S")
    create_model(ctx, args, version, run)
    jobs = {name: start_job(ctx, args, version, run, name, group) for name, group in sorted(by_class.items())}
    print(
        f"re-scoring {len(items)} images of {len(jobs)} classes with {version.name} ({len(skipped)} skipped)",
        file=sys.stderr,
    )
    done = _wait(ctx, list(jobs.values()), poll_s=1.0 if ctx.local else 15.0)
    failed = [
        f"{n}: {d.get('FailureReason', d['TransformJobStatus'])}"
        for n, d in done.items()
        if d["TransformJobStatus"] != "Completed"
    ]
    if failed:
        raise IvadasError("batch transform failed: " + "; ".join(failed))
    docs = {}
    for name, job in jobs.items():
        view = agreement(_answers(ctx, done[job], by_class[name]))
        doc = {"class_name": name, "version": version.name, "since": args.since, "until": args.until,
               "job": job, "skipped": [s for s in skipped if s["class_name"] == name],
               "scored_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **view}  # fmt: skip
        key = rescore_key(ctx.stage, name, version.name)
        ctx.s3.put_object(
            Bucket=ctx.model_bucket, Key=key, Body=json.dumps(doc, indent=2, default=str).encode()
        )
        doc["stored_at"] = f"s3://{ctx.model_bucket}/{key}"
        docs[name] = doc
    if args.json:
        print(json.dumps(docs, indent=2, default=str))
        return 0
    for doc in docs.values():
        print(summary(doc))
        for row in doc["disagreements"][: args.limit]:
            b, c = row["baseline"], row["candidate"]
            print(f"    {row['key']}  stored {_says(b)}  {version.name} {_says(c)}")
        print(f"  kept at {doc['stored_at']}")
    return 0


def _says(answer: dict) -> str:
    return f"{'NG' if answer['is_anomaly'] else 'OK'} {float(answer['normalized_score']):.3f}"


def stored(ctx: Context, class_name: str, version: str) -> dict | None:
    """The latest re-scoring of `class_name` by `version`, if any."""
    return read_json(ctx.s3, ctx.model_bucket, rescore_key(ctx.stage, class_name, version))
