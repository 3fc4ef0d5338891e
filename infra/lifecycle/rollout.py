"""Rollout: an approved version reaches its model's endpoint through a new endpoint config and an endpoint
update (SageMaker's blue/green: the old fleet serves until the new one is in service), keeping the variant's
properties so auto scaling's instance count survives. The deployment record in SSM names the version, its
config and the previous ones (the rollback); the deployed artifact's S3 URI sits in the SSM parameter that
template.yaml resolves, so the next `sam deploy` keeps what was rolled out instead of reverting it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from infra.lifecycle.context import Context
from infra.lifecycle.registry import APPROVED, ModelVersion, get_version
from infra.local.endpoints import default_variant
from ivadas_contract.models import deployed_url_parameter, deployment_parameter, endpoint_name
from ivadas_functions.registry import deployment as shared_deployment
from model_server.errors import IvadasError

#: Previous deployments kept in the record (rollback goes to the newest).
HISTORY = 5


def deployment(ctx: Context, model: str) -> dict | None:
    """The deployment record of `model` in this stage, or None before the first `ivadas deploy`."""
    return shared_deployment(ctx.ssm, ctx.stage, model)


def _write(ctx: Context, model: str, record: dict) -> None:
    ctx.ssm.put_parameter(
        Name=deployed_url_parameter(ctx.stage, model),
        Value=record["model_data_url"],
        Type="String",
        Overwrite=True,
        Description=f"S3 URI of the deployed {model} artifact ({record['version']}); read by template.yaml",
    )
    ctx.ssm.put_parameter(
        Name=deployment_parameter(ctx.stage, model),
        Value=json.dumps(record, separators=(",", ":")),
        Type="String",
        Tier="Advanced",  # the record with its history can pass the standard tier's 4 KB
        Overwrite=True,
    )


def _current_endpoint(ctx: Context, name: str) -> tuple[dict | None, dict | None, dict | None]:
    """(endpoint, its config, its model) as described, or Nones where there is no endpoint yet."""
    try:
        endpoint = ctx.sagemaker.describe_endpoint(EndpointName=name)
    except ctx.sagemaker.exceptions.ClientError:
        return None, None, None
    config = ctx.sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    model = ctx.sagemaker.describe_model(ModelName=variant["ModelName"])
    return endpoint, config, model


def _variant(config: dict | None, model_name: str) -> dict:
    """The new config's variant: the current one's name, instance type and count, on the new model."""
    old = (config or {}).get("ProductionVariants", [{}])[0]
    variant = default_variant(model_name)
    variant.update({k: old[k] for k in ("VariantName", "InstanceType", "InitialInstanceCount",
                                        "InitialVariantWeight") if k in old})  # fmt: skip
    return variant


def _create_config(ctx: Context, version: ModelVersion, config: dict | None, model: dict | None) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")[:17]  # to the millisecond: names are unique
    name = f"{endpoint_name(ctx.stage, version.model)}-v{version.number}-{stamp}"
    container = {"Image": version.image, "ModelDataUrl": version.model_data_url}
    if model and model.get("PrimaryContainer", {}).get("Environment"):
        container["Environment"] = model["PrimaryContainer"]["Environment"]
    tags = [{"Key": "ivadas:version", "Value": version.name}]
    ctx.sagemaker.create_model(
        ModelName=name,
        PrimaryContainer=container,
        ExecutionRoleArn=(model or {}).get("ExecutionRoleArn", ctx.local_role),
        Tags=tags,
    )
    ctx.sagemaker.create_endpoint_config(
        EndpointConfigName=name, ProductionVariants=[_variant(config, name)], Tags=tags
    )
    return name


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


def _switch(ctx: Context, name: str, config_name: str, exists: bool, timeout_s: float) -> None:
    if exists:
        ctx.sagemaker.update_endpoint(
            EndpointName=name, EndpointConfigName=config_name, RetainAllVariantProperties=True
        )
    elif ctx.local:  # the local stack's first deployment: what `sam deploy` creates on AWS
        ctx.sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config_name)
    else:
        raise IvadasError(f"endpoint {name} does not exist: deploy the stack first (sam deploy)")
    _wait(ctx, name, timeout_s)


def _as_previous(record: dict | None, current: dict, container_model: dict) -> dict:
    """What the endpoint served before this deploy (its version unknown when `sam deploy` set it up)."""
    same = record is not None and record["endpoint_config"] == current["EndpointConfigName"]
    return {
        "version": record["version"] if same else None,
        "endpoint_config": current["EndpointConfigName"],
        "model_data_url": container_model["PrimaryContainer"]["ModelDataUrl"],
    }


def deploy(ctx: Context, model: str, name: str, timeout_s: float = 1800, promoted: bool = False) -> dict:
    """Point `model`'s endpoint at approved version `name`; returns the new deployment record. Only a
    promotion (promote.py, after its checks) puts another family's version on an endpoint."""
    version = get_version(ctx, name)
    if version.model != model and not promoted:
        raise IvadasError(f"{name} is a {version.model} version; --model is {model}")
    if version.status != APPROVED:
        raise IvadasError(
            f"{name} is {version.status}: only an approved version can be deployed (ivadas approve {name})"
        )
    endpoint = endpoint_name(ctx.stage, model)
    current, config, container_model = _current_endpoint(ctx, endpoint)
    record = deployment(ctx, model)
    if (
        record
        and record["version"] == name
        and current
        and current["EndpointConfigName"] == record["endpoint_config"]
    ):
        raise IvadasError(f"{name} is already deployed to {endpoint}")
    config_name = _create_config(ctx, version, config, container_model)
    _switch(ctx, endpoint, config_name, current is not None, timeout_s)
    previous = (record or {}).get("previous", [])[: HISTORY - 1]
    if current is not None:
        previous = [_as_previous(record, current, container_model), *previous]
    new = {
        "version": name,
        "endpoint": endpoint,
        "endpoint_config": config_name,
        "model_data_url": version.model_data_url,
        "deployed_by": ctx.caller,
        "deployed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "previous": previous,
        **({"promoted": True} if promoted else {}),
    }
    _write(ctx, model, new)
    return new


def rollback(ctx: Context, model: str, timeout_s: float = 1800) -> dict:
    """Back to the previous deployment's endpoint config (kept since that deploy); returns the new record."""
    record = deployment(ctx, model)
    if not record or not record.get("previous"):
        raise IvadasError(f"{model} has no earlier deployment to roll back to")
    target, *older = record["previous"]
    endpoint = endpoint_name(ctx.stage, model)
    try:
        ctx.sagemaker.describe_endpoint_config(EndpointConfigName=target["endpoint_config"])
    except ctx.sagemaker.exceptions.ClientError:
        raise IvadasError(
            f"the previous endpoint config {target['endpoint_config']} no longer exists"
        ) from None
    _switch(ctx, endpoint, target["endpoint_config"], True, timeout_s)
    new = {
        **target,
        "endpoint": endpoint,
        "deployed_by": ctx.caller,
        "deployed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rolled_back_from": record["version"],
        "previous": older,
    }
    _write(ctx, model, new)
    return new
