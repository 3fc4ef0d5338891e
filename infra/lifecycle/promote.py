"""Promotion from the CLI: the gate of ivadas_functions.promotion (the one implementation the Deployments API
uses too), with the reviewed escapes scored here, where the model can run (infra/lifecycle/reviewed.py); each
scoring is stored so that the API, which cannot score, reads it. Then the deploy of rollout.py."""

from __future__ import annotations

import json
from dataclasses import dataclass

from infra.lifecycle.context import Context, as_cli_error
from infra.lifecycle.reviewed import NoResults, escape_check
from infra.lifecycle.rollout import _apply
from ivadas_functions import promotion
from ivadas_functions.promotion import NO_WORSE, TOLERANCE, worse  # noqa: F401 - the lifecycle's names
from ivadas_functions.registry import ModelVersion


@dataclass
class ScoredEscapes:
    """The CLI's escape check: score a class's reviewed escapes with both versions, store the scoring (for the
    API's gate, which cannot score), refuse what production catches and the candidate misses."""

    ctx: Context

    def check(self, name: str, candidate: ModelVersion, production: ModelVersion) -> tuple[list, str]:
        """(refusals, what was checked) for class `name`."""
        ctx = self.ctx
        try:
            doc = escape_check(ctx, name, {v.name: v.model_data_url for v in (production, candidate)})
        except NoResults as exc:
            return [], f"{name}: reviewed escapes not checked ({exc})"
        key = promotion.escapes_key(ctx.stage, name, production.name, candidate.name)
        ctx.s3.put_object(Bucket=ctx.model_bucket, Key=key, Body=json.dumps(doc).encode(),
                          ContentType="application/json")  # fmt: skip
        return promotion.escape_refusals(doc, name, candidate, production)


def check(ctx: Context, candidate: ModelVersion, production: ModelVersion) -> tuple[list[str], list[str]]:
    """(refusals, what was checked)."""
    return promotion.check(ctx.s3, ctx.model_bucket, ctx.stage, candidate, production, ScoredEscapes(ctx))


def promote(ctx: Context, model: str, name: str, timeout_s: float = 1800) -> tuple[dict, list[str]]:
    """Deploy candidate version `name` to the production endpoint after the checks; (record, checked)."""
    with as_cli_error():
        planned, seen = promotion.plan_promotion(
            ctx.sagemaker, ctx.ssm, ctx.s3, ctx.model_bucket, ctx.stage, name, ScoredEscapes(ctx), model
        )
    return _apply(ctx, promotion.BASELINE, planned, timeout_s), seen["checked"]
