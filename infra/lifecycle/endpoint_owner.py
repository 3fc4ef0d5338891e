"""The one owner of what an endpoint serves: CloudFormation (docs/deploying.md, "Who owns the endpoints").

Each endpoint's SageMaker model and endpoint config are template.yaml's resources, and the artifact they serve
is the SSM parameter the template resolves (`/ivadas/<stage>/<model>/model-data-url`). `ivadas deploy`,
`rollback` and `promote` change that parameter, then `apply` makes the stack serve it:

- on AWS, a stack update with the template and every parameter as they are: CloudFormation fetches SSM
  parameter values anew on each update, so only the changed artifact's model and config are replaced, and the
  endpoint is updated in place with RetainAllVariantProperties (SageMaker's blue/green: the old instances
  serve until the new ones are in service; auto scaling's instance count is kept). The replaced config is
  deleted, as every config CloudFormation replaces is: a rollback makes a new one, it never needs an old one;
- locally there is no CloudFormation: the same model and config are made from the template in moto
  (infra.local.endpoints.create_config) and the replaced ones deleted, as the stack update would.

So a later `sam deploy` (or `make deploy`) finds the template and the parameter as CloudFormation last applied
them and leaves the endpoints alone; nothing but CloudFormation ever creates their configs on AWS.
"""

from __future__ import annotations

import time

from botocore.exceptions import ClientError, WaiterError

from infra import deployed_stack
from infra.lifecycle.context import Context
from infra.template import LOGICAL_PREFIX
from ivadas_contract.models import deployed_url_parameter, endpoint_name
from model_server.errors import IvadasError

#: What a stack with the SAM transform and IAM roles needs to be updated.
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]
_POLL_S = 15


def apply(ctx: Context, model: str, timeout_s: float) -> str:
    """Make `model`'s endpoint serve what its SSM parameter names; returns the endpoint config it serves."""
    if ctx.local:
        _apply_locally(ctx, model, timeout_s)
    else:
        update_stack(ctx, timeout_s)
    return ctx.sagemaker.describe_endpoint(EndpointName=endpoint_name(ctx.stage, model))["EndpointConfigName"]


def update_stack(ctx: Context, timeout_s: float) -> None:
    """The stage's stack updated with its current template and parameters (SSM values fetched anew)."""
    cfn, name = ctx.cloudformation, ctx.stack_name
    stack = deployed_stack.describe(cfn, name)
    if stack is None:
        raise IvadasError(
            f"stack {name} does not exist: deploy the stage first (make deploy STAGE={ctx.stage})"
        )
    keep = [{"ParameterKey": key, "UsePreviousValue": True} for key in deployed_stack.parameters(stack)]
    try:
        cfn.update_stack(StackName=name, UsePreviousTemplate=True, Parameters=keep, Capabilities=CAPABILITIES)
    except ClientError as exc:
        if "No updates are to be performed" in str(exc):
            return  # the parameter already named this artifact when CloudFormation last applied it
        raise IvadasError(
            f"CloudFormation refused to update {name}: {exc.response['Error']['Message']}"
        ) from None
    try:
        cfn.get_waiter("stack_update_complete").wait(
            StackName=name, WaiterConfig={"Delay": _POLL_S, "MaxAttempts": max(1, int(timeout_s // _POLL_S))}
        )
    except WaiterError:
        now = deployed_stack.describe(cfn, name) or {}
        status, why = now.get("StackStatus", "gone"), now.get("StackStatusReason", "no reason given")
        raise IvadasError(
            f"{name} is {status} ({why}): "
            "CloudFormation rolls a failed update back, and the endpoint keeps serving what it served"
        ) from None


def _serves(ctx: Context, config_name: str) -> str:
    config = ctx.sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
    model = ctx.sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    return model["PrimaryContainer"]["ModelDataUrl"]


def _apply_locally(ctx: Context, model: str, timeout_s: float) -> None:
    from infra.local.endpoints import create_config

    sm, name = ctx.sagemaker, endpoint_name(ctx.stage, model)
    url = ctx.ssm.get_parameter(Name=deployed_url_parameter(ctx.stage, model))["Parameter"]["Value"]
    try:
        old = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    except sm.exceptions.ClientError:
        old = None
    if old is not None and _serves(ctx, old) == url:
        return  # nothing changed: CloudFormation would not touch the endpoint either
    config = create_config(ctx.stack, model, url)
    if old is None:  # the local stack's first endpoint of this model: what the stack's create makes on AWS
        sm.create_endpoint(EndpointName=name, EndpointConfigName=config)
    else:
        retain = ctx.stack.props(f"{LOGICAL_PREFIX[model]}Endpoint").get("RetainAllVariantProperties", False)
        sm.update_endpoint(EndpointName=name, EndpointConfigName=config, RetainAllVariantProperties=retain)
    _wait(ctx, name, timeout_s)
    if old is not None:  # CloudFormation deletes what it replaced
        old_model = sm.describe_endpoint_config(EndpointConfigName=old)["ProductionVariants"][0]["ModelName"]
        sm.delete_endpoint_config(EndpointConfigName=old)
        sm.delete_model(ModelName=old_model)


def _wait(ctx: Context, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = ctx.sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"]
        if status == "InService":
            return
        if status == "Failed":
            raise IvadasError(f"endpoint {name} failed to update; the previous config keeps serving")
        time.sleep(5)
    raise IvadasError(f"endpoint {name} still updating after {timeout_s:.0f} s")
