"""`ivadas train --on sagemaker`: one SageMaker training job per class, at most --max-parallel at once, merged
into one multi-class artifact registered as a pending version.

Jobs start through the sagemaker SDK's Estimator (the idiomatic call for a custom training image: it builds
the CreateTrainingJob request from the image, role, channels, hyperparameters and metric definitions), with
its telemetry off; everything else (S3, describing and stopping jobs, quotas) is one boto3 call each, simpler
than the SDK's wrappers. The job's options are `ivadas train`'s own (model_server/training_job.py).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from infra.lifecycle.context import Context
from model_server.errors import DataError, IvadasError

#: `ivadas train` options a job never takes as hyperparameters: set per job, by the job, or for this machine.
LEAVE_OUT = {"data_root", "classes", "out", "report_dir", "threads", "quiet", "config_from"}
ENDED = ("Completed", "Failed", "Stopped")
#: The SDK's configuration: no telemetry (it would otherwise report each call to AWS).
SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


@dataclass
class Job:
    class_name: str
    name: str
    data_url: str
    described: dict = field(default_factory=dict)
    shown: str = ""

    @property
    def status(self) -> str:
        return self.described.get("TrainingJobStatus", "Pending")


def job_name(stage: str, class_name: str, stamp: str) -> str:
    """`ivadas-<stage>-<class>-<hash>-<time>`: unique, at most 63 letters, digits and dashes."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", class_name).strip("-")[:20] or "class"
    tag = hashlib.sha256(class_name.encode()).hexdigest()[:4]
    return f"ivadas-{stage}-{slug}-{tag}-{stamp}"[:63].rstrip("-")


def _s3(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise DataError(f"{url} is not an s3:// URI")
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


def _folder_digest(folder: Path) -> tuple[str, list[Path]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            digest.update(
                path.relative_to(folder).as_posix().encode()
                + b"\0"
                + hashlib.file_digest(f, "sha256").digest()
            )
    return digest.hexdigest(), files


def upload_class(ctx: Context, root: Path, class_name: str) -> str:
    """The class's folder in S3 under its content's hash (an MVTec root holding that class alone): uploaded
    once, so a rerun, or a class whose images did not change, uploads nothing. Returns the channel's URI."""
    bucket, prefix = ctx.stack.values["TrainingDataBucketName"], ctx.stack.values["TrainingDataPrefix"]
    digest, files = _folder_digest(root / class_name)
    if not files:
        raise DataError(f"{root / class_name} holds no files")
    channel = f"{prefix}{digest[:32]}/"
    marker = f"{prefix}uploaded/{digest[:32]}"  # written last: a cut-short upload is done again
    try:
        ctx.s3.head_object(Bucket=bucket, Key=marker)
        return f"s3://{bucket}/{channel}"
    except ctx.s3.exceptions.ClientError:
        pass

    def put(path: Path) -> None:
        key = f"{channel}{class_name}/{path.relative_to(root / class_name).as_posix()}"
        ctx.s3.upload_file(str(path), bucket, key)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, files))
    ctx.s3.put_object(Bucket=bucket, Key=marker, Body=f"{len(files)} files\n".encode())
    print(f"uploaded {class_name}: {len(files)} files to s3://{bucket}/{channel}", flush=True)
    return f"s3://{bucket}/{channel}"


def channels(ctx: Context, args: argparse.Namespace) -> dict[str, str]:
    """Class -> the S3 URI of its training channel."""
    from model_server.commands import parse_classes

    if args.data_uri:
        bucket, prefix = _s3(args.data_uri.rstrip("/") + "/")
        names = [c.strip() for c in (args.classes or "").split(",") if c.strip()]
        if not names:
            pages = ctx.s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, Delimiter="/"
            )
            names = [
                p["Prefix"][len(prefix) :].strip("/")
                for page in pages
                for p in page.get("CommonPrefixes", [])
            ]
        if not names:
            raise DataError(f"no class folders under {args.data_uri}")
        return {n: f"s3://{bucket}/{prefix}{n}/" for n in names}
    if not args.data_root:
        raise DataError("--on sagemaker needs --data-uri s3://... or --data-root FOLDER (uploaded once)")
    root = Path(args.data_root)
    if not root.is_dir():
        raise DataError(f"--data-root {root} is not a folder: training jobs take an MVTec-layout folder")
    return {n: upload_class(ctx, root, n) for n in parse_classes(args.classes, str(root))}


