"""Promotion: a whole multi-class version (one artifact serves every class) becomes the production model, on
the baseline's endpoint, only when it is approved, serves every class production serves, and no class is worse
than production by more than `TOLERANCE` on any compared metric, neither on the model cards nor on the
labelled comparisons stored by `ivadas compare --data-root`, and it must catch every reviewed escape
production catches (infra/lifecycle/reviewed.py). A refusal names the class, metric and source."""

from __future__ import annotations

import json

from infra.cloud.rescore import stored as stored_rescore
from infra.cloud.rescore import summary as rescore_summary
from infra.lifecycle.compare import METRICS, comparison_key
from infra.lifecycle.context import Context
from infra.lifecycle.registry import APPROVED, ModelVersion, get_version
from infra.lifecycle.reviewed import NoResults, escape_check
from infra.lifecycle.rollout import deploy, deployment
from ivadas_contract.models import BASELINE
from model_server.errors import IvadasError

TOLERANCE = 0.005
NO_WORSE = f"no metric worse by more than {TOLERANCE}"


def _quality(ctx: Context, version: ModelVersion) -> dict[str, dict]:
    """Per-class metrics of `version`'s model cards (its registered quality document)."""
    bucket, key = version.metrics_url.removeprefix("s3://").split("/", 1)
    doc = json.loads(ctx.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return {name: c["metrics"] for name, c in doc["classes"].items()}


def _stored_comparison(ctx: Context, class_name: str, production: str, candidate: str) -> dict | None:
    try:
        key = comparison_key(ctx.stage, class_name, production, candidate)
        got = ctx.s3.get_object(Bucket=ctx.model_bucket, Key=key)
    except ctx.s3.exceptions.NoSuchKey:
        return None
    return json.loads(got["Body"].read())


def worse(production: dict, candidate: dict) -> list[str]:
    """The metrics on which `candidate` falls more than TOLERANCE below `production` (both known)."""
    return [
        f"{m} {candidate[m]:.4f} < {production[m]:.4f} - {TOLERANCE}"
        for m in METRICS
        if production.get(m) is not None
        and candidate.get(m) is not None
        and candidate[m] < production[m] - TOLERANCE
    ]


def _escapes(ctx: Context, name: str, candidate: ModelVersion, production: ModelVersion) -> tuple[list, str]:
    """Refusals when the candidate misses a reviewed escape of class `name` that production catches."""
    try:
        doc = escape_check(ctx, name, {v.name: v.model_data_url for v in (production, candidate)})
    except NoResults as exc:
        return [], f"{name}: reviewed escapes not checked ({exc})"
    forgotten = doc["versions"].get(candidate.name, {}).get("forgotten", [])
    refusals = [f"class {name}: misses {len(forgotten)} reviewed escape(s) {production.name} catches: "
                + ", ".join(forgotten[:5])] if forgotten else []  # fmt: skip
    return refusals, f"{name}: {doc['escapes']} reviewed escapes, none caught by production and missed"


def check(ctx: Context, candidate: ModelVersion, production: ModelVersion) -> tuple[list[str], list[str]]:
    """(refusals, what was checked)."""
    refusals, checked = [], []
    cards, prod_cards = _quality(ctx, candidate), _quality(ctx, production)
    for name in sorted(prod_cards):
        if name not in cards:
            refusals.append(f"class {name}: served by {production.name}, missing from {candidate.name}")
            continue
        refusals += [f"class {name}: {w} (model cards)" for w in worse(prod_cards[name], cards[name])]
        checked.append(f"{name}: model cards: {NO_WORSE}")
        stored = _stored_comparison(ctx, name, production.name, candidate.name)
        if stored:
            base, cand = stored["baseline"]["metrics"], stored["candidate"]["metrics"]
            refusals += [
                f"class {name}: {w} (labelled comparison on {stored['data_root']})" for w in worse(base, cand)
            ]
            checked.append(f"{name}: labelled comparison on {stored['data_root']}: {NO_WORSE}")
        escaped, what = _escapes(ctx, name, candidate, production)
        refusals += escaped
        checked.append(what)
        rescored = stored_rescore(ctx, name, candidate.name)
        if (
            rescored
        ):  # what changes on the real backlog: for the record, not a gate (nothing says who is right)
            checked.append(rescore_summary(rescored))
    return refusals, checked


def promote(ctx: Context, model: str, name: str, timeout_s: float = 1800) -> tuple[dict, list[str]]:
    """Deploy candidate version `name` to the production endpoint after the checks; (record, checked)."""
    candidate = get_version(ctx, name)
    if candidate.model != model:
        raise IvadasError(f"{name} is a {candidate.model} version; --model is {model}")
    if candidate.status != APPROVED:
        raise IvadasError(f"{name} is {candidate.status}: only an approved version can be promoted")
    record = deployment(ctx, BASELINE)
    if not record or not record.get("version"):
        raise IvadasError(
            "production serves no registered version: deploy one (ivadas deploy) to compare with"
        )
    production = get_version(ctx, record["version"])
    refusals, checked = check(ctx, candidate, production)
    if refusals:
        raise IvadasError(f"{name} not promoted over {production.name}: " + "; ".join(refusals))
    return deploy(ctx, BASELINE, name, timeout_s, promoted=True), checked
