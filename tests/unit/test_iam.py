"""Each function's IAM policy allows exactly the AWS calls its code makes, on exactly the resources it makes
them on (moto never checks IAM: without this, a denied call shows first on AWS).

The calls come from the code (aws_calls.py: AST, followed from the handler); the grants from the template as
SAM deploys it (samtranslator's transform, which expands SAM policy templates into each function's role).
Compared both ways: a call no statement allows, and a statement no call needs, fail. A wildcard resource is
allowed only where listed below with its reason. SAM's own managed policies (logs, X-Ray, SQS polling) are
the runtime's, not the code's, and are not compared.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

from infra.template import ACCOUNT, REGION, Stack, load_template
from tests.unit.aws_calls import FUNCTIONS, Call, aws_calls
from tests.unit.sam_template import translated as deployed

ARN = f"{REGION}:{ACCOUNT}"
#: Wildcard grants, each with why no exact ARN can be written (Stage "dev").
WILDCARDS = {
    ("sagemaker:ListModelPackages", "*"): "the action takes no resource (AWS's authorization reference)",
    **{
        (f"sagemaker:{action}", f"arn:aws:sagemaker:{ARN}:model-package/ivadas-dev-{model}/*"): (
            "one model's versions: the registry numbers each version when it is registered"
        )
        for action in ("DescribeModelPackage", "UpdateModelPackage")
        for model in ("patchcore", "softpatch")
    },
    **{
        (f"sagemaker:{action}", f"arn:aws:sagemaker:{ARN}:{kind}/*"): (
            "CloudFormation names the endpoints' models and configs (a generated suffix per replacement)"
        )
        for action, kind in (
            ("DescribeEndpointConfig", "endpoint-config"),
            ("CreateEndpointConfig", "endpoint-config"),
            ("DeleteEndpointConfig", "endpoint-config"),
            ("DescribeModel", "model"),
            ("CreateModel", "model"),
            ("DeleteModel", "model"),
            ("AddTags", "model"),
            ("AddTags", "endpoint-config"),
            ("ListTags", "model"),
            ("ListTags", "endpoint-config"),
        )
    },  # fmt: skip
    **{
        (f"cloudformation:{action}", f"arn:aws:cloudformation:{ARN}:stack/ivadas-dev/*"): (
            "this stack: its ARN ends in an id CloudFormation makes when it creates the stack"
        )
        for action in ("DescribeStacks", "UpdateStack")
    },
}
#: Grants no call of the code makes: what CloudFormation does with the Deployments function's credentials
#: during the stack update the function starts (no service role: docs/decisions.md, "Deploying from the
#: console"). Each must still be as narrow as the update allows.
ON_BEHALF = {
    "DeploymentsFunction": {
        "cloudformation:CreateChangeSet": "the update runs the template's SAM transform again",
        "ssm:GetParameters": "CloudFormation resolves the two model-data-url parameters",
        "sagemaker:CreateModel": "the replacement model",
        "sagemaker:DeleteModel": "the replaced model",
        "sagemaker:CreateEndpointConfig": "the replacement config",
        "sagemaker:DeleteEndpointConfig": "the replaced config",
        "sagemaker:UpdateEndpoint": "the endpoint onto the replacement config",
        "iam:PassRole": "CreateModel hands SageMaker the endpoints' execution role",
        "sagemaker:AddTags": "the stack's tags on the replacement model and config",
        "sagemaker:ListTags": "CloudFormation reads back the tags of what it created",
    }
}


class DeployedStack(Stack):
    """infra.template's resolver, plus what policies name: table ARNs and Fn::Sub with variables."""

    def get_att(self, name: str, attribute: str) -> object:
        if attribute == "Arn" and self.resources[name]["Type"] == "AWS::DynamoDB::Table":
            return f"arn:aws:dynamodb:{ARN}:table/{self.ref(name)}"
        if attribute == "Arn" and self.resources[name]["Type"] == "AWS::IAM::Role":
            return f"arn:aws:iam::{ACCOUNT}:role/{name}"  # CloudFormation names it; the logical id stands in
        return super().get_att(name, attribute)

    def resolve(self, value: object) -> object:
        if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), list):
            text, variables = value["Fn::Sub"]
            for key, val in variables.items():
                text = text.replace("${" + key + "}", str(self.resolve(val)))
            return self.sub(text)
        return super().resolve(value)


