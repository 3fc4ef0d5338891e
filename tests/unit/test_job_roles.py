"""The training and transform roles allow exactly what their jobs need (test_iam.py's pattern, for the roles
SageMaker assumes rather than a function's).

What a job needs follows from the request the code sends (captured from the real calls, against moto): each
input channel's prefix to list and read, the output path to write, the image to pull, the job's log group and
metric namespace; for a transform, the version's artifact, the manifest and every object it names. Which IAM
action each of those takes is SageMaker's documented list for CreateTrainingJob and CreateTransformJob roles
(sagemaker-roles.html). Compared both ways with the template's grants: a need no grant covers, and a grant
no need uses, fail; a wildcard must be listed with its reason.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from infra.lifecycle.context import Context
from infra.template import ACCOUNT, REGION
from tests.unit.test_iam import DeployedStack, deployed

ARN = f"{REGION}:{ACCOUNT}"
PULL = ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability")
LOGS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams")
INBOX = f"ivadas-dev-inbox-{ACCOUNT}"
#: Wildcard grants (Stage "dev"), each with why no exact resource can be written.
WILDCARDS = {
    ("ecr:GetAuthorizationToken", "*"): "the action takes no resource",
    **{
        (
            "cloudwatch:PutMetricData",
            f"*?namespace=/aws/sagemaker/{kind}Jobs",
        ): "no resource; the namespace is"
        for kind in ("Training", "Transform")
    },
    **{
        (a, f"arn:aws:ecr:{ARN}:repository/*"): "the repository is ModelImageUri's, a parameter" for a in PULL
    },
    **{
        (a, f"arn:aws:logs:{ARN}:log-group:/aws/sagemaker/{kind}Jobs:*"): "SageMaker names a stream per job"
        for a in (
            "logs:CreateLogGroup",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "logs:DescribeLogStreams",
        )
        for kind in ("Training", "Transform")
    },
}


def _s3(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


def _always(kind: str, image: str) -> set[tuple[str, str]]:
    """What every job of `kind` needs: its image from ECR, its log group, its metric namespace."""
    repository = image.split("/", 1)[1].split(":")[0]
    pulls = {(a, f"arn:aws:ecr:{ARN}:repository/{repository}") for a in PULL}
    logs = {(a, f"arn:aws:logs:{ARN}:log-group:/aws/sagemaker/{kind}Jobs:log-stream:job") for a in LOGS}
    metrics = ("cloudwatch:PutMetricData", f"*?namespace=/aws/sagemaker/{kind}Jobs")
    return {("ecr:GetAuthorizationToken", "*"), *pulls, *logs, metrics}


def training_needs(request: dict) -> set[tuple[str, str]]:
    """(action, resource) a CreateTrainingJob request needs of its role."""
    needs = _always("Training", request["AlgorithmSpecification"]["TrainingImage"])
    for channel in request["InputDataConfig"]:
        bucket, prefix = _s3(channel["DataSource"]["S3DataSource"]["S3Uri"])
        needs |= {("s3:ListBucket", f"arn:aws:s3:::{bucket}?prefix={prefix}"),
                  ("s3:GetObject", f"arn:aws:s3:::{bucket}/{prefix}*")}  # fmt: skip
    bucket, prefix = _s3(request["OutputDataConfig"]["S3OutputPath"])
    return needs | {("s3:PutObject", f"arn:aws:s3:::{bucket}/{prefix}{request['TrainingJobName']}/output/*")}


def transform_needs(model: dict, job: dict, manifest: list) -> set[tuple[str, str]]:
    """(action, resource) a CreateModel and CreateTransformJob pair needs of the model's role."""
    container = model["PrimaryContainer"]
    needs = _always("Transform", container["Image"]) | {
        ("s3:GetObject", "arn:aws:s3:::" + "/".join(_s3(container["ModelDataUrl"])))
    }
    needs.add(
        (
            "s3:GetObject",
            "arn:aws:s3:::" + "/".join(_s3(job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"])),
        )
    )
    prefix = manifest[0]["prefix"].removeprefix("s3://")
    needs |= {("s3:GetObject", f"arn:aws:s3:::{prefix}{key}") for key in manifest[1:]}
    bucket, out = _s3(job["TransformOutput"]["S3OutputPath"])
    return needs | {("s3:PutObject", f"arn:aws:s3:::{bucket}/{out}*")}


def granted(logical: str) -> set[tuple[str, str]]:
    """(action, resource) pairs the role allows; a condition on the prefix or namespace joins the resource."""
    stack = DeployedStack(deployed())
    pairs = set()
    for policy in deployed()["Resources"][logical]["Properties"]["Policies"]:
        for st in policy["PolicyDocument"]["Statement"]:
            assert st["Effect"] == "Allow"
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            condition = stack.resolve(st.get("Condition", {}))
            suffix = "".join(
                f"?{k.split(':')[1]}={v}" for test in condition.values() for k, v in test.items()
            )
            pairs |= {(a, str(stack.resolve(r)) + suffix) for a in actions for r in resources}
    return pairs


def _prefix(action: str, resource: str) -> bool:
    """An S3 grant on a key prefix: its wildcard is the prefix's end, not a lack of precision."""
    return action.startswith("s3:") and resource.endswith("/*")


def compare(needs: set[tuple[str, str]], grants: set[tuple[str, str]]) -> list[str]:
    def covers(grant: tuple[str, str], need: tuple[str, str]) -> bool:
        return grant[0] == need[0] and fnmatch.fnmatchcase(need[1], grant[1])

    problems = [
        f"not allowed: {a} on {r}" for a, r in sorted(needs) if not any(covers(g, (a, r)) for g in grants)
    ]
    problems += [f"allowed, never needed: {a} on {r}" for a, r in sorted(grants)
                 if not any(covers((a, r), n) for n in needs)]  # fmt: skip
    problems += [f"wildcard not listed: {a} on {r}" for a, r in sorted(grants)
                 if "*" in r and (a, r) not in WILDCARDS and not _prefix(a, r)]  # fmt: skip
    return problems


def _capture(client, calls: dict) -> None:  # noqa: ANN001 - a boto3 client
    def keep(params: dict, model, **_: object) -> None:  # noqa: ANN001
        calls[model.name] = json.loads(json.dumps(params, default=str))

    client.meta.events.register("provide-client-params.sagemaker.*", keep)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    for k, v in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="ivadas-models")
        yield Context("dev", "ivadas-models", "123456789012.dkr.ecr.us-east-1.amazonaws.com/ivadas-model:1")


def training_request(ctx: Context, tmp_path: Path) -> dict:
    """The CreateTrainingJob request `ivadas train --on sagemaker` sends for one class (data uploaded by the
    command, with a --config-from artifact)."""
    from infra.cloud.train import Job, Plan, _config_channel, _session, upload_class
    from tests.conftest import make_mvtec

    root = make_mvtec(tmp_path, "widget", n_train=1)
    (tmp_path / "config.tar.gz").write_bytes(b"an artifact")
    args = argparse.Namespace(instance_type="ml.m5.xlarge", max_run_hours=1.0)
    plan = Plan(ctx, args, {}, f"arn:aws:iam::{ACCOUNT}:role/ivadas-dev-training", None, _session())
    plan.config_url = _config_channel(ctx, str(tmp_path / "config.tar.gz"))
    calls: dict = {}
    _capture(plan.session.sagemaker_client, calls)
    plan.start(Job("widget", "ivadas-dev-widget-job", upload_class(ctx, root, "widget")))
    return calls["CreateTrainingJob"]


def transform_requests(ctx: Context, model: str) -> tuple[dict, dict, list]:
    """The CreateModel and CreateTransformJob requests `ivadas rescore` sends for one class with a version of
    `model`, and its manifest."""
    from infra.cloud.rescore import create_model, start_job
    from infra.lifecycle.registry import ModelVersion

    url = f"s3://ivadas-models/dev/{model}/0123456789abcdef/model.tar.gz"
    version = ModelVersion(f"{model}-2", model, 2, "arn", "Approved", None, url, ctx.image_uri, None, {})
    args = argparse.Namespace(role_arn=f"arn:aws:iam::{ACCOUNT}:role/ivadas-dev-transform", concurrency=2,
                              instance_type="ml.m5.xlarge")  # fmt: skip
    calls: dict = {}
    _capture(ctx.sagemaker, calls)
    run = f"2601010000{len(model)}"
    create_model(ctx, args, version, run)
    items = [{"bucket": INBOX, "key": f"line1/widget/{i}.png"} for i in range(3)]
    start_job(ctx, args, version, run, "widget", items)
    bucket, key = _s3(calls["CreateTransformJob"]["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"])
    manifest = json.loads(ctx.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return calls["CreateModel"], calls["CreateTransformJob"], manifest


def test_the_training_role_allows_what_a_training_job_needs_and_nothing_more(
    aws: Context, tmp_path: Path
) -> None:
    request = training_request(aws, tmp_path)
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train", "config"]
    assert compare(training_needs(request), granted("TrainingRole")) == []


def test_the_transform_role_allows_what_a_rescore_needs_and_nothing_more(aws: Context) -> None:
    """Either model's versions re-score the backlog."""
    needs = set().union(*(transform_needs(*transform_requests(aws, m)) for m in ("patchcore", "softpatch")))
    assert compare(needs, granted("TransformRole")) == []


def test_the_check_fails_on_a_need_not_allowed_and_a_grant_not_used(aws: Context, tmp_path: Path) -> None:
    request = training_request(aws, tmp_path)
    needs, grants = training_needs(request), granted("TrainingRole")
    elsewhere = {**request, "OutputDataConfig": {"S3OutputPath": "s3://ivadas-models/other/"}}
    assert compare(training_needs(elsewhere), grants)[0].startswith(
        "not allowed: s3:PutObject on arn:aws:s3:::ivadas-models/other/"
    )
    extra = ("s3:GetObject", "arn:aws:s3:::ivadas-models/dev/*")
    assert (
        compare(needs, grants | {extra})
        == [
            f"allowed, never needed: {extra[0]} on {extra[1]}",
            f"wildcard not listed: {extra[0]} on {extra[1]}",
        ][:1]
    )