def _config_channel(ctx: Context, artifact: str) -> str:
    """--config-from's artifact, uploaded under the data prefix (the training role reads nothing else)."""
    from infra.local.endpoints import file_sha256

    bucket, prefix = ctx.stack.values["TrainingDataBucketName"], ctx.stack.values["TrainingDataPrefix"]
    key = f"{prefix}artifacts/{file_sha256(Path(artifact))[:32]}/model.tar.gz"
    ctx.s3.upload_file(artifact, bucket, key)
    return f"s3://{bucket}/{key}"


def quota(ctx: Context, instance_type: str) -> int:
    """Training jobs of one instance each the account may run at once on `instance_type` (Service Quotas)."""
    import boto3

    wanted = f"{instance_type} for training job usage"
    try:
        pages = (
            boto3.client("service-quotas")
            .get_paginator("list_service_quotas")
            .paginate(ServiceCode="sagemaker")
        )
        values = [q["Value"] for page in pages for q in page["Quotas"] if q["QuotaName"] == wanted]
    except Exception as exc:  # noqa: BLE001 - no permission, no such API here: the user can say it
        raise IvadasError(f"cannot read the quota '{wanted}' ({exc}): pass --max-parallel") from None
    if not values or int(values[0]) < 1:
        raise IvadasError(f"the account has no quota for '{wanted}': request one, or pass --max-parallel")
    return int(values[0])


def role_arn(ctx: Context, args: argparse.Namespace) -> str:
    if args.role_arn:
        return args.role_arn
    account = ctx.caller.split(":")[4]
    return f"arn:aws:iam::{account}:role/ivadas-{ctx.stage}-training"


