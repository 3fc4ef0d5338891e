"""template.yaml: cfn-lint clean, and the settings the pipeline's guarantees rest on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from infra.template import Stack, load_template

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
        ("GET", "/results", "ResultsFunction"),
        ("GET", "/results/{inspection_id}", "ResultsFunction"),
        ("GET", "/classes", "ResultsFunction"),
    }
