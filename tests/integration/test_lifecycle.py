"""The model lifecycle against moto in server mode (the local stack's AWS, with its UpdateEndpoint): register
and its idempotence, list, approve, reject, deploy of an approved version, refusal of any other, rollback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from infra.cli import main
from infra.lifecycle import compare, endpoint_owner, promote, registry, rollout
from infra.lifecycle.context import Context
from infra.local.state import write_state
from infra.template import LOGICAL_PREFIX, Stack, load_template
from ivadas_contract.models import deployed_url_parameter, endpoint_name
from model_server.errors import IvadasError
from tests.integration.test_server import free_port

ROOT = Path(__file__).resolve().parents[2]
STAGE = "test"
BUCKET = "ivadas-test-models"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "infra.local.moto_server", "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2)  # noqa: S310 - local moto
            break
        except OSError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


SEED = f"s3://{BUCKET}/seed/model.tar.gz"


def _serves(name: str) -> str:
    """The artifact endpoint `name` serves (its config's model's data)."""
    sm = boto3.client("sagemaker")
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    )
    return sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])["PrimaryContainer"][
        "ModelDataUrl"
    ]


@pytest.fixture
def ctx(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Context:
    """A clean moto with the model bucket and the stack's patchcore endpoint serving the first artifact, as
    `make deploy` leaves them (the parameter written, the template's model and config created from it)."""
    urllib.request.urlopen(urllib.request.Request(moto_url + "/moto-api/reset", method="POST"))  # noqa: S310
    env = {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    context = Context(STAGE, BUCKET, "img:1", local=True)
    boto3.client("ssm").put_parameter(
        Name=deployed_url_parameter(STAGE, "patchcore"), Value=SEED, Type="String"
    )
    endpoint_owner.apply(context, "patchcore", 60)
    return context


def test_register_records_metrics_and_metadata_pending(ctx: Context, trained_artifact: Path) -> None:
    version, created = registry.register(ctx, trained_artifact, "patchcore")
    assert created and version.name == "patchcore-1" and version.status == registry.PENDING
    assert version.classes == ["widget"]
    assert version.metadata["content_sha256"] == registry.file_sha256(trained_artifact)
    assert len(version.metadata["data_fingerprint"]) == 64 and version.metadata["code_version"]
    bucket, key = version.metrics_url.removeprefix("s3://").split("/", 1)
    doc = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    widget = doc["classes"]["widget"]
    assert set(widget["metrics"]) >= {"image_auroc", "pixel_auroc", "aupro", "f1_max", "threshold",
                                      "recall_at_threshold", "false_positive_rate_at_threshold"}  # fmt: skip
    assert widget["metrics"]["image_auroc"] == pytest.approx(version.summary("image_auroc"), abs=1e-4)
    assert widget["hyperparameters"]["features"]["input_size"] == 64 and widget["data_fingerprint"]
    bucket, key = version.model_data_url.removeprefix("s3://").split("/", 1)
    assert (
        boto3.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"]
        == trained_artifact.stat().st_size
    )


def test_register_twice_makes_no_second_version(
    ctx: Context, trained_artifact: Path, retrained_artifact: Path
) -> None:
    first, _ = registry.register(ctx, trained_artifact, "patchcore")
    again, created = registry.register(ctx, trained_artifact, "patchcore")
    assert not created and again.arn == first.arn
    second, created = registry.register(ctx, retrained_artifact, "patchcore")
    assert created and second.name == "patchcore-2"
    assert [v.name for v in registry.versions(ctx, "patchcore")] == ["patchcore-1", "patchcore-2"]


def test_register_refuses_the_wrong_family(ctx: Context, trained_softpatch: Path) -> None:
    with pytest.raises(IvadasError, match="softpatch artifact, not patchcore"):
        registry.register(ctx, trained_softpatch, "patchcore")
    version, _ = registry.register(ctx, trained_softpatch, "softpatch")
    assert version.name == "softpatch-1"


def test_approve_and_reject_keep_the_decision(
    ctx: Context, trained_artifact: Path, retrained_artifact: Path
) -> None:
    registry.register(ctx, trained_artifact, "patchcore")
    registry.register(ctx, retrained_artifact, "patchcore")
    approved = registry.decide(ctx, "patchcore-1", registry.APPROVED, "passed line trial")
    assert approved.status == registry.APPROVED
    assert approved.metadata["decided_by"].startswith("arn:aws:")
    assert approved.metadata["decision_note"] == "passed line trial" and approved.metadata["decided_at"]
    rejected = registry.decide(ctx, "patchcore-2", registry.REJECTED, "misses scratches")
    assert rejected.status == registry.REJECTED and rejected.metadata["decision_note"] == "misses scratches"
    assert (
        approved.metadata["content_sha256"]
        == registry.get_version(ctx, "patchcore-1").metadata["content_sha256"]
    )
    with pytest.raises(IvadasError, match="no version patchcore-9"):
        registry.decide(ctx, "patchcore-9", registry.APPROVED, None)


def test_deploy_refuses_unapproved_and_rejected(ctx: Context, trained_artifact: Path) -> None:
    registry.register(ctx, trained_artifact, "patchcore")
    with pytest.raises(IvadasError, match="PendingManualApproval: only an approved version"):
        rollout.deploy(ctx, "patchcore", "patchcore-1")
    registry.decide(ctx, "patchcore-1", registry.REJECTED, "no")
    with pytest.raises(IvadasError, match="Rejected"):
        rollout.deploy(ctx, "patchcore", "patchcore-1")
    with pytest.raises(IvadasError, match="is a patchcore version"):
        rollout.deploy(ctx, "softpatch", "patchcore-1")
    assert _serves(endpoint_name(STAGE, "patchcore")) == SEED


def test_deploy_then_rollback(ctx: Context, trained_artifact: Path, retrained_artifact: Path) -> None:
    sm, ssm = boto3.client("sagemaker"), boto3.client("ssm")
    name = endpoint_name(STAGE, "patchcore")
    sm.update_endpoint_weights_and_capacities(  # what auto scaling does: three instances now
        EndpointName=name,
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}],
    )
    stack_config = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    v1, _ = registry.register(ctx, trained_artifact, "patchcore")
    v2, _ = registry.register(ctx, retrained_artifact, "patchcore")
    for v in (v1, v2):
        registry.decide(ctx, v.name, registry.APPROVED, None)
    first = rollout.deploy(ctx, "patchcore", "patchcore-1")
    assert first["previous"] == [{"version": None, "model_data_url": SEED}]
    with pytest.raises(sm.exceptions.ClientError):  # replaced, so deleted, as CloudFormation does
        sm.describe_endpoint_config(EndpointConfigName=stack_config)
    second = rollout.deploy(ctx, "patchcore", "patchcore-2")
    endpoint = sm.describe_endpoint(EndpointName=name)
    assert endpoint["EndpointConfigName"] == second["endpoint_config"] != first["endpoint_config"]
    assert endpoint["ProductionVariants"][0]["VariantName"] == "AllTraffic"
    assert endpoint["ProductionVariants"][0]["DesiredInstanceCount"] == 3  # variant properties retained
    url = ssm.get_parameter(Name=deployed_url_parameter(STAGE, "patchcore"))["Parameter"]["Value"]
    assert url == v2.model_data_url == _serves(name)  # what the template resolves at the next sam deploy
    with pytest.raises(IvadasError, match="already deployed"):
        rollout.deploy(ctx, "patchcore", "patchcore-2")

    back = rollout.rollback(ctx, "patchcore")
    assert back["version"] == "patchcore-1" and back["rolled_back_from"] == "patchcore-2"
    assert _serves(name) == v1.model_data_url  # a config made anew: the one patchcore-1 had is gone
    assert (
        ssm.get_parameter(Name=deployed_url_parameter(STAGE, "patchcore"))["Parameter"]["Value"]
        == v1.model_data_url
    )
    assert rollout.deployment(ctx, "patchcore")["version"] == "patchcore-1"
    rollout.rollback(ctx, "patchcore")  # to what make deploy put there first
    assert _serves(name) == SEED
    assert sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]["DesiredInstanceCount"] == 3
    with pytest.raises(IvadasError, match="no earlier deployment"):
        rollout.rollback(ctx, "patchcore")


