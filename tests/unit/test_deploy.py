"""`make deploy` (ivadas deploy-stack) without AWS: the command lines it builds, the parameters of each `sam
deploy`, its steps against moto (each one idempotent), its dry run, and docs/deploying.md showing what the
dry run prints."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from infra.deploy import examples, image, stack, steps
from infra.deploy.recorder import Recorder
from infra.template import MODEL_DATA_URL_PARAMETERS, load_template
from ivadas_contract.models import MODELS, deployed_url_parameter

ROOT = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"


# ------------------------------------------------------------------------------------------ command lines
def test_the_image_is_built_for_sagemaker_and_pushed_as_one_docker_manifest() -> None:
    uri = image.image_uri("123456789012", REGION, "abc")
    assert uri == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ivadas-model-server:abc"
    argv = image.build_argv(uri)
    assert argv[:3] == ["docker", "buildx", "build"] and argv[-1] == "."
    assert argv[argv.index("--platform") + 1] == "linux/amd64"
    assert "--provenance=false" in argv and "--sbom=false" in argv  # attestations make an OCI index
    assert argv[argv.index("--output") + 1] == "type=registry,oci-mediatypes=false"
    assert argv[argv.index("--file") + 1] == "model_server/Dockerfile" and (ROOT / image.DOCKERFILE).is_file()
    assert argv[argv.index("--tag") + 1] == uri
    login = image.login_argv("123456789012", REGION)
    assert login[:2] == ["docker", "login"] and "--password-stdin" in login  # never the token in argv
    assert login[-1] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com"


def test_the_image_tag_is_the_commit_and_changes_with_uncommitted_code(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    code, doc = tmp_path / "model_server" / "a.py", tmp_path / "docs" / "a.md"
    for path in (code, doc):
        path.parent.mkdir()
        path.write_text("1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "c")
    clean = image.default_tag(tmp_path)
    assert clean == git("rev-parse", "--short=12", "HEAD").strip()
    doc.write_text("2\n")
    assert image.default_tag(tmp_path) == clean  # not in the image
    code.write_text("2\n")
    dirty = image.default_tag(tmp_path)
    assert dirty.startswith(clean + "-dirty-") and dirty == image.default_tag(tmp_path)
    code.write_text("3\n")
    assert image.default_tag(tmp_path) != dirty  # other changes, another tag (ECR's tags are immutable)


def test_the_tag_covers_what_the_dockerfile_copies() -> None:
    copied = re.findall(r"^COPY (.+) \S+$", (ROOT / image.DOCKERFILE).read_text(), flags=re.MULTILINE)
    assert sorted(s for line in copied for s in line.split()) == sorted(image.IMAGE_INPUTS)


def test_sam_deploy_passes_the_stages_own_names_and_the_capabilities() -> None:
    parameters = stack.stage_parameters("prod", "IMAGE", "BUCKET")
    argv = stack.deploy_argv("prod", REGION, {**parameters, "AlarmEmail": ""})
    assert argv[:2] == ["sam", "deploy"] and argv[argv.index("--stack-name") + 1] == "ivadas-prod"
    assert argv[argv.index("--region") + 1] == REGION
    capabilities = argv[argv.index("--capabilities") + 1 : argv.index("--resolve-s3")]
    assert capabilities == ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]
    overrides = argv[argv.index("--parameter-overrides") + 1 :]
    assert "PatchCoreModelDataUrl=/ivadas/prod/patchcore/model-data-url" in overrides
    assert not any(o.startswith("AlarmEmail=") for o in overrides)  # empty: the template's default
    assert "--no-fail-on-empty-changeset" in argv  # an unchanged stack is not an error
    waf = stack.waf_deploy_argv("prod", {"Stage": "prod"})
    assert (
        waf[waf.index("--region") + 1] == "us-east-1"
        and waf[waf.index("--template-file") + 1] == stack.WAF_TEMPLATE
    )


def test_every_ssm_parameter_the_template_resolves_is_one_the_stage_writes() -> None:
    """An SSM parameter with a default would make one stage read another's artifact; the names deploy-stack
    passes are the ones it, `ivadas deploy` and the local stack write for that stage."""
    declared = load_template()["Parameters"]
    resolved = {n: p for n, p in declared.items() if p["Type"].startswith("AWS::SSM::Parameter::Value")}
    assert set(resolved) == set(MODEL_DATA_URL_PARAMETERS.values())
    assert not [n for n, p in resolved.items() if "Default" in p]
    passed = stack.stage_parameters("prod", "IMAGE", "BUCKET")
    for model, name in MODEL_DATA_URL_PARAMETERS.items():
        assert passed[name] == deployed_url_parameter("prod", model) == f"/ivadas/prod/{model}/model-data-url"


@pytest.mark.parametrize("stage", ["Prod", "prod_1", "a" * 17, "", "local"])
def test_a_stage_that_cannot_name_the_resources_is_refused_before_any_call(stage: str) -> None:
    import argparse

    from infra.deploy import command
    from model_server.errors import IvadasError

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    with pytest.raises(IvadasError, match="--stage"):
        command.request_from_args(parser.parse_args(["--stage", stage, "--region", REGION]))
    request = command.request_from_args(parser.parse_args(["--stage", "prod-2", "--region", REGION]))
    assert request.stage == "prod-2"


# ------------------------------------------------------------------------------------------ sam deploy runs
def test_a_new_stack_is_created_unprotected_then_protected() -> None:
    wanted = {"Stage": "dev", "AlarmEmail": "ops@example.com"}
    first, second = stack.deploy_passes(None, wanted)
    assert (
        first["UserPoolDeletionProtection"] == "INACTIVE" and second["UserPoolDeletionProtection"] == "ACTIVE"
    )
    assert {k: v for k, v in first.items() if k != "UserPoolDeletionProtection"} == {
        k: v for k, v in second.items() if k != "UserPoolDeletionProtection"
    }


def test_a_second_deploy_keeps_what_the_stack_has() -> None:
    existing = {"Stage": "dev", "AlarmEmail": "ops@example.com", "UiOrigin": "https://ui.example",
                "UserPoolDeletionProtection": "ACTIVE", "Retired": "x"}  # fmt: skip
    (only,) = stack.deploy_passes(existing, {"Stage": "dev", "ModelImageUri": "new"})
    assert only["AlarmEmail"] == "ops@example.com" and only["UiOrigin"] == "https://ui.example"
    assert only["ModelImageUri"] == "new" and "Retired" not in only  # a parameter the template dropped


def test_an_instance_type_change_turns_scaling_off_first() -> None:
    existing = {"Stage": "dev", "EndpointInstanceType": "ml.m5.large", "EndpointAutoScaling": "true"}
    off, on = stack.deploy_passes(existing, {"EndpointInstanceType": "ml.c5.xlarge"})
    assert (off["EndpointInstanceType"], off["EndpointAutoScaling"]) == ("ml.m5.large", "false")
    assert (on["EndpointInstanceType"], on["EndpointAutoScaling"]) == ("ml.c5.xlarge", "true")
    unscaled = {**existing, "EndpointAutoScaling": "false"}
    assert len(stack.deploy_passes(unscaled, {"EndpointInstanceType": "ml.c5.xlarge"})) == 1
    assert len(stack.deploy_passes(existing, {"EndpointInstanceType": "ml.m5.large"})) == 1


# ------------------------------------------------------------------------------------------ the steps on moto
class _Recorder(Recorder):
    """A real run against moto; docker and sam are recorded, and a push puts the image ECR would hold."""

    def __init__(self, dry_run: bool, lines: list[str]) -> None:
        super().__init__(REGION, dry_run, out=lines.append)
        self.commands: list[list[str]] = []

    def run(self, argv, stdin=None) -> None:  # noqa: ANN001
        super().run(argv, stdin) if self.dry_run else self.out(f"  run {' '.join(argv)}")
        self.commands.append(list(argv))
        if not self.dry_run and argv[:3] == ["docker", "buildx", "build"]:
            tag = argv[argv.index("--tag") + 1].rsplit(":", 1)[1]
            examples.seed_image(self.client("ecr"), tag)


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")  # AmazonAPIGatewayPushToCloudWatchLogs
    with mock_aws():
        yield


def _deploy(artifacts: dict[str, Path], dry_run: bool) -> tuple[steps.Deploy, list[str], _Recorder]:
    lines: list[str] = []
    request = steps.Request("test", REGION, artifacts, admin_user="ana", admin_email="ana@example.com",
                            image_tag="t1")  # fmt: skip
    aws = _Recorder(dry_run, lines)
    return steps.Deploy(request, aws), lines, aws


def _account_steps(d: steps.Deploy, tls_policy: list[str] | None = None) -> None:
    for step in (steps.caller_account, steps.repository, steps.model_image, steps.model_bucket,
                 steps.first_artifacts, steps.api_gateway_logging):  # fmt: skip
        step(d)
        if step is steps.model_bucket and tls_policy is not None and not d.aws.dry_run:
            # moto applies a Deny without evaluating its condition (aws:SecureTransport): every upload would
            # be refused. Kept to check, then lifted.
            s3 = boto3.client("s3", region_name=REGION)
            tls_policy.append(s3.get_bucket_policy(Bucket=d.model_bucket)["Policy"])
            s3.delete_bucket_policy(Bucket=d.model_bucket)


def test_each_step_makes_what_is_missing_and_a_second_run_changes_nothing(
    moto, trained_artifact: Path, trained_softpatch: Path
) -> None:
    artifacts = {"patchcore": trained_artifact, "softpatch": trained_softpatch}
    d, lines, aws = _deploy(artifacts, dry_run=False)
    policy: list[str] = []
    _account_steps(d, policy)
    assert '"aws:SecureTransport": "false"' in policy[0]
    s3, ssm = boto3.client("s3", region_name=REGION), boto3.client("ssm", region_name=REGION)
    assert d.account == "123456789012" and d.model_bucket == "ivadas-test-models-123456789012-eu-west-1"
    assert s3.get_bucket_versioning(Bucket=d.model_bucket)["Status"] == "Enabled"
    assert s3.get_public_access_block(Bucket=d.model_bucket)["PublicAccessBlockConfiguration"][
        "BlockPublicPolicy"
    ]
    for model in MODELS:
        url = ssm.get_parameter(Name=deployed_url_parameter("test", model))["Parameter"]["Value"]
        bucket, key = url.removeprefix("s3://").split("/", 1)
        assert bucket == d.model_bucket and s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
    account = boto3.client("apigateway", region_name=REGION).get_account()
    assert account["cloudwatchRoleArn"].endswith(f"role/{steps.API_GATEWAY_LOGS_ROLE}")
    assert [c[:3] for c in aws.commands] == [["docker", "login", "--username"], ["docker", "buildx", "build"]]
    d, again, aws = _deploy(artifacts, dry_run=True)  # the second run, shown: it would write nothing
    _account_steps(d)
    assert not [line for line in again if "would" in line], "\n".join(again)
    assert any("already pushed" in line for line in again) and not aws.commands


def test_the_stack_the_ui_and_the_first_user(moto, monkeypatch: pytest.MonkeyPatch) -> None:
    """After sam deploy: the UI published from the stack's outputs, the first ML engineer made once."""
    cognito = boto3.client("cognito-idp", region_name=REGION)
    pool = cognito.create_user_pool(PoolName="ivadas-test-users")["UserPool"]["Id"]
    cognito.create_group(UserPoolId=pool, GroupName="ml-engineers")
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket="ui-b", CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    d, lines, aws = _deploy({}, dry_run=False)
    d.outputs = {"UserPoolId": pool, "UiBucketName": "ui-b", "ApiUrl": "https://api", "UserPoolClientId": "c",
                 "UiUrl": "https://d1.cloudfront.net"}  # fmt: skip
    d.web_acl = "arn:aws:wafv2:us-east-1:123456789012:global/webacl/x/y"
    steps.main_stack(d)
    builds, first, second = aws.commands
    assert builds[:2] == ["sam", "build"] and "UserPoolDeletionProtection=INACTIVE" in first
    assert "UserPoolDeletionProtection=ACTIVE" in second
    d.outputs = {"UserPoolId": pool, "UiBucketName": "ui-b", "ApiUrl": "https://api", "UserPoolClientId": "c",
                 "UiUrl": "https://d1.cloudfront.net"}  # fmt: skip
    steps.publish_ui(d)
    keys = {
        o["Key"] for o in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="ui-b")["Contents"]
    }
    assert {"index.html", "config.json"} <= keys
    for _ in range(2):  # idempotent
        steps.first_user(d)
    groups = cognito.admin_list_groups_for_user(UserPoolId=pool, Username="ana")["Groups"]
    assert [g["GroupName"] for g in groups] == ["ml-engineers"]
    assert sum("AdminCreateUser" in line for line in lines) == 1


