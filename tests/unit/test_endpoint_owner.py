"""On AWS a rollout is a CloudFormation update of the stage's stack with its template and parameters as they
are (endpoint_owner.py): the calls are checked here with botocore's Stubber, SSM in moto."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from infra.lifecycle import endpoint_owner
from infra.lifecycle.context import Context
from ivadas_contract.models import deployed_url_parameter
from ivadas_functions.deployments import serve
from model_server.errors import IvadasError

PARAMETERS = [
    {"ParameterKey": "Stage", "ParameterValue": "prod"},
    {"ParameterKey": "PatchCoreModelDataUrl", "ParameterValue": "/ivadas/prod/patchcore/model-data-url",
     "ResolvedValue": "s3://b/old/model.tar.gz"},
    {"ParameterKey": "EndpointInstanceType", "ParameterValue": "ml.c5.xlarge"},
]  # fmt: skip


def _stack(status: str, reason: str = "") -> dict:
    stack = {"StackName": "ivadas-prod", "StackStatus": status, "CreationTime": "2026-12-01T00:00:00Z",
             "Parameters": PARAMETERS}  # fmt: skip
    return {"Stacks": [{**stack, "StackStatusReason": reason} if reason else stack]}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        cfn = boto3.client("cloudformation")
        clients = {"cloudformation": cfn}
        ctx = Context(
            "prod", "b", "img", client=lambda service: clients.get(service) or boto3.client(service)
        )
        with Stubber(cfn) as stubber:
            yield ctx, stubber


def _expect_update(stubber: Stubber) -> None:
    stubber.add_response("describe_stacks", _stack("UPDATE_COMPLETE"), {"StackName": "ivadas-prod"})
    keep = [{"ParameterKey": p["ParameterKey"], "UsePreviousValue": True} for p in PARAMETERS]
    stubber.add_response(
        "update_stack",
        {"StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/ivadas-prod/1"},
        {"StackName": "ivadas-prod", "UsePreviousTemplate": True, "Parameters": keep,
         "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]},
    )  # fmt: skip


def test_a_rollout_updates_the_stack_with_everything_as_it_is(aws, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every parameter its previous value (an instance type set at deploy time stays), the template the one
    deployed: only the SSM values CloudFormation fetches anew can change."""
    ctx, stubber = aws
    monkeypatch.setattr(endpoint_owner, "_POLL_S", 1)
    _expect_update(stubber)
    stubber.add_response("describe_stacks", _stack("UPDATE_IN_PROGRESS"), {"StackName": "ivadas-prod"})
    stubber.add_response("describe_stacks", _stack("UPDATE_COMPLETE"), {"StackName": "ivadas-prod"})
    endpoint_owner.update_stack(ctx, timeout_s=60)
    stubber.assert_no_pending_responses()


def test_no_change_is_no_update(aws) -> None:
    ctx, stubber = aws
    stubber.add_response("describe_stacks", _stack("UPDATE_COMPLETE"), {"StackName": "ivadas-prod"})
    stubber.add_client_error("update_stack", "ValidationError", "No updates are to be performed.")
    endpoint_owner.update_stack(ctx, timeout_s=60)  # nothing to wait for
    stubber.assert_no_pending_responses()


def test_a_failed_update_says_why_and_puts_the_parameter_back(aws, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, stubber = aws
    name = deployed_url_parameter("prod", "patchcore")
    ctx.ssm.put_parameter(Name=name, Value="s3://b/old/model.tar.gz", Type="String")
    _expect_update(stubber)
    reason = "Resource handler returned message: ModelError"
    stubber.add_response(
        "describe_stacks", _stack("UPDATE_ROLLBACK_COMPLETE", reason), {"StackName": "ivadas-prod"}
    )
    stubber.add_response(
        "describe_stacks", _stack("UPDATE_ROLLBACK_COMPLETE", reason), {"StackName": "ivadas-prod"}
    )
    with pytest.raises(IvadasError, match="UPDATE_ROLLBACK_COMPLETE .*ModelError"):
        serve(
            ctx.ssm,
            "prod",
            "patchcore",
            "s3://b/new/model.tar.gz",
            lambda: endpoint_owner.apply(ctx, "patchcore", 60),
        )
    assert ctx.ssm.get_parameter(Name=name)["Parameter"]["Value"] == "s3://b/old/model.tar.gz"


def test_no_stack_no_rollout(aws) -> None:
    ctx, stubber = aws
    stubber.add_client_error("describe_stacks", "ValidationError", "Stack with id ivadas-prod does not exist")
    with pytest.raises(IvadasError, match="make deploy STAGE=prod"):
        endpoint_owner.update_stack(ctx, timeout_s=60)


def test_a_deployed_stage_takes_its_bucket_and_image_from_its_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never the template's placeholder defaults (an account that is not the caller's, a bucket of no one's):
    what the stage's stack was deployed with, unless told otherwise; no stack, no guess."""
    import argparse
    import json

    from infra.lifecycle.context import add_context_arguments, context_from_args

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    parser = argparse.ArgumentParser()
    add_context_arguments(parser)
    with mock_aws():
        with pytest.raises(IvadasError, match="make deploy STAGE=prod"):
            context_from_args(parser.parse_args(["--stage", "prod"]))
        deployed = {
            "ModelBucketName": "ivadas-prod-models-123456789012-eu-west-1",
            "ModelImageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ivadas-model-server:abc",
        }
        template = {
            "Parameters": {name: {"Type": "String"} for name in deployed},
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        }
        boto3.client("cloudformation").create_stack(
            StackName="ivadas-prod",
            TemplateBody=json.dumps(template),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in deployed.items()],
        )
        ctx = context_from_args(parser.parse_args(["--stage", "prod"]))
        assert (ctx.model_bucket, ctx.image_uri) == (deployed["ModelBucketName"], deployed["ModelImageUri"])
        ctx = context_from_args(parser.parse_args(["--stage", "prod", "--model-bucket", "mine"]))
        assert (ctx.model_bucket, ctx.image_uri) == ("mine", deployed["ModelImageUri"])
