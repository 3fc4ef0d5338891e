"""The main stack's `sam build` and `sam deploy` command lines, and the parameters each deploy passes: the
stage's own names (never a template default naming another stage), what the stack already has (so a second
`make deploy` changes nothing it was not told to), and what was asked for this time."""

from __future__ import annotations

from infra.template import MODEL_DATA_URL_PARAMETERS, load_template, stack_name
from ivadas_contract.models import deployed_url_parameter

BUILD_DIR = ".aws-sam/build"
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]
#: The us-east-1 stack of the UI's CloudFront web ACL (infra/ui_waf.yaml).
WAF_TEMPLATE = "infra/ui_waf.yaml"
WAF_REGION = "us-east-1"


def waf_stack_name(stage: str) -> str:
    return f"{stack_name(stage)}-ui-waf"


def model_bucket(stage: str, account: str, region: str) -> str:
    """The stage's artifact bucket, in the stack's region (the endpoints read it there)."""
    return f"ivadas-{stage}-models-{account}-{region}"


def stage_parameters(stage: str, image: str, bucket: str) -> dict[str, str]:
    """What make deploy always passes: the stage, its image and bucket, and the names of the SSM parameters
    of its own artifacts (the same names `ivadas deploy --stage` writes)."""
    urls = {name: deployed_url_parameter(stage, model) for model, name in MODEL_DATA_URL_PARAMETERS.items()}
    return {"Stage": stage, "ModelImageUri": image, "ModelBucketName": bucket, **urls}


def deploy_passes(existing: dict[str, str] | None, wanted: dict[str, str]) -> list[dict[str, str]]:
    """The parameter sets of the `sam deploy` runs one `make deploy` needs, in order.

    `existing`: the stack's parameters now (None: no stack). `wanted`: what this deploy asks for. Kept from
    the stack: every parameter the template still declares and this deploy does not set. Two runs where one
    cannot do it: a new stack is created with its user pool's deletion protection off (a failed first create
    then removes the pool) and turned on by a second run; an instance type change first removes auto scaling
    (SageMaker refuses to change a scaled variant's type), then changes the type with scaling back on."""
    declared = load_template()["Parameters"]
    final = {k: v for k, v in (existing or {}).items() if k in declared}
    final.update(wanted)
    final.setdefault("UserPoolDeletionProtection", "ACTIVE")
    if existing is None:
        return [{**final, "UserPoolDeletionProtection": "INACTIVE"}, final]
    default_type = str(declared["EndpointInstanceType"]["Default"])
    before = existing.get("EndpointInstanceType", default_type)
    scaled = existing.get("EndpointAutoScaling", "true") == "true"
    if final.get("EndpointInstanceType", default_type) != before and scaled:
        return [{**final, "EndpointInstanceType": before, "EndpointAutoScaling": "false"}, final]
    return [final]


def build_argv() -> list[str]:
    return ["sam", "build", "--template-file", "template.yaml", "--build-dir", BUILD_DIR]


def deploy_argv(stage: str, region: str, parameters: dict[str, str]) -> list[str]:
    """sam deploy of the built template; an empty value is left out (the template's default is empty)."""
    overrides = [f"{k}={v}" for k, v in sorted(parameters.items()) if v != ""]
    return [
        "sam", "deploy",
        "--template-file", f"{BUILD_DIR}/template.yaml",
        "--stack-name", stack_name(stage),
        "--region", region,
        "--capabilities", *CAPABILITIES,
        "--resolve-s3",
        "--no-confirm-changeset",
        "--no-fail-on-empty-changeset",
        "--tags", f"ivadas:stage={stage}",
        "--parameter-overrides", *overrides,
    ]  # fmt: skip


def waf_deploy_argv(stage: str, parameters: dict[str, str]) -> list[str]:
    return [
        "sam", "deploy",
        "--template-file", WAF_TEMPLATE,
        "--stack-name", waf_stack_name(stage),
        "--region", WAF_REGION,
        "--no-confirm-changeset",
        "--no-fail-on-empty-changeset",
        "--tags", f"ivadas:stage={stage}",
        "--parameter-overrides", *(f"{k}={v}" for k, v in sorted(parameters.items())),
    ]  # fmt: skip
