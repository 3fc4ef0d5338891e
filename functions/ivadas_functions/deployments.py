"""Deploying, rolling back and following a model's endpoint: the one implementation behind `ivadas deploy`,
`rollback` and `promote` (infra.lifecycle) and the Deployments API (deployments_api.py), in plain boto3 so the
Lambda package carries it (no torch, no infra).

CloudFormation owns what an endpoint serves (docs/deploying.md, "Who owns the endpoints"): a deployment writes
the version's artifact URI into the SSM parameter template.yaml resolves, has the stack apply it, and keeps a
deployment record (version, artifact, who, when, the previous five artifacts) in SSM; a rollback applies the
previous artifact the same way. Applying takes minutes on AWS, longer than API Gateway waits (29 s), so the
API only starts the stack update (`start_stack_update`) and `endpoint_state` says how far it got; the CLI
waits for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from ivadas_contract.models import deployed_url_parameter, deployment_parameter, endpoint_name
from ivadas_functions import stack
from ivadas_functions.registry import APPROVED, RegistryError, deployment, get_version

#: Previous deployments kept in the record (rollback goes to the newest).
HISTORY = 5
#: What a stack with the SAM transform and IAM roles needs to be updated.
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]
UPDATING, IN_SERVICE, FAILED = "updating", "in_service", "failed"
_ENDPOINT_BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack")


class DeploymentConflict(RegistryError):
    """The version or the endpoint is in a state that forbids this deployment (answered 409)."""

    kind = "conflict"


class NotApproved(DeploymentConflict):
    """Only an approved version is deployed or promoted."""


class AlreadyDeployed(DeploymentConflict):
    """The endpoint already serves this version."""


class NothingToRollBack(DeploymentConflict):
    """The deployment record has no earlier artifact."""


class UpdateInProgress(DeploymentConflict):
    """The stack is being updated already: one change at a time, as CloudFormation allows."""


class WrongModel(DeploymentConflict):
    """A version of one family named for another family's endpoint."""


class NoStack(RegistryError):
    """The stage has no stack to apply a deployment to (deploy the stage first)."""

    kind = "unavailable"


class UpdateRefused(RegistryError):
    """CloudFormation refused to start the update (its own words in the message)."""

    kind = "unavailable"


