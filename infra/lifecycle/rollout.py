"""Rollout from the CLI: `ivadas deploy` and `rollback` plan and record exactly as the Deployments API does
(ivadas_functions.deployments, the one implementation), then apply the change through endpoint_owner.py and
wait until the endpoint serves it; on a failure the SSM parameter goes back to what it was and the record is
left as it was. A rollback applies the previous artifact anew, so it never needs an old config."""

from __future__ import annotations

from infra.lifecycle import endpoint_owner
from infra.lifecycle.context import Context, as_cli_error
from ivadas_functions import deployments as shared


def deployment(ctx: Context, model: str) -> dict | None:
    """The deployment record of `model` in this stage, or None before the first `ivadas deploy`."""
    return shared.deployment(ctx.ssm, ctx.stage, model)


def serving(ctx: Context, model: str) -> str | None:
    """The S3 URI of the artifact the stage's template serves on `model`'s endpoint (its SSM parameter)."""
    return shared.serving(ctx.ssm, ctx.stage, model)


def _apply(ctx: Context, model: str, planned: tuple[dict, list[dict]], timeout_s: float) -> dict:
    entry, previous = planned
    with as_cli_error():
        config = shared.serve(
            ctx.ssm,
            ctx.stage,
            model,
            entry["model_data_url"],
            lambda: endpoint_owner.apply(ctx, model, timeout_s),
        )
    return shared.record(ctx.ssm, ctx.stage, model, entry, previous, ctx.caller, config)


def deploy(ctx: Context, model: str, name: str, timeout_s: float = 1800, promoted: bool = False) -> dict:
    """Point `model`'s endpoint at approved version `name`; returns the new deployment record. Only a
    promotion (promote.py, after its checks) puts another family's version on an endpoint."""
    with as_cli_error():
        planned = shared.plan_deploy(ctx.sagemaker, ctx.ssm, ctx.stage, model, name, promoted)
    return _apply(ctx, model, planned, timeout_s)


def rollback(ctx: Context, model: str, timeout_s: float = 1800) -> dict:
    """Back to the previous deployment's artifact (applied anew); returns the new record."""
    with as_cli_error():
        planned = shared.plan_rollback(ctx.ssm, ctx.stage, model)
    return _apply(ctx, model, planned, timeout_s)
