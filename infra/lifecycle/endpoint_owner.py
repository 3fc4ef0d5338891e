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

from botocore.exceptions import WaiterError

from infra.lifecycle.context import Context, as_cli_error
from ivadas_contract.models import endpoint_name
from ivadas_functions import stack as deployed_stack
from ivadas_functions.deployments import CAPABILITIES, start_stack_update
from model_server.errors import IvadasError

__all__ = ["CAPABILITIES", "apply", "update_stack"]
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
    with as_cli_error():  # the start the Deployments API makes too
        started = start_stack_update(cfn, name, ctx.stage)
    if not started:  # the parameter already named this artifact when CloudFormation last applied it
        return
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


def _apply_locally(ctx: Context, model: str, timeout_s: float) -> None:
    from infra.local.endpoints import apply_locally

    apply_locally(ctx.stack, model, timeout_s)
