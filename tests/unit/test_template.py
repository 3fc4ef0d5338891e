"""template.yaml: cfn-lint clean, and the settings the pipeline's guarantees rest on."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from infra.template import Stack, load_template
from ivadas_contract import models

ROOT = Path(__file__).resolve().parents[2]


def test_cfn_lint_passes() -> None:
    exe = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or "cfn-lint"
    proc = subprocess.run([exe, str(ROOT / "template.yaml")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_queue_outlives_the_worker_and_failures_are_partial() -> None:
    stack = Stack(load_template())
    queue = stack.resolve(stack.props("InspectionQueue"))
    worker_timeout = int(stack.resolve(stack.props("WorkerFunction")["Timeout"]))
    assert int(queue["VisibilityTimeout"]) >= 6 * worker_timeout
    assert queue["RedrivePolicy"]["deadLetterTargetArn"].endswith(":ivadas-dev-inspection-dlq")
    event = stack.sqs_event("WorkerFunction")
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_buckets_are_private_encrypted_and_tls_only() -> None:
    stack = Stack(load_template())
    buckets = [k for k, r in stack.resources.items() if r["Type"] == "AWS::S3::Bucket"]
    assert set(buckets) == {"InboxBucket", "ResultsBucket", "UiBucket"}
    policies = {stack.props(k)["Bucket"]["Ref"]: stack.props(k) for k, r in stack.resources.items()
                if r["Type"] == "AWS::S3::BucketPolicy"}  # fmt: skip
    for name in buckets:
        props = stack.props(name)
        assert all(props["PublicAccessBlockConfiguration"].values())
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        statements = policies[name]["PolicyDocument"]["Statement"]
        assert any(s["Effect"] == "Deny" and "aws:SecureTransport" in str(s["Condition"]) for s in statements)


def test_outputs_and_local_names() -> None:
    template = load_template()
    assert {"ApiUrl", "UiUrl", "InboxBucketName", "ResultsBucketName", "ResultsTableName"} <= set(
        template["Outputs"]
    )
    stack = Stack(template, {"Stage": "local"})
    assert stack.ref("InboxBucket") == "ivadas-local-inbox-123456789012"
    env = stack.function_environment("WorkerFunction")
    assert (
        env["PATCHCORE_ENDPOINT"] == "ivadas-local-patchcore"
        and env["RESULTS_TABLE"] == "ivadas-local-results"
    )
    routes = set(stack.api_routes())
    assert routes == {
        ("POST", "/predict", "PredictFunction"),
        ("POST", "/machine/predict", "PredictFunction"),
        ("GET", "/results", "ResultsFunction"),
        ("GET", "/results/{inspection_id}", "ResultsFunction"),
        ("GET", "/classes", "ResultsFunction"),
        ("GET", "/stats", "ResultsFunction"),
        ("POST", "/results/{inspection_id}/review", "ResultsFunction"),
        ("DELETE", "/results/{inspection_id}/review", "ResultsFunction"),
        ("GET", "/review-queue", "ResultsFunction"),
        ("POST", "/results/export", "ResultsFunction"),
        ("GET", "/models", "ModelsFunction"),
        ("POST", "/models/{version}/approve", "ModelsFunction"),
        ("POST", "/models/{version}/reject", "ModelsFunction"),
        ("POST", "/models/{version}/reopen", "ModelsFunction"),
        ("POST", "/models/{version}/deploy", "DeploymentsFunction"),
        ("POST", "/deployments/{model}/rollback", "DeploymentsFunction"),
        ("GET", "/models/{version}/promotion", "DeploymentsFunction"),
        ("POST", "/models/{version}/promote", "DeploymentsFunction"),
    }


def test_endpoints_scale_and_the_worker_cannot_outrun_them() -> None:
    stack = Stack(load_template(), {"Stage": "local"})
    for logical in ("PatchCore", "SoftPatch"):
        target = stack.props(f"{logical}ScalableTarget")
        endpoint = stack.resolve(stack.props(f"{logical}Endpoint")["EndpointName"])
        assert stack.resolve(target["ResourceId"]) == f"endpoint/{endpoint}/variant/{models.VARIANT}"
        assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
        policy = stack.props(f"{logical}ScalingPolicy")["TargetTrackingScalingPolicyConfiguration"]
        assert (
            policy["PredefinedMetricSpecification"]["PredefinedMetricType"]
            == "SageMakerVariantInvocationsPerInstance"
        )
    scaling = stack.sqs_event("WorkerFunction")["ScalingConfig"]
    assert int(scaling["MaximumConcurrency"]) >= 2


def test_dashboard_shows_the_metrics_the_functions_emit() -> None:
    """The dashboard body is JSON once substituted, and names every metric the worker and drift emit."""
    stack = Stack(load_template(), {"Stage": "local"})
    body = json.loads(stack.resolve(stack.props("Dashboard")["DashboardBody"]))
    text = json.dumps(body)
    emitted = set()
    for module in ("worker", "drift"):
        source = (ROOT / f"functions/ivadas_functions/{module}.py").read_text()
        emitted |= set(re.findall(r'(?:_metric\(|name=)"([A-Z][A-Za-z]+)"', source))
    assert {
        "ImagesInspected",
        "AnomaliesFound",
        "Rejected",
        "CandidateAgreement",
        "AnomalyRateDrift",
    } <= emitted
    assert all(name in text for name in emitted - {"EndpointLatency", "CandidateErrors", "ClassesDrifting"})
    alarm = stack.props("AnomalyRateDriftAlarm")
    assert alarm["MetricName"] == "ClassesDrifting" and "ClassesDrifting" in emitted


def test_results_bucket_keeps_reviewed_images_longer_and_expires_exports() -> None:
    from ivadas_contract import export

    stack = Stack(load_template(), {"Stage": "local"})
    rules = {r["Prefix"]: r for r in stack.props("ResultsBucket")["LifecycleConfiguration"]["Rules"]}
    assert set(rules) == {"heatmaps/", "results/", "reviewed/", export.PREFIX}  # no rule over every prefix
    assert rules[export.PREFIX]["ExpirationInDays"] == export.EXPIRE_DAYS
    assert rules["reviewed/"]["ExpirationInDays"] == {"Ref": "ReviewedImageRetentionDays"}
    policies = [
        p for p in stack.props("ResultsFunction")["Policies"] if isinstance(p, dict) and "Statement" in p
    ]
    statements = [st for pol in policies for st in pol["Statement"]]
    writes = {json.dumps(st["Resource"]) for st in statements if "s3:PutObject" in json.dumps(st["Action"])}
    assert writes == {
        json.dumps({"Fn::Sub": f"${{ResultsBucket.Arn}}/{p}*"}) for p in (export.PREFIX, "reviewed/")
    }


# ------------------------------------------------------------------------------------------ who gets in
def _csp(stack: Stack) -> dict[str, list[str]]:
    policy = stack.props("UiResponseHeadersPolicy")["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    text = stack.resolve(policy["ContentSecurityPolicy"]["ContentSecurityPolicy"])
    if isinstance(text, dict):  # Fn::Join
        sep, parts = text["Fn::Join"]
        text = sep.join(str(stack.resolve(p)) for p in parts)
    return {d.split()[0]: d.split()[1:] for d in text.split("; ")}


def test_ui_answers_carry_security_headers_fitting_the_ui() -> None:
    stack = Stack(load_template(), {"Stage": "local"})
    behaviour = stack.props("UiDistribution")["DistributionConfig"]["DefaultCacheBehavior"]
    assert behaviour["ResponseHeadersPolicyId"] == {"Ref": "UiResponseHeadersPolicy"}
    headers = stack.props("UiResponseHeadersPolicy")["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    assert int(headers["StrictTransportSecurity"]["AccessControlMaxAgeSec"]) >= 365 * 24 * 3600
    assert headers["FrameOptions"]["FrameOption"] == "DENY" and headers["ContentTypeOptions"]["Override"]
    assert headers["ReferrerPolicy"]["ReferrerPolicy"] in ("same-origin", "no-referrer", "strict-origin")
    csp = _csp(stack)
    assert csp["default-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]  # no inline script or style
    # what ui/ loads: only its own files (relative URLs), and it calls only config.json and the API
    page = (ROOT / "ui/index.html").read_text()
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', page) and "<script>" not in page
    assert "style=" not in page and "<style" not in page
    for module in (ROOT / "ui").glob("*.js"):  # every ES module of the console
        code = module.read_text()
        assert "innerHTML" not in code and 'setAttribute("style"' not in code, module.name
    assert any(s.startswith("https://") and ".execute-api." in s for s in csp["connect-src"])
    assert "data:" in csp["img-src"]  # the uploaded image and the heatmap are data: URLs
    for bucket in ("InboxBucket", "ResultsBucket"):  # presigned links (GET /results)
        assert f"https://{stack.ref(bucket)}.s3.amazonaws.com" in csp["img-src"]


def test_api_is_behind_a_waf_and_logs_every_request() -> None:
    stack = Stack(load_template(), {"Stage": "local"})
    association = stack.props("ApiWebAclAssociation")
    assert association["WebACLArn"] == {"Fn::GetAtt": ["ApiWebAcl", "Arn"]}
    assert "/restapis/${Api}/stages/${Api.Stage}" in association["ResourceArn"]["Fn::Sub"]
    acl = stack.props("ApiWebAcl")
    assert acl["Scope"] == "REGIONAL"
    rules = {r["Name"]: r for r in acl["Rules"]}
    assert "RateBasedStatement" in rules["rate-limit-per-ip"]["Statement"]
    common = rules["aws-common-rules"]["Statement"]["ManagedRuleGroupStatement"]
    # /predict bodies are base64 images: the common rules' 8 KB body limit must only count
    assert {"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}} in common["RuleActionOverrides"]
    logs = stack.props("Api")["AccessLogSetting"]
    assert logs["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    quoted = logs["Format"].replace("$context.error.messageString", '"message"')  # a quoted value itself
    assert json.loads(quoted)["requestId"] == "$context.requestId"  # one JSON object per line
    assert stack.props("ApiAccessLogGroup")["RetentionInDays"] == {"Ref": "AccessLogRetentionDays"}


def test_sagemaker_models_have_no_network() -> None:
    stack = Stack(load_template())
    models = [k for k, r in stack.resources.items() if r["Type"] == "AWS::SageMaker::Model"]
    assert sorted(models) == ["PatchCoreModel", "SoftPatchModel"]
    assert all(stack.props(m)["EnableNetworkIsolation"] is True for m in models)
