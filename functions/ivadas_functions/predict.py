"""Predict Lambda: `POST /predict` scores one image synchronously for the web UI (a signed-in operator or ML
engineer), `POST /machine/predict` the same for cameras and line scripts (the API key; template.yaml says why
there are two routes).

Body: {"class_name": "bottle", "image_base64": "...", "model": "patchcore" | "softpatch" | "both",
"return_heatmap": true, "explain": true}. "both" asks the baseline and the candidate at once and answers side
by side. `explain` (default on) passes the model server's `explanations` through: for each flagged region,
the nearest good training patch and a crop of it, bounded (`bounded_explanations`).
Validation errors are 400 (malformed), 413 (image over the limit) and 422 (the endpoint cannot use it).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import BadRequestError, ServiceError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from ivadas_contract.errors import TYPES
from ivadas_contract.inspection import CLASS_NAME_RULE, is_class_name
from ivadas_contract.limits import MAX_PREDICT_IMAGE_BYTES
from ivadas_contract.models import MODELS
from ivadas_functions import api_errors, identity, request_checks, retries
from ivadas_functions.aws import (
    RejectedImage,
    Settings,
    TransientFailure,
    cors_config,
    invoke_endpoint,
)

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "IVADAS"))
cors = cors_config()
app = APIGatewayRestResolver(cors=cors)
api_errors.install(app, logger)  # the one error shape (ivadas_contract.errors)
settings = Settings.from_env()
_pool = ThreadPoolExecutor(max_workers=len(MODELS))
#: A person waits for the answer: a blip (an instance being replaced, a throttled second) is retried away,
#: a longer outage answered 503 at once.
RETRY_S = 5.0
#: The most bytes of explanations (JSON) one prediction passes on: past it the crops are left out (null), the
#: patches' ids and boxes stay. The model server sends at most 5 crops of a few KiB each.
MAX_EXPLANATION_BYTES = 64 * 1024


def bounded_explanations(result: dict) -> dict:
    """`result` with its explanations within MAX_EXPLANATION_BYTES (crops dropped past it)."""
    found = result.get("explanations")
    if not isinstance(found, list) or len(json.dumps(found)) <= MAX_EXPLANATION_BYTES:
        return result
    light = [
        {**e, "nearest_good": {**e.get("nearest_good", {}), "crop_png_base64": None}}
        for e in found
        if isinstance(e, dict)
    ]
    return {**result, "explanations": light, "explanations_note": "crops left out: over the size limit"}


def _score(model: str, class_name: str, image: bytes, heatmap: bool, explain: bool = True) -> dict:
    endpoint = settings.endpoints[model]
    answer = retries.call_with_retries(
        lambda: invoke_endpoint(endpoint, class_name, image, return_heatmap=heatmap, explain=explain),
        retries.RetryWindow.lasting(RETRY_S),
    )
    return {**bounded_explanations(answer.result), "endpoint_latency_ms": round(answer.latency_ms, 3)}


def _parse(body: object) -> tuple[str, bytes, str, bool, bool]:
    """(class_name, image bytes, model or "both", return_heatmap, explain) from the request body, or 400."""
    if not isinstance(body, dict):
        raise BadRequestError("the body must be a JSON object")
    class_name, encoded = body.get("class_name"), body.get("image_base64")
    model = body.get("model", settings.default_model)
    if not is_class_name(class_name):
        raise BadRequestError(f"class_name is required: {CLASS_NAME_RULE}")
    heatmap, explain = body.get("return_heatmap", True), body.get("explain", True)
    for key, value in (("return_heatmap", heatmap), ("explain", explain)):
        if not isinstance(value, bool):
            raise BadRequestError(f"{key} must be true or false")
    if not isinstance(encoded, str) or not encoded:
        raise BadRequestError("image_base64 (string) is required")
    if model not in (*MODELS, "both"):
        raise BadRequestError(f"model must be one of {', '.join(MODELS)} or both")
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]
    try:
        image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("image_base64 is not valid base64") from None
    return class_name, image, model, heatmap, explain


@app.post("/machine/predict")
@app.post("/predict")
@tracer.capture_method
def predict() -> Response | dict:
    machine = app.current_event.resource.startswith("/machine/")
    identity.require(app.current_event.raw_event, identity.MACHINE if machine else identity.PREDICT)
    start = time.perf_counter()
    class_name, image, model, heatmap, explain = _parse(request_checks.json_body(app.current_event))
    limit = min(settings.max_image_bytes, MAX_PREDICT_IMAGE_BYTES)  # what fits in Lambda's request as base64
    if len(image) > limit:
        return api_errors.error_response(413, f"image of {len(image)} bytes is over the {limit} byte limit")
    models = list(MODELS) if model == "both" else [model]
    futures = {m: _pool.submit(_score, m, class_name, image, heatmap, explain) for m in models}
    results: dict[str, dict] = {}
    for m, future in futures.items():
        try:
            results[m] = future.result()
        except RejectedImage as exc:  # the model server's refusal, with its kind
            return api_errors.error_response(TYPES[exc.kind], str(exc), exc.kind)
        except TransientFailure as exc:
            logger.error("endpoint failure", extra={"model": m, "error": str(exc)})
            raise ServiceError(503, f"the {m} model is not available right now, try again") from None
    latency = round((time.perf_counter() - start) * 1000.0, 3)
    for m, r in results.items():
        metrics.add_metric(
            name=f"PredictLatency_{m}", unit=MetricUnit.Milliseconds, value=r["endpoint_latency_ms"]
        )
    if model == "both":
        return {"class_name": class_name, "model": "both", **results, "latency_ms": latency}
    return {**results[model], "latency_ms": latency}


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict:
    cors.use(event)
    return app.resolve(event, context)
