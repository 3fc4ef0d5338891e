"""What CloudFormation is asked to create once SAM has translated template.yaml (tests/unit/sam_template.py):
the deploy-time defects cfn-lint, checkov and moto cannot see, each checked where AWS would hit it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.template import Stack, load_template
from ivadas_contract.errors import TYPES
from tests.unit.sam_template import of_type, translated

ROOT = Path(__file__).resolve().parents[2]


def _stage() -> tuple[str, dict]:
    """The API's one stage. A Deployment with a StageName creates a stage of that name too: SAM gives its
    Deployment `StageName: Stage` unless the Api sets OpenApiVersion."""
    stages = of_type(translated(), "AWS::ApiGateway::Stage")
    made_by_deployments = [
        d["Properties"]["StageName"]
        for d in of_type(translated(), "AWS::ApiGateway::Deployment").values()
        if "StageName" in d["Properties"]
    ]
    assert len(stages) == 1 and not made_by_deployments, (sorted(stages), made_by_deployments)
    return next(iter(stages.items()))


def test_the_api_has_one_stage_and_it_carries_the_waf_throttling_and_access_log() -> None:
    """A second stage would answer on the same functions without any of them (the Lambda permissions take
    every stage of the API)."""
    template = translated()
    logical, stage = _stage()
    props = stage["Properties"]
    assert props["StageName"] == {"Ref": "Stage"}
    assert props["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    throttled = [
        m for m in props["MethodSettings"] if m.get("ThrottlingRateLimit") and m["ResourcePath"] == "/*"
    ]
    assert throttled, props["MethodSettings"]
    association = template["Resources"]["ApiWebAclAssociation"]["Properties"]["ResourceArn"]["Fn::Sub"]
    assert association.endswith(f"/stages/${{{logical}}}")  # the stage's Ref is its name
    plans = of_type(template, "AWS::ApiGateway::UsagePlan").values()
    assert [s["Stage"] for p in plans for s in p["Properties"]["ApiStages"]] == [{"Ref": logical}]
    for name, permission in of_type(template, "AWS::Lambda::Permission").items():
        if permission["Properties"]["Principal"] == "apigateway.amazonaws.com":
            assert permission["Properties"]["SourceArn"]["Fn::Sub"][1]["__ApiId__"] == {"Ref": "Api"}, name


def test_both_endpoints_keep_what_auto_scaling_set() -> None:
    endpoints = of_type(translated(), "AWS::SageMaker::Endpoint")
    assert sorted(endpoints) == ["PatchCoreEndpoint", "SoftPatchEndpoint"]
    for name, endpoint in endpoints.items():
        assert endpoint["Properties"].get("RetainAllVariantProperties") is True, name


def test_alarms_publish_to_topics_cloudwatch_may_encrypt_for() -> None:
    """CloudWatch cannot use the AWS-managed SNS key; the topic's own key must let it (and is rotated)."""
    template = translated()
    resources = template["Resources"]
    topics = {
        action["Ref"]
        for alarm in of_type(template, "AWS::CloudWatch::Alarm").values()
        for key in ("AlarmActions", "OKActions", "InsufficientDataActions")
        for action in alarm["Properties"].get(key, [])
    }
    assert topics == {"AlarmTopic"}
    for topic in topics:
        key_ref = resources[topic]["Properties"]["KmsMasterKeyId"]
        assert isinstance(key_ref, dict) and "Ref" in key_ref, (
            f"{topic}: {key_ref} (alias/aws/sns cannot be used)"
        )
        key = resources[key_ref["Ref"]]
        assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
        grants = [
            s
            for s in key["Properties"]["KeyPolicy"]["Statement"]
            if s["Effect"] == "Allow" and s["Principal"].get("Service") == "cloudwatch.amazonaws.com"
        ]
        assert grants and {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(grants[0]["Action"])
    subscriptions = of_type(template, "AWS::SNS::Subscription")
    assert [s["Properties"]["TopicArn"] for s in subscriptions.values()] == [{"Ref": "AlarmTopic"}]
    assert [s["Properties"]["Endpoint"] for s in subscriptions.values()] == [{"Ref": "AlarmEmail"}]


def _gateway_responses() -> dict:
    return translated()["Resources"]["Api"]["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]


@pytest.mark.parametrize(
    "kind", ["DEFAULT_4XX", "DEFAULT_5XX", "UNAUTHORIZED", "ACCESS_DENIED", "WAF_FILTERED", "THROTTLED",
             "QUOTA_EXCEEDED", "INTEGRATION_TIMEOUT", "REQUEST_TOO_LARGE", "INVALID_API_KEY"],
)  # fmt: skip
def test_errors_api_gateway_makes_itself_carry_cors_and_the_one_error_shape(kind: str) -> None:
    """Cognito's 401, the WAF's 403, throttling's 429 and the 29 s timeout reach the UI readable: with its
    origin (the one the preflight allows), in {"error", "type"}."""
    body = translated()["Resources"]["Api"]["Properties"]["Body"]
    preflight = body["paths"]["/predict"]["options"]["x-amazon-apigateway-integration"]["responses"][
        "default"
    ]
    allowed = preflight["responseParameters"]["method.response.header.Access-Control-Allow-Origin"]
    assert allowed == "stageVariables.uiOrigin"
    response = _gateway_responses()[kind]
    assert response["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"] == allowed
    rendered = response["responseTemplates"]["application/json"].replace(
        "$context.error.messageString", json.dumps("Unauthorized")
    )
    document = json.loads(rendered)
    assert set(document) == {"error", "type"} and document["type"] in TYPES
    if "statusCode" in response:
        assert TYPES[document["type"]] == int(response["statusCode"])


def test_an_unknown_route_is_a_404_as_the_functions_answer_it() -> None:
    response = _gateway_responses()["MISSING_AUTHENTICATION_TOKEN"]
    assert (
        response["statusCode"] == "404"
        and '"type":"not_found"' in response["responseTemplates"]["application/json"]
    )


def test_cors_allows_the_ui_distribution_unless_told_otherwise() -> None:
    """The default is the stack's own CloudFront domain, never `*`; the functions read the same variable."""
    assert load_template()["Parameters"]["UiOrigin"]["Default"] == ""
    _, stage = _stage()
    variable = stage["Properties"]["Variables"]["uiOrigin"]
    assert variable == {
        "Fn::If": ["UiOriginGiven", {"Ref": "UiOrigin"}, {"Fn::Sub": "https://${UiDistribution.DomainName}"}]
    }
    from ivadas_functions.aws import UI_ORIGIN_VARIABLE

    assert UI_ORIGIN_VARIABLE == "uiOrigin"
    assert Stack(load_template(), {"UiOrigin": "https://ui.example"}).stage_variables() == {
        "uiOrigin": "https://ui.example"
    }


def test_the_cloudfront_web_acl_lives_in_its_own_us_east_1_stack() -> None:
    """AWS creates CloudFront-scope web ACLs only in us-east-1: in the main stack, they would pin SageMaker,
    the data and every bucket there."""
    for acl in of_type(translated(), "AWS::WAFv2::WebACL").values():
        assert acl["Properties"]["Scope"] == "REGIONAL"
    distribution = translated()["Resources"]["UiDistribution"]["Properties"]["DistributionConfig"]
    assert distribution["WebACLId"] == {
        "Fn::If": ["UiWebAclGiven", {"Ref": "UiWebAclArn"}, {"Ref": "AWS::NoValue"}]
    }
    waf = load_template(ROOT / "infra/ui_waf.yaml")
    assert [r["Properties"]["Scope"] for r in waf["Resources"].values()] == ["CLOUDFRONT"]
    assertion = waf["Rules"]["OnlyInUsEast1"]["Assertions"][0]["Assert"]
    assert assertion == {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]}
    assert waf["Outputs"]["UiWebAclArn"]["Value"] == {"Fn::GetAtt": ["UiWebAcl", "Arn"]}


def test_nothing_account_wide_and_nothing_left_behind_by_a_failed_first_create() -> None:
    """API Gateway's CloudWatch role is one per account and region: a stack that set it would overwrite
    another's, and take it away when deleted. A failed first create removes its user pool."""
    template = translated()
    assert not of_type(template, "AWS::ApiGateway::Account")
    pool = template["Resources"]["UserPool"]
    assert pool["DeletionPolicy"] == "RetainExceptOnCreate"
    assert pool["Properties"]["DeletionProtection"] == {"Ref": "UserPoolDeletionProtection"}


def test_cfn_lint_passes_on_the_translated_template(tmp_path: Path) -> None:
    """The graph as deployed (the raw template's one E3004 exception is cfn-lint reading SAM's Api as one
    resource); only SAM's own redundant DependsOn (W3005) may be left."""
    path = tmp_path / "translated.json"
    path.write_text(json.dumps(translated(), default=str))
    exe = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or "cfn-lint"
    proc = subprocess.run(
        [exe, "--ignore-checks", "W3005", "--", str(path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run([exe, str(ROOT / "infra/ui_waf.yaml")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