def serving(ssm: Any, stage: str, model: str) -> str | None:
    """The S3 URI of the artifact the stage's template serves on `model`'s endpoint (its SSM parameter)."""
    try:
        return ssm.get_parameter(Name=deployed_url_parameter(stage, model))["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        return None


def put_url(ssm: Any, stage: str, model: str, url: str) -> None:
    ssm.put_parameter(
        Name=deployed_url_parameter(stage, model),
        Value=url,
        Type="String",
        Overwrite=True,
        Description=f"S3 URI of the {model} artifact its endpoint serves; template.yaml resolves it",
    )


def plan_deploy(
    sagemaker: Any, ssm: Any, stage: str, model: str, name: str, promoted: bool = False
) -> tuple[dict, list[dict]]:
    """(the new record's entry, its previous deployments) for putting approved version `name` on `model`'s
    endpoint; refuses a version that is not approved or is served there already. Only a promotion
    (promotion.py, after its gate) puts another family's version on an endpoint."""
    version = get_version(sagemaker, stage, name)
    if version.model != model and not promoted:
        raise WrongModel(f"{name} is a {version.model} version; --model is {model}")
    if version.status != APPROVED:
        raise NotApproved(
            f"{name} is {version.status}: only an approved version can be deployed (ivadas approve {name})"
        )
    record, current = deployment(ssm, stage, model), serving(ssm, stage, model)
    if record and record["version"] == name and current == version.model_data_url:
        raise AlreadyDeployed(f"{name} is already deployed to {endpoint_name(stage, model)}")
    previous = (record or {}).get("previous", [])
    if current is not None:  # what served before: its version unknown when make deploy put it there
        known = record is not None and record["model_data_url"] == current
        previous = [{"version": record["version"] if known else None, "model_data_url": current}, *previous]
    entry = {
        "version": name,
        "model_data_url": version.model_data_url,
        **({"promoted": True} if promoted else {}),
    }
    return entry, previous


def plan_rollback(ssm: Any, stage: str, model: str) -> tuple[dict, list[dict]]:
    """(the new record's entry, its previous deployments) for going back to the previous artifact."""
    record = deployment(ssm, stage, model)
    if not record or not record.get("previous"):
        raise NothingToRollBack(f"{model} has no earlier deployment to roll back to")
    target, *older = record["previous"]
    entry = {"version": target["version"], "model_data_url": target["model_data_url"],
             "rolled_back_from": record["version"]}  # fmt: skip
    return entry, older


def serve(ssm: Any, stage: str, model: str, url: str, apply: Callable[[], Any]) -> Any:
    """Point `model`'s SSM parameter at `url` and `apply` it (start or finish the stack update); the
    parameter goes back to what it was if that fails. Returns what `apply` returns."""
    before = serving(ssm, stage, model)
    put_url(ssm, stage, model, url)
    try:
        return apply()
    except Exception:
        if before is not None:
            put_url(ssm, stage, model, before)
        raise


def record(
    ssm: Any, stage: str, model: str, entry: dict, previous: list[dict], by: str, config: str | None
) -> dict:
    """Write and return the deployment record; `config` is the endpoint config serving it, None while the
    update that makes it is still under way."""
    doc = {
        **entry,
        "endpoint": endpoint_name(stage, model),
        "endpoint_config": config,
        "deployed_by": by,
        "deployed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "previous": previous[:HISTORY],
    }
    ssm.put_parameter(
        Name=deployment_parameter(stage, model),
        Value=json.dumps(doc, separators=(",", ":")),
        Type="String",
        Tier="Advanced",  # the record with its history can pass the standard tier's 4 KB
        Overwrite=True,
    )
    return doc


def start_stack_update(cloudformation: Any, stack_name: str, stage: str) -> bool:
    """Start an update of the stage's stack with its current template and parameters (CloudFormation fetches
    the SSM parameter values anew); False when there was nothing to change. Does not wait."""
    found = stack.describe(cloudformation, stack_name)
    if found is None:
        raise NoStack(
            f"stack {stack_name} does not exist: deploy the stage first (make deploy STAGE={stage})"
        )
    if found["StackStatus"].endswith("_IN_PROGRESS"):
        raise UpdateInProgress(
            f"{stack_name} is {found['StackStatus']}: wait until the change under way ends"
        )
    keep = [{"ParameterKey": key, "UsePreviousValue": True} for key in stack.parameters(found)]
    try:
        cloudformation.update_stack(
            StackName=stack_name, UsePreviousTemplate=True, Parameters=keep, Capabilities=CAPABILITIES
        )
    except ClientError as exc:
        if "No updates are to be performed" in str(exc):
            return False  # the parameter already named this artifact when CloudFormation last applied it
        raise UpdateRefused(
            f"CloudFormation refused to update {stack_name}: {exc.response['Error']['Message']}"
        ) from None
    return True


def start(
    ssm: Any, cloudformation: Any, stage: str, stack_name: str, model: str, planned: tuple[dict, list[dict]],
    by: str,
) -> dict:  # fmt: skip
    """Start what `plan_deploy` or `plan_rollback` planned: the SSM parameter, the stack update, the record
    (its `endpoint_config` None until the endpoint serves it). The API's deploy, rollback and promote."""
    entry, previous = planned
    url = entry["model_data_url"]
    serve(ssm, stage, model, url, lambda: start_stack_update(cloudformation, stack_name, stage))
    return record(ssm, stage, model, entry, previous, by, None)


def serves(sagemaker: Any, config_name: str) -> str:
    config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
    model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    return model["PrimaryContainer"]["ModelDataUrl"]


def endpoint_state(
    sagemaker: Any, cloudformation: Any, stack_name: str, stage: str, model: str, deployed: dict | None
) -> dict:
    """Where `model`'s endpoint stands against its deployment record `deployed`: `updating` while the stack
    or the endpoint changes, `failed` when the endpoint failed or the last update was rolled back (it serves
    another artifact than the record's), `in_service` once it serves the record's artifact."""
    name = endpoint_name(stage, model)
    found = stack.describe(cloudformation, stack_name) or {}
    stack_status, reason = found.get("StackStatus"), found.get("StackStatusReason")
    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=name)
    except ClientError:
        return {"state": FAILED, "endpoint_status": None, "stack_status": stack_status,
                "reason": f"no endpoint {name}"}  # fmt: skip
    status = endpoint["EndpointStatus"]
    doc = {
        "endpoint_status": status,
        "stack_status": stack_status,
        "endpoint_config": endpoint.get("EndpointConfigName"),
    }
    if (stack_status or "").endswith("_IN_PROGRESS") or status in _ENDPOINT_BUSY:
        return {"state": UPDATING, **doc}
    if status == "Failed":
        return {"state": FAILED, **doc, "reason": endpoint.get("FailureReason")}
    wanted = (deployed or {}).get("model_data_url")
    if wanted and serves(sagemaker, doc["endpoint_config"]) != wanted:
        why = reason or "the update did not reach the endpoint"
        return {"state": FAILED, **doc, "reason": f"{why}; the endpoint keeps serving what it served"}
    return {"state": IN_SERVICE, **doc}
