"""Models Lambda: the registry for the UI's Models view.

- `GET /models`: every version of each model (status, classes, mean metrics, decision), what each endpoint
  serves, and per class the baseline/candidate verdict agreement of the last `AGREEMENT_DAYS` (stats table).
- `POST /models/{version}/approve` `{"note": ...}` and `POST /models/{version}/reject` `{"why": ...}`: the
  decision, recorded with the package with who made it: a signed-in ML engineer (ivadas_functions.identity);
  anyone else gets 403 `forbidden`. A decided version answers another decision with 409 `conflict`.
- `POST /models/{version}/reopen` `{"why": ...}`: make a decided version pending again (an ML engineer, with
  the reason); every decision and re-open stays in the version's `history`.

Deploy, roll back and promote are the Deployments function's (deployments_api.py, narrower callers and wider
rights); `GET /models` shows where each endpoint stands (`state`: updating, in service or failed): how the
console follows a deployment it started.
Every route needs a signed-in operator or ML engineer.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from ivadas_contract import stats
from ivadas_contract.errors import TYPES
from ivadas_contract.limits import MAX_NOTE_CHARS
from ivadas_contract.models import MODELS, endpoint_name
from ivadas_functions import api_errors, deployments, identity, registry, request_checks
from ivadas_functions.aws import Settings, client, cors_config
from ivadas_functions.stats_query import read_slots

logger = Logger()
tracer = Tracer()
cors = cors_config()
app = APIGatewayRestResolver(cors=cors)
api_errors.install(app, logger)  # the one error shape (ivadas_contract.errors)
app.use(middlewares=[identity.required(identity.READ)])  # signed-in operators and ML engineers
settings = Settings.from_env()
STAGE = os.environ.get("STAGE", "dev")
STACK_NAME = os.environ.get("STACK_NAME", f"ivadas-{STAGE}")
AGREEMENT_DAYS = 7


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
        if g["inspected"]  # a class no model scored (only rejects: sent by mistake) has no agreement row
    ]


@app.get("/models")
@tracer.capture_method
def list_models() -> dict:
    sagemaker, ssm, cfn = client("sagemaker"), client("ssm"), client("cloudformation")
    models = {}
    for model in MODELS:
        record = registry.deployment(ssm, STAGE, model)
        deployed = {k: (record or {}).get(k) for k in ("version", "deployed_at", "deployed_by", "promoted")}
        previous = (record or {}).get("previous") or []
        models[model] = {
            "endpoint": endpoint_name(STAGE, model),
            "deployed": {**deployed, "previous": previous[0] if previous else None},
            "state": deployments.endpoint_state(sagemaker, cfn, STACK_NAME, STAGE, model, record),
            "versions": [v.to_dict() for v in reversed(registry.versions(sagemaker, STAGE, model))],
        }
    caller = identity.caller(app.current_event.raw_event)
    can_decide = bool(caller and caller.may(identity.DECIDE))
    return {"models": models, "agreement": _agreement(), "can_decide": can_decide}


def _decide(version: str, status: str, note: str | None, who: identity.Identity):  # noqa: ANN202
    try:
        sagemaker, ssm, by = client("sagemaker"), client("ssm"), who.principal
        if status == registry.PENDING:
            decided = registry.reopen(sagemaker, ssm, STAGE, version, note or "", by)
        else:
            author = who.as_author("decided")
            decided = registry.decide(sagemaker, ssm, STAGE, version, status, note, by, author)
    except registry.RegistryError as exc:
        return api_errors.error_response(TYPES[exc.kind], str(exc), exc.kind)
    logger.info("model decision", extra={"version": version, "status": status, "by": by})
    return decided.to_dict()


@app.post("/models/<version>/approve")
@tracer.capture_method
def approve(version: str):  # noqa: ANN201
    who = identity.require(app.current_event.raw_event, identity.DECIDE)
    body = request_checks.json_object(app.current_event, required=False)
    return _decide(version, registry.APPROVED, request_checks.text(body, "note", MAX_NOTE_CHARS), who)


@app.post("/models/<version>/reject")
@tracer.capture_method
def reject(version: str):  # noqa: ANN201
    who = identity.require(app.current_event.raw_event, identity.DECIDE)
    body = request_checks.json_object(app.current_event, required=True)
    why = request_checks.text(body, "why", MAX_NOTE_CHARS, required=True)  # a rejection needs its reason
    return _decide(version, registry.REJECTED, why, who)


@app.post("/models/<version>/reopen")
@tracer.capture_method
def reopen(version: str):  # noqa: ANN201
    who = identity.require(app.current_event.raw_event, identity.DECIDE)
    body = request_checks.json_object(app.current_event, required=True)
    why = request_checks.text(body, "why", MAX_NOTE_CHARS, required=True)  # a re-open needs its reason
    return _decide(version, registry.PENDING, why, who)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    cors.use(event)
    return app.resolve(event, context)