def test_models_the_cli_makes_are_the_templates_network_isolated_ones(
    ctx: Context, trained_artifact: Path
) -> None:
    """The container only scores what it is sent: every model a rollout makes has EnableNetworkIsolation,
    as template.yaml's models do (locally; on AWS CloudFormation makes them from the template itself)."""
    stack = Stack(load_template())
    in_template = {
        stack.props(f"{prefix}Model")["EnableNetworkIsolation"] for prefix in LOGICAL_PREFIX.values()
    }
    assert in_template == {True}
    version = _approved(ctx, trained_artifact, "patchcore")
    record = rollout.deploy(ctx, "patchcore", version)
    sm = boto3.client("sagemaker")
    config = sm.describe_endpoint_config(EndpointConfigName=record["endpoint_config"])
    made = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert made["EnableNetworkIsolation"] is True


def _local_stack_state(folder: Path) -> list[str]:
    """A local stack's state file in `folder` that points the CLI at this moto: the CLI's arguments for it."""
    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    environment = {k: os.environ[k] for k in names}
    write_state(folder, {"resources": {"ModelBucket": BUCKET}, "environment": environment})
    return ["--stage", "local", "--state-dir", str(folder)]


def test_cli_walks_the_registry(
    ctx: Context, trained_artifact: Path, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """The commands on the local stack (its state file points them at this moto)."""
    where = _local_stack_state(tmp_path)
    assert main(["register", "--artifact", str(trained_artifact), "--model", "patchcore", *where]) == 0
    assert "registered patchcore-1: PendingManualApproval" in capsys.readouterr().out
    assert main(["deploy", "--model", "patchcore", "--version", "patchcore-1", *where]) == 2
    assert "only an approved version can be deployed" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a rejection needs its reason
        main(["reject", "patchcore-1", *where])
    assert main(["approve", "patchcore-1", "--note", "ok", *where]) == 0
    assert main(["deploy", "--model", "patchcore", "--version", "patchcore-1", *where]) == 0
    capsys.readouterr()
    assert main(["models", *where]) == 0
    out = capsys.readouterr().out
    print(out)
    assert out.startswith("version")
    row = next(line for line in out.splitlines() if line.startswith("patchcore-1"))
    assert "Approved" in row and "widget" in row and "deployed" in row and "moto" in row
    assert main(["reject", "patchcore-1", "--why", "late find", *where]) == 2
    assert "is deployed" in capsys.readouterr().err


def test_cli_keeps_a_decision_until_it_is_reopened(
    ctx: Context, trained_artifact: Path, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    where = _local_stack_state(tmp_path)
    assert main(["register", "--artifact", str(trained_artifact), "--model", "patchcore", *where]) == 0
    assert main(["reject", "patchcore-1", "--why", "misses scratches", *where]) == 0
    capsys.readouterr()
    assert main(["approve", "patchcore-1", "--note", "fine", *where]) == 2
    err = capsys.readouterr().err
    assert "is already Rejected" in err and "re-open" in err and len(err.strip().splitlines()) == 1

    def stored() -> registry.ModelVersion:
        return registry.shared.get_version(boto3.client("sagemaker"), "local", "patchcore-1")

    assert stored().metadata["decision_note"] == "misses scratches"
    with pytest.raises(SystemExit):  # a re-open needs its reason
        main(["reopen", "patchcore-1", *where])
    assert main(["reopen", "patchcore-1", "--why", "mislabelled set", *where]) == 0
    assert main(["approve", "patchcore-1", "--note", "relabelled", *where]) == 0
    history = stored().history
    assert [(h["decision"], h["note"]) for h in history] == [
        ("Rejected", "misses scratches"), ("Reopened", "mislabelled set"), ("Approved", "relabelled")
    ]  # fmt: skip


def _approved(ctx: Context, artifact: Path, model: str) -> str:
    version, _ = registry.register(ctx, artifact, model)
    registry.decide(ctx, version.name, registry.APPROVED, None)
    return version.name


def test_promote_refuses_and_then_promotes(
    ctx: Context, trained_artifact: Path, trained_softpatch: Path
) -> None:
    candidate, _ = registry.register(ctx, trained_softpatch, "softpatch")
    with pytest.raises(IvadasError, match="only an approved version can be promoted"):
        promote.promote(ctx, "softpatch", candidate.name)
    registry.decide(ctx, candidate.name, registry.APPROVED, None)
    with pytest.raises(IvadasError, match="production serves no registered version"):
        promote.promote(ctx, "softpatch", candidate.name)
    production = _approved(ctx, trained_artifact, "patchcore")
    rollout.deploy(ctx, "patchcore", production)
    # a labelled comparison (as `ivadas compare --data-root` stores it) where the candidate misses more
    metrics = {"image_auroc": 0.99, "pixel_auroc": 0.97, "aupro": 0.9, "recall_at_threshold": 0.95}
    worse = {**metrics, "recall_at_threshold": 0.90}
    stored = {"data_root": "plant-a", "baseline": {"version": production, "metrics": metrics}}
    stored["candidate"] = {"version": candidate.name, "metrics": worse}
    key = compare.comparison_key(STAGE, "widget", production, candidate.name)
    ctx.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(stored).encode())
    with pytest.raises(IvadasError, match=r"class widget: recall_at_threshold 0.9000 < 0.9500 .*plant-a"):
        promote.promote(ctx, "softpatch", candidate.name)
    endpoint = endpoint_name(STAGE, "patchcore")
    served = rollout.deployment(ctx, "patchcore")
    assert served["version"] == production
    stored["candidate"]["metrics"]["recall_at_threshold"] = 0.948  # within the 0.005 tolerance
    ctx.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(stored).encode())
    record, checked = promote.promote(ctx, "softpatch", candidate.name)
    assert record["version"] == candidate.name and record["promoted"] and record["endpoint"] == endpoint
    assert checked == [
        "widget: model cards: no metric worse by more than 0.005",
        "widget: labelled comparison on plant-a: no metric worse by more than 0.005",
        "widget: reviewed escapes not checked (stage test has no results table: no reviews to read)",
    ]
    config = boto3.client("sagemaker").describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    assert config == record["endpoint_config"] and _serves(endpoint) == candidate.model_data_url
    assert rollout.rollback(ctx, "patchcore")["version"] == production


