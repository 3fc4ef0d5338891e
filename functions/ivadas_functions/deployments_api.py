"""Deployments Lambda: what an ML engineer does to the endpoints from the console, through the same lifecycle
functions as `ivadas deploy`, `rollback` and `promote` (ivadas_functions.deployments and .promotion).

- `POST /models/{version}/deploy`: an approved version onto its model's endpoint;
- `POST /deployments/{model}/rollback`: the model's endpoint back to its previous deployment;
- `GET /models/{version}/promotion`: the promotion gate's verdict on a candidate version (refusals and what
  was checked), acting on nothing;
- `POST /models/{version}/promote`: the candidate onto the production endpoint, when the gate passes.

An endpoint update takes minutes and API Gateway answers within 29 s, so each change starts the stack update
and answers 202 with the deployment record and the endpoint's state (`updating`); `GET /models` follows it to
`in_service` or `failed`. Only an ML engineer may call (the approve route's check); refusals are 409
`conflict` (not approved, already deployed, nothing to roll back to, the gate refuses, an update under way)
and 404 `not_found` for an unknown version or model, chosen by the exception's type (its `kind`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from ivadas_contract.errors import TYPES
from ivadas_contract.models import BASELINE, MODELS
from ivadas_functions import api_errors, deployments, identity, promotion, registry
from ivadas_functions.aws import client, cors_config, table

logger = Logger()
tracer = Tracer()
cors = cors_config()
app = APIGatewayRestResolver(cors=cors)
api_errors.install(app, logger)  # the one error shape (ivadas_contract.errors)
app.use(middlewares=[identity.required(identity.DECIDE)])  # ML engineers only, as approve
STAGE = os.environ.get("STAGE", "dev")
STACK_NAME = os.environ.get("STACK_NAME", f"ivadas-{STAGE}")
MODEL_BUCKET = os.environ.get("MODEL_BUCKET", "")
RESULTS_TABLE = os.environ.get("RESULTS_TABLE", "")


def _refused(act: Callable[[], Any]) -> Any:
    """`act()`, or its refusal in the one error shape, its status from the exception's kind."""
    try:
        return act()
    except registry.RegistryError as exc:
        return api_errors.error_response(TYPES[exc.kind], str(exc), exc.kind)


def _started(model: str, planned: tuple[dict, list[dict]], who: identity.Identity, **extra: Any) -> Response:
    cfn, sagemaker = client("cloudformation"), client("sagemaker")
    record = deployments.start(client("ssm"), cfn, STAGE, STACK_NAME, model, planned, who.principal)
    state = deployments.endpoint_state(sagemaker, cfn, STACK_NAME, STAGE, model, record)
    logger.info(
        "deployment started", extra={"model": model, "version": record["version"], "by": who.principal}
    )
    body = {"model": model, "deployment": record, "endpoint": state, **extra}
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=body)


@app.post("/models/<version>/deploy")
@tracer.capture_method
def deploy(version: str):  # noqa: ANN201
    who = identity.require(app.current_event.raw_event, identity.DECIDE)

    def act() -> Response:
        model = registry.get_version(client("sagemaker"), STAGE, version).model
        planned = deployments.plan_deploy(client("sagemaker"), client("ssm"), STAGE, model, version)
        return _started(model, planned, who)

    return _refused(act)


@app.post("/deployments/<model>/rollback")
@tracer.capture_method
def rollback(model: str):  # noqa: ANN201
    who = identity.require(app.current_event.raw_event, identity.DECIDE)
    if model not in MODELS:
        return api_errors.error_response(
            404, f"no model {model} (choose from {', '.join(MODELS)})", "not_found"
        )
    return _refused(lambda: _started(model, deployments.plan_rollback(client("ssm"), STAGE, model), who))


@app.get("/models/<version>/promotion")
@tracer.capture_method
def promotion_verdict(version: str):  # noqa: ANN201
    identity.require(app.current_event.raw_event, identity.DECIDE)
    escapes = promotion.StoredEscapes(
        s3=client("s3"), bucket=MODEL_BUCKET, stage=STAGE, table=table(RESULTS_TABLE)
    )
    sagemaker, ssm, s3 = client("sagemaker"), client("ssm"), client("s3")
    return _refused(lambda: promotion.verdict(sagemaker, ssm, s3, MODEL_BUCKET, STAGE, version, escapes))


@app.post("/models/<version>/promote")
@tracer.capture_method
def promote(version: str):  # noqa: ANN201
    who = identity.require(app.current_event.raw_event, identity.DECIDE)

    def act() -> Response:
        sagemaker, ssm, s3 = client("sagemaker"), client("ssm"), client("s3")
        escapes = promotion.StoredEscapes(s3=s3, bucket=MODEL_BUCKET, stage=STAGE, table=table(RESULTS_TABLE))
        planned, seen = promotion.plan_promotion(sagemaker, ssm, s3, MODEL_BUCKET, STAGE, version, escapes)
        return _started(BASELINE, planned, who, checked=seen["checked"])

    return _refused(act)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    cors.use(event)
    return app.resolve(event, context)