# ------------------------------------------------------------------------------------------ the dry run
def test_a_dry_run_without_credentials_changes_nothing_and_shows_a_fresh_accounts_plan(
    monkeypatch: pytest.MonkeyPatch, trained_artifact: Path, trained_softpatch: Path
) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    from infra.deploy import command

    lines: list[str] = []
    request = steps.Request("dev", REGION, {"patchcore": trained_artifact, "softpatch": trained_softpatch},
                            alarm_email="ops@example.com", image_tag="t1")  # fmt: skip
    command.deploy(request, Recorder(REGION, dry_run=True, out=lines.append))
    text = "\n".join(lines)
    asked = [line for line in lines if line.startswith("  ask ")]
    assert asked and all(line.endswith("taken as absent") for line in asked)
    for call in (
        "ecr.CreateRepository",
        "s3.CreateBucket",
        "sagemaker.CreateModelPackage(",
        "ssm.PutParameter",
        "iam.CreateRole",
        "apigateway.UpdateAccount",
        "s3.PutObject(Bucket=OUTPUT.UiBucketName",
    ):
        assert f"would call {call}" in text, call
    runs = [line for line in lines if line.startswith("  would run ")]
    programs = [r.split()[2:4] for r in runs]
    waf, build, create, protect = ["sam", "deploy"], ["sam", "build"], ["sam", "deploy"], ["sam", "deploy"]
    assert programs == [["docker", "login"], ["docker", "buildx"], waf, build, create, protect]
    assert "AlarmEmail=ops@example.com" in runs[-1]