def functions() -> dict[str, str]:
    """Function logical id -> handler module."""
    return {
        logical: r["Properties"]["Handler"].rsplit(".", 1)[0]
        for logical, r in load_template()["Resources"].items()
        if r["Type"] == "AWS::Serverless::Function"
    }


def _normal(arn: str) -> str:
    """A grant's resource as compared: an S3 object ARN as its bucket, a DynamoDB index as its table."""
    if arn.startswith("arn:aws:s3:::"):
        return arn.split("/", 1)[0]
    if arn.startswith("arn:aws:dynamodb:") and "/index/" in arn:
        return arn.split("/index/", 1)[0]
    return arn


def granted(logical: str) -> set[tuple[str, str]]:
    """(action, resource ARN) pairs the function's role allows."""
    stack = DeployedStack(deployed())
    role = deployed()["Resources"][f"{logical}Role"]["Properties"]
    pairs = set()
    for policy in role.get("Policies", []):
        for st in policy["PolicyDocument"]["Statement"]:
            assert st["Effect"] == "Allow", f"{logical}: only Allow statements are compared"
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            pairs |= {(a, _normal(str(stack.resolve(r)))) for a in actions for r in resources}
    return pairs


def _arn(call: Call, resource: tuple | None, env: dict[str, str], stack: Stack) -> str:
    if resource is None:
        return "?"  # not statically known: any grant of the action covers it (wildcards are listed)
    if resource[0] == "env":
        assert resource[1] in env, f"{call.where} reads {resource[1]}, which the template does not set"
        name = env[resource[1]]
    else:  # the bucket an S3 event names: the one whose notifications feed the queue
        name = next(stack.ref(k) for k, r in stack.resources.items() if r["Type"] == "AWS::S3::Bucket"
                    and "NotificationConfiguration" in r["Properties"])  # fmt: skip
    return {
        "s3": f"arn:aws:s3:::{name}",
        "dynamodb": f"arn:aws:dynamodb:{ARN}:table/{name}",
        "sagemaker-runtime": f"arn:aws:sagemaker:{ARN}:endpoint/{name}",
        "sqs": f"arn:aws:sqs:{ARN}:{name}",
    }[call.service]


def needed(logical: str, calls: set[Call]) -> dict[tuple[str, str], list[str]]:
    """(action, resource ARN) -> where the code needs it."""
    stack = Stack(load_template())
    env = stack.function_environment(logical)
    out: dict[tuple[str, str], list[str]] = {}
    for call in calls:
        for action, resource in call.actions():
            out.setdefault((action, _arn(call, resource, env, stack)), []).append(call.where)
    return out


def compare(
    need: dict[tuple[str, str], list[str]],
    grants: set[tuple[str, str]],
    on_behalf: dict[str, str] | None = None,
) -> list[str]:
    """Every problem: a call not allowed, a grant not used (unless CloudFormation uses it on the function's
    behalf), a wildcard not listed."""
    grants_compared = {g for g in grants if g[0] not in (on_behalf or {})}

    def covers(grant: tuple[str, str], want: tuple[str, str]) -> bool:
        return grant[0] == want[0] and (want[1] == "?" or fnmatch.fnmatchcase(want[1], grant[1]))

    problems = [f"not allowed: {a} on {r} ({', '.join(sorted(set(need[(a, r)])))})"
                for a, r in sorted(need) if not any(covers(g, (a, r)) for g in grants)]  # fmt: skip
    problems += [f"allowed, never called: {a} on {r}" for a, r in sorted(grants_compared)
                 if not any(covers((a, r), w) for w in need)]  # fmt: skip
    problems += [f"wildcard not listed: {a} on {r}" for a, r in sorted(grants)
                 if "*" in r and (a, r) not in WILDCARDS]  # fmt: skip
    return problems