def _session():  # noqa: ANN202 - sagemaker.Session
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    import boto3
    import sagemaker

    for name in ("sagemaker", "sagemaker.config"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return sagemaker.Session(boto_session=boto3.Session(), sagemaker_config=SDK_CONFIG)


@dataclass
class Plan:
    """Everything each class's job shares."""

    ctx: Context
    args: argparse.Namespace
    hyperparameters: dict[str, str]
    role: str
    config_url: str | None
    session: object = None

    def start(self, job: Job) -> None:
        from sagemaker.estimator import Estimator
        from sagemaker.inputs import TrainingInput

        from model_server.training_job import CHANNEL, CONFIG_CHANNEL, METRIC_DEFINITIONS

        estimator = Estimator(
            image_uri=self.ctx.image_uri,
            role=self.role,
            instance_count=1,
            instance_type=self.args.instance_type,
            volume_size=30,
            max_run=int(self.args.max_run_hours * 3600),
            output_path=f"s3://{self.ctx.model_bucket}/{self.ctx.stage}/training-jobs/",
            hyperparameters={**self.hyperparameters, "classes": job.class_name},
            metric_definitions=METRIC_DEFINITIONS,
            sagemaker_session=self.session,
            disable_profiler=True,
            debugger_hook_config=False,
            enable_network_isolation=True,  # the job reads its channels and writes its model: nothing else
            tags=[{"Key": "ivadas:class", "Value": job.class_name}],
        )
        inputs = {CHANNEL: TrainingInput(job.data_url, s3_data_type="S3Prefix")}
        if self.config_url:
            inputs[CONFIG_CHANNEL] = TrainingInput(self.config_url, s3_data_type="S3Prefix")
        estimator.fit(inputs, wait=False, logs=False, job_name=job.name)


def _line(job: Job) -> str:
    """What is shown of a job: class, name, state, its metrics, why it failed."""
    d = job.described
    metrics = " ".join(f"{m['MetricName']}={m['Value']:g}" for m in d.get("FinalMetricDataList", []))
    state = f"{job.status}/{d.get('SecondaryStatus', '-')}"
    why = f"  {d['FailureReason']}" if d.get("FailureReason") else ""
    return f"  {job.class_name:<20} {job.name:<63} {state:<24} {metrics}{why}".rstrip()


def run_jobs(plan: Plan, jobs: list[Job], parallel: int, poll_s: float) -> None:
    """Start jobs while fewer than `parallel` run; follow each to its end, printing what changes. Interrupted:
    the running jobs are stopped (they would go on costing)."""
    sm = plan.ctx.sagemaker
    pending, running, t0 = list(jobs), [], time.monotonic()
    try:
        while pending or running:
            while pending and len(running) < parallel:
                job = pending.pop(0)
                plan.start(job)
                running.append(job)
            time.sleep(poll_s)
            for job in list(running):
                job.described = sm.describe_training_job(TrainingJobName=job.name)
                if _line(job) != job.shown:
                    job.shown = _line(job)
                    print(f"{job.shown}  [{time.monotonic() - t0:.0f} s]", flush=True)
                if job.status in ENDED:
                    running.remove(job)
    except KeyboardInterrupt:
        for job in running:
            sm.stop_training_job(TrainingJobName=job.name)
            print(f"stopped {job.name}", flush=True)
        raise


def train(args: argparse.Namespace) -> int:
    from infra.cli import CLOUD_OPTIONS, train_parser
    from infra.cloud.merge import merge
    from infra.lifecycle import registry
    from infra.lifecycle.context import context_from_args
    from infra.local.endpoints import download
    from model_server.training_job import to_hyperparameters

    ctx = context_from_args(args)
    base = registry.get_version(ctx, args.base_version) if args.base_version else None
    if base is not None and base.model != args.model:
        raise IvadasError(f"{base.name} is a {base.model} version; --model is {args.model}")
    sources = channels(ctx, args)
    hyperparameters = to_hyperparameters(args, train_parser(), LEAVE_OUT | set(CLOUD_OPTIONS))
    config_url = _config_channel(ctx, args.config_from) if args.config_from else None
    plan = Plan(ctx, args, hyperparameters, role_arn(ctx, args), config_url, _session())
    stamp = datetime.now(UTC).strftime("%y%m%d%H%M%S")
    jobs = [Job(name, job_name(ctx.stage, name, stamp), url) for name, url in sorted(sources.items())]
    parallel = args.max_parallel or quota(ctx, args.instance_type)
    print(
        f"training {len(jobs)} classes as {len(jobs)} jobs on {args.instance_type}, {parallel} at a time",
        flush=True,
    )
    run_jobs(plan, jobs, parallel, poll_s=1.0 if ctx.local else 15.0)

    failed = {j.class_name: j for j in jobs if j.status != "Completed"}
    for j in failed.values():
        print(
            f"class {j.class_name}: job {j.name} {j.status}: {j.described.get('FailureReason', '-')}",
            flush=True,
        )
    if failed and (not args.allow_partial or len(failed) == len(jobs)):
        print("nothing registered" + ("" if args.allow_partial else " (--allow-partial registers the rest)"))
        return 1
    parts = {
        j.class_name: download(j.described["ModelArtifacts"]["S3ModelArtifacts"], ctx.cache_dir)
        for j in jobs
        if j.status == "Completed"
    }
    if base is not None:
        base_path = download(base.model_data_url, ctx.cache_dir)
        parts = {**dict.fromkeys(base.classes, base_path), **parts}
        for name in failed:
            parts.pop(name, None)
    missing = {
        n: f"job {j.name} {j.status}: {j.described.get('FailureReason', '-')}" for n, j in failed.items()
    }
    extra = {"training": {"jobs": {j.class_name: j.name for j in jobs if j.status == "Completed"},
                          "instance_type": args.instance_type, "base_version": args.base_version,
                          "missing_classes": missing}}  # fmt: skip
    manifest = merge(Path(args.out), parts, extra)
    version, created = registry.register(ctx, args.out, args.model)
    state = "registered" if created else "already registered (same content) as"
    gap = f"; missing {', '.join(missing)}" if missing else ""
    print(f"wrote {args.out} ({manifest['model_version']}); {state} {version.name}: {version.status}, "
          f"classes {', '.join(version.classes)}{gap}")  # fmt: skip
    return 0