def test_promotion_rule_per_metric_and_class() -> None:
    base = {"image_auroc": 0.99, "pixel_auroc": None, "aupro": 0.9, "recall_at_threshold": 0.8}
    assert promote.worse(base, {**base, "image_auroc": 0.986}) == []
    assert promote.worse(base, {**base, "pixel_auroc": 0.1}) == []  # unknown on one side: not compared
    (why,) = promote.worse(base, {**base, "aupro": 0.89})
    assert why.startswith("aupro 0.8900 < 0.9000")


def test_the_local_aws_adds_counters_atomically(ctx: Context) -> None:
    """Concurrent ADDs to one item all count, as on AWS (the stats counters rest on it)."""
    import threading

    ddb = boto3.client("dynamodb")
    ddb.create_table(TableName="counters", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}])  # fmt: skip

    def add() -> None:
        client = boto3.client("dynamodb")
        for _ in range(150):
            client.update_item(TableName="counters", Key={"k": {"S": "a"}}, UpdateExpression="ADD n :one",
                               ExpressionAttributeValues={":one": {"N": "1"}})  # fmt: skip

    threads = [threading.Thread(target=add) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ddb.get_item(TableName="counters", Key={"k": {"S": "a"}})["Item"]["n"]["N"] == "2400"


def test_the_endpoint_follower_waits_for_a_change_and_hears_of_it_at_once(
    ctx: Context, moto_url: str
) -> None:
    """The local stack's follower asks nothing while no endpoint changes, and swaps as a deployment lands."""
    import threading

    from infra.local.endpoints import EndpointFollower

    name = endpoint_name(STAGE, "patchcore")
    follower = EndpointFollower([], [name], "http://127.0.0.1:9", Path("."), moto_url)
    now = follower.changes(None, wait_s=0)
    started = time.monotonic()
    assert follower.changes(now, wait_s=1.0) == now and time.monotonic() - started >= 0.9  # it waited
    heard: dict[str, float] = {}

    def wait() -> None:
        heard["generation"] = follower.changes(now, wait_s=60)
        heard["at"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    sm = boto3.client("sagemaker")
    config = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    updated = time.monotonic()
    sm.update_endpoint(EndpointName=name, EndpointConfigName=config)
    waiter.join(timeout=30)
    assert heard["generation"] == now + 1 and heard["at"] - updated < 5