@pytest.mark.parametrize("logical", sorted(functions()))
def test_policy_allows_exactly_the_calls_the_code_makes(logical: str) -> None:
    calls, unfindable = aws_calls(functions()[logical])
    assert not unfindable, unfindable
    assert calls, f"{logical}: no AWS call found: the finder no longer sees its calls"
    problems = compare(needed(logical, calls), granted(logical), ON_BEHALF.get(logical))
    assert not problems, f"{logical}:\n" + "\n".join(problems)


def test_the_check_fails_on_a_missing_and_on_an_extra_grant() -> None:
    """The comparison itself: a call added without its permission, and a permission no call uses."""
    calls, _ = aws_calls(functions()["ResultsFunction"])
    need, grants = needed("ResultsFunction", calls), granted("ResultsFunction")
    assert compare(need, grants) == []
    added = needed("ResultsFunction", calls | {Call("s3", "DeleteObject", ("env", "RESULTS_BUCKET"), "new")})
    results_bucket = "arn:aws:s3:::ivadas-dev-results-123456789012"
    assert compare(added, grants) == [f"not allowed: s3:DeleteObject on {results_bucket} (new)"]
    table = f"arn:aws:dynamodb:{ARN}:table/ivadas-dev-results"
    assert compare(need, grants | {("dynamodb:DeleteItem", table)}) == [
        f"allowed, never called: dynamodb:DeleteItem on {table}"
    ]
    endpoints = f"arn:aws:sagemaker:{ARN}:endpoint/ivadas-dev-*"
    assert f"wildcard not listed: sagemaker:InvokeEndpoint on {endpoints}" in compare(
        need, grants | {("sagemaker:InvokeEndpoint", endpoints)}
    )


def test_the_finder_sees_the_calls_each_function_is_known_to_make() -> None:
    """Anchors for the finder: calls reached only through parameters, dataclass fields, pool.submit,
    presigning and powertools' idempotency layer."""
    worker, _ = aws_calls("ivadas_functions.worker")
    ops = {(c.service, c.operation, c.resource) for c in worker}
    assert ("sagemaker-runtime", "InvokeEndpoint", ("env", "SOFTPATCH_ENDPOINT")) in ops  # shadow: submit()
    assert ("dynamodb", "DeleteItem", ("env", "IDEMPOTENCY_TABLE")) in ops  # powertools
    assert ("s3", "GetObject", ("event-bucket",)) in ops
    results, _ = aws_calls("ivadas_functions.results")
    ops = {(c.service, c.operation, c.resource) for c in results}
    assert ("s3", "UploadPart", ("env", "RESULTS_BUCKET")) in ops  # exports.Upload's self.s3
    assert ("dynamodb", "Scan", ("env", "STATS_TABLE")) in ops  # a bound method: page_call = table.scan
    assert ("sqs", "GetQueueAttributes", ("env", "DLQ_NAME")) in ops  # QueueUrl from get_queue_url's answer
    drift, _ = aws_calls("ivadas_functions.drift")
    assert {c.service for c in drift} == {"dynamodb"}  # imports stats_query, never calls dlq_depth


def test_every_client_comes_from_aws_client() -> None:
    """A boto3 client or resource made elsewhere would hide its calls from the finder."""
    made = []
    for path in sorted(FUNCTIONS.rglob("*.py")):
        if path.name == "aws.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            on_boto3 = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            if on_boto3 and node.value.id == "boto3" and node.attr in ("client", "resource", "Session"):
                made.append(f"{Path(path).relative_to(FUNCTIONS)}:{node.lineno}")
    assert not made, made
