"""Models Lambda: the registry for the UI's Models view.

- `GET /models`: every version of each model (status, classes, mean metrics, decision), what each endpoint
  serves, and per class the baseline/candidate verdict agreement of the last `AGREEMENT_DAYS` (stats table).
- `POST /models/{version}/approve` `{"note": ...}` and `POST /models/{version}/reject` `{"why": ...}`: the
  decision, recorded with the package. Off unless the stack parameter UiApprovals is "true": until people sign
  in, the UI's API key is readable by anyone who can open the UI.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from ivadas_contract import stats
from ivadas_contract.models import MODELS, endpoint_name
from ivadas_functions import registry
from ivadas_functions.aws import Settings, client, cors_config, error_response
from ivadas_functions.stats_query import read_slots

logger = Logger()
tracer = Tracer()
app = APIGatewayRestResolver(cors=cors_config())
settings = Settings.from_env()
STAGE = os.environ.get("STAGE", "dev")
AGREEMENT_DAYS = 7


def approvals_enabled() -> bool:
    return os.environ.get("UI_APPROVALS", "false").lower() == "true"


def _agreement() -> list[dict]:
    since = (datetime.now(UTC) - timedelta(days=AGREEMENT_DAYS)).isoformat()
    view = stats.summarize(read_slots(settings.stats_table, None, since, None), group_by=("class_name",))
    return [
        {
            k: g[k]
            for k in (
                "class_name",
                "inspected",
                "candidate_answers",
                "candidate_agreement",
                "candidate_errors",
            )
        }
        for g in view["groups"]
    ]


@app.get("/models")
@tracer.capture_method
def list_models() -> dict:
    sagemaker, ssm = client("sagemaker"), client("ssm")
    models = {}
    for model in MODELS:
        record = registry.deployment(ssm, STAGE, model) or {}
        models[model] = {
            "endpoint": endpoint_name(STAGE, model),
            "deployed": {k: record.get(k) for k in ("version", "deployed_at", "deployed_by", "promoted")},
            "versions": [v.to_dict() for v in reversed(registry.versions(sagemaker, STAGE, model))],
        }
    return {"models": models, "agreement": _agreement(), "approvals_enabled": approvals_enabled()}


def _author() -> str:
    """Who decided, until sign-in: the API key's id and the caller's address."""
    identity = app.current_event.raw_event.get("requestContext", {}).get("identity") or {}
    return f"ui:api-key {identity.get('apiKeyId') or 'unknown'} from {identity.get('sourceIp') or 'unknown'}"


def _decide(version: str, status: str, note: str | None):  # noqa: ANN202 - dict or Response
    if not approvals_enabled():
        return error_response(403, "approving and rejecting from the UI is off (stack parameter UiApprovals)")
    try:
        decided = registry.decide(client("sagemaker"), client("ssm"), STAGE, version, status, note, _author())
    except registry.RegistryError as exc:
        return error_response(409 if "deployed" in str(exc) else 404, str(exc))
    logger.info(
        "model decision", extra={"version": version, "status": status, "by": decided.metadata["decided_by"]}
    )
    return decided.to_dict()


@app.post("/models/<version>/approve")
@tracer.capture_method
def approve(version: str):  # noqa: ANN201
    body = app.current_event.json_body or {}
    return _decide(version, registry.APPROVED, body.get("note") if isinstance(body, dict) else None)


@app.post("/models/<version>/reject")
@tracer.capture_method
def reject(version: str):  # noqa: ANN201
    body = app.current_event.json_body or {}
    why = body.get("why") if isinstance(body, dict) else None
    if not isinstance(why, str) or not why.strip():
        return error_response(400, 'a rejection needs its reason: {"why": "..."}')
    return _decide(version, registry.REJECTED, why.strip())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