def test_make_deploy_passes_the_examples_options() -> None:
    """The page's make command lines run the deploy-stack options the examples were made with."""
    for variables in (examples.FRESH, examples.SECOND):
        words = shlex.split(examples.make_command(variables))
        # --no-print-directory: under `make test` the inherited MAKEFLAGS add "Entering directory" lines.
        make = ["make", "-n", "--no-print-directory", "-o", ".venv/.installed", *words[1:]]
        out = subprocess.run(make, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        line = out.replace("\\\n", " ").strip().splitlines()[-1]
        assert shlex.split(line) == [".venv/bin/ivadas", "deploy-stack", *examples.argv(variables)]


def _calls(block: str) -> list[str]:
    """The steps, AWS operations and commands a dry run shows, in order (what the page must keep up with)."""
    pattern = r"^(\[\d+/\d+\] .+|  (?:ask  |would call |would run )\S+?(?=\(| ))"
    return re.findall(pattern, block, flags=re.MULTILINE)


def test_the_deploy_page_lists_the_steps_make_deploy_takes() -> None:
    """docs/deploying.md's numbered steps are the command's, in its order."""
    page = (ROOT / "docs/deploying.md").read_text()
    listed = re.findall(r"^ ?\d+\. \*\*(.+?)\*\*", page, flags=re.MULTILINE)
    assert len(listed) == len(steps.STEPS)
    for shown, (title, _) in zip(listed, steps.STEPS, strict=True):
        assert title.lower().startswith(shown.lower()), (shown, title)


def test_the_deploy_page_shows_what_the_dry_runs_print(
    trained_artifact: Path, trained_softpatch: Path
) -> None:
    """The same calls and commands in the same order (the page's artifacts are make demo's; these are
    the tests')."""
    shown = examples.shown((ROOT / "docs/deploying.md").read_text())
    artifacts = ["--patchcore", str(trained_artifact), "--softpatch", str(trained_softpatch)]
    for name, block in examples.blocks(artifacts).items():
        assert _calls(shown[name]) == _calls(block), (
            f"docs/deploying.md's {name} dry run: python -m infra.deploy.examples"
        )
