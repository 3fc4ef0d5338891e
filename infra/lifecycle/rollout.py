"""Rollout: an approved version reaches its model's endpoint by becoming the artifact the SSM parameter of
template.yaml names, which CloudFormation then applies (endpoint_owner.py: the one owner of the endpoints'
configs). The deployment record in SSM names the version, who deployed it and when, and the previous ones with
their artifacts: a rollback applies the previous artifact the same way, so it never needs an old config."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from infra.lifecycle import endpoint_owner
from infra.lifecycle.context import Context
from infra.lifecycle.registry import APPROVED, get_version
from ivadas_contract.models import deployed_url_parameter, deployment_parameter, endpoint_name
from ivadas_functions.registry import deployment as shared_deployment
from model_server.errors import IvadasError

#: Previous deployments kept in the record (rollback goes to the newest).
HISTORY = 5


def deployment(ctx: Context, model: str) -> dict | None:
    """The deployment record of `model` in this stage, or None before the first `ivadas deploy`."""
    return shared_deployment(ctx.ssm, ctx.stage, model)


def serving(ctx: Context, model: str) -> str | None:
    """The S3 URI of the artifact the stage's template serves on `model`'s endpoint (its SSM parameter)."""
    try:
        return ctx.ssm.get_parameter(Name=deployed_url_parameter(ctx.stage, model))["Parameter"]["Value"]
    except ctx.ssm.exceptions.ParameterNotFound:
        return None


def _put_url(ctx: Context, model: str, url: str) -> None:
    ctx.ssm.put_parameter(
        Name=deployed_url_parameter(ctx.stage, model),
        Value=url,
        Type="String",
        Overwrite=True,
        Description=f"S3 URI of the {model} artifact its endpoint serves; template.yaml resolves it",
    )


def _serve(ctx: Context, model: str, url: str, timeout_s: float) -> str:
    """Point `model`'s SSM parameter at `url` and have CloudFormation apply it; the parameter goes back to
    what it was if that fails. Returns the endpoint config now serving."""
    before = serving(ctx, model)
    _put_url(ctx, model, url)
    try:
        return endpoint_owner.apply(ctx, model, timeout_s)
    except Exception:
        if before is not None:
            _put_url(ctx, model, before)
        raise


def _record(ctx: Context, model: str, entry: dict, config: str, previous: list[dict]) -> dict:
    record = {
        **entry,
        "endpoint": endpoint_name(ctx.stage, model),
        "endpoint_config": config,
        "deployed_by": ctx.caller,
        "deployed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "previous": previous[:HISTORY],
    }
    ctx.ssm.put_parameter(
        Name=deployment_parameter(ctx.stage, model),
        Value=json.dumps(record, separators=(",", ":")),
        Type="String",
        Tier="Advanced",  # the record with its history can pass the standard tier's 4 KB
        Overwrite=True,
    )
    return record


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
    record, current = deployment(ctx, model), serving(ctx, model)
    if record and record["version"] == name and current == version.model_data_url:
        raise IvadasError(f"{name} is already deployed to {endpoint_name(ctx.stage, model)}")
    config = _serve(ctx, model, version.model_data_url, timeout_s)
    previous = (record or {}).get("previous", [])
    if current is not None:  # what served before: its version unknown when make deploy put it there
        known = record is not None and record["model_data_url"] == current
        previous = [{"version": record["version"] if known else None, "model_data_url": current}, *previous]
    entry = {
        "version": name,
        "model_data_url": version.model_data_url,
        **({"promoted": True} if promoted else {}),
    }
    return _record(ctx, model, entry, config, previous)


def rollback(ctx: Context, model: str, timeout_s: float = 1800) -> dict:
    """Back to the previous deployment's artifact (applied anew); returns the new record."""
    record = deployment(ctx, model)
    if not record or not record.get("previous"):
        raise IvadasError(f"{model} has no earlier deployment to roll back to")
    target, *older = record["previous"]
    config = _serve(ctx, model, target["model_data_url"], timeout_s)
    entry = {"version": target["version"], "model_data_url": target["model_data_url"],
             "rolled_back_from": record["version"]}  # fmt: skip
    return _record(ctx, model, entry, config, older)
