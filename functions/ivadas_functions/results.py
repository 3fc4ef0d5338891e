"""Results Lambda: browse inspection results for operators and the UI.

- `GET /results?class_name=bottle&anomalous=true&since=ISO&until=ISO&limit=50&next_token=...`: newest first,
  paginated (by-class index; anomalies-by-class when anomalous=true; a scan only when no class is given).
- `GET /results/{inspection_id}`: one item, with presigned URLs for its image and heatmap.
- `GET /classes`: the classes each deployed model serves, with model version and threshold.
- `POST /results/{inspection_id}/review` `{"verdict": "good" | "defect", "reviewer": ..., "defect_type": ...,
  "note": ...}`: a review, kept as history; the newest is shown on the result (`review`).
- `GET /stats?class_name=&line=&since=ISO&until=ISO`: images inspected, anomaly rate, rejects by reason,
  endpoint latency percentiles and candidate agreement, from the stats table's counters; and the DLQ depth.
"""

from __future__ import annotations

import base64
import json
import os
import time

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.exceptions import BadRequestError, NotFoundError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from ivadas_contract import reviews
from ivadas_contract.inspection import INSPECTED, now_iso
from ivadas_contract.models import MODELS
from ivadas_contract.results_table import CLASS_QUERY, SORT_KEY, from_dynamo, to_dynamo
from ivadas_functions.aws import (
    Settings,
    TransientFailure,
    client,
    cors_config,
    error_response,
    invoke_endpoint_json,
    table,
)
from ivadas_functions.stats_query import stats_view

logger = Logger()
tracer = Tracer()
app = APIGatewayRestResolver(cors=cors_config())
settings = Settings.from_env()
MAX_LIMIT = 200
URL_SECONDS = 900
_classes_cache: dict = {"at": 0.0, "value": None}
CLASSES_TTL_SECONDS = 60


def _token(key: dict | None) -> str | None:
    return base64.urlsafe_b64encode(json.dumps(key, default=str).encode()).decode() if key else None


def _untoken(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(text.encode()))
    except ValueError:
        raise BadRequestError("next_token is not valid") from None


@app.exception_handler(BadRequestError)
def _bad_request(exc: BadRequestError):  # noqa: ANN202 - the API's one error shape
    return error_response(400, exc.msg)


@app.exception_handler(NotFoundError)
def _not_found(exc: NotFoundError):  # noqa: ANN202
    return error_response(404, exc.msg)


@app.get("/results")
@tracer.capture_method
def list_results() -> dict:
    q = app.current_event.query_string_parameters or {}
    class_name = q.get("class_name")
    anomalous = q.get("anomalous", "false").lower() in ("1", "true", "yes")
    since, until = q.get("since"), q.get("until")
    try:
        limit = max(1, min(MAX_LIMIT, int(q.get("limit", "50"))))
    except ValueError:
        raise BadRequestError("limit must be a number") from None
    start_key = _untoken(q.get("next_token"))
    results = table(settings.results_table)
    kwargs: dict = {"Limit": limit}
    if start_key:
        kwargs["ExclusiveStartKey"] = start_key
    if class_name:
        index, attr = CLASS_QUERY[anomalous]
        condition = Key(attr).eq(class_name)
        if since and until:
            condition &= Key(SORT_KEY).between(since, until)
        elif since:
            condition &= Key(SORT_KEY).gte(since)
        elif until:
            condition &= Key(SORT_KEY).lte(until)
        resp = results.query(
            IndexName=index, KeyConditionExpression=condition, ScanIndexForward=False, **kwargs
        )
        items = resp.get("Items", [])
    else:  # all classes: a filtered scan, sorted per page (fine for the UI's "everything recent" view)
        flt = None
        for cond in (
            Attr("is_anomaly").eq(True) if anomalous else None,
            Attr(SORT_KEY).gte(since) if since else None,
            Attr(SORT_KEY).lte(until) if until else None,
        ):
            if cond is not None:
                flt = cond if flt is None else flt & cond
        if flt is not None:
            kwargs["FilterExpression"] = flt
        resp = results.scan(**kwargs)
        items = sorted(resp.get("Items", []), key=lambda i: i.get(SORT_KEY, ""), reverse=True)
    out = [from_dynamo(i) for i in items]
    s3 = client("s3")
    for item in out:  # presigning is a local computation: no request per row
        item["thumbnail_url"] = s3.generate_presigned_url(
            "get_object", Params={"Bucket": item["bucket"], "Key": item["key"]}, ExpiresIn=URL_SECONDS
        )
    return {"items": out, "next_token": _token(resp.get("LastEvaluatedKey"))}


@app.get("/results/<inspection_id>")
@tracer.capture_method
def get_result(inspection_id: str) -> dict:
    item = table(settings.results_table).get_item(Key={"inspection_id": inspection_id}).get("Item")
    if not item:
        raise NotFoundError(f"no inspection {inspection_id}")
    item = from_dynamo(item)
    s3 = client("s3")
    item["image_url"] = s3.generate_presigned_url(
        "get_object", Params={"Bucket": item["bucket"], "Key": item["key"]}, ExpiresIn=URL_SECONDS
    )
    item["reviews"] = _reviews(inspection_id)
    if item.get("heatmap_key"):
        item["heatmap_url"] = s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": settings.results_bucket, "Key": item["heatmap_key"]},
            ExpiresIn=URL_SECONDS,
        )
    return item


def _reviews(inspection_id: str) -> list[dict]:
    resp = table(settings.reviews_table).query(
        KeyConditionExpression=Key(reviews.PARTITION_KEY).eq(inspection_id)
    )
    return [from_dynamo(i) for i in resp.get("Items", [])]


@app.post("/results/<inspection_id>/review")
@tracer.capture_method
def review(inspection_id: str):  # noqa: ANN201 - dict or Response
    item = table(settings.results_table).get_item(Key={"inspection_id": inspection_id}).get("Item")
    if not item:
        return error_response(404, f"no inspection {inspection_id}")
    if item.get("status") != INSPECTED:
        return error_response(409, "a rejected object has no verdict to review")
    try:
        record = reviews.review_record(from_dynamo(item), app.current_event.json_body, False, now_iso())
    except ValueError as exc:
        return error_response(400, str(exc))
    table(settings.reviews_table).put_item(Item=to_dynamo(record))  # history first: never lost
    shown = {k: record[k] for k in record if k not in (reviews.PARTITION_KEY,)}
    try:  # the newest review is shown on the result; an older one arriving late leaves it
        table(settings.results_table).update_item(
            Key={"inspection_id": inspection_id},
            UpdateExpression="SET #r = :r",
            ConditionExpression="attribute_not_exists(#r) OR #r.review_id < :id",
            ExpressionAttributeNames={"#r": "review"},
            ExpressionAttributeValues={":r": to_dynamo(shown), ":id": record[reviews.SORT_KEY]},
        )
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        logger.info("a newer review is already shown", extra={"inspection_id": inspection_id})
    history = _reviews(inspection_id)
    return {"review": shown, "reviews": len(history)}


def _describe(model: str) -> dict:
    return invoke_endpoint_json(settings.endpoints[model], {"describe": True})


@app.get("/classes")
@tracer.capture_method
def list_classes() -> dict:
    now = time.monotonic()
    if _classes_cache["value"] is None or now - _classes_cache["at"] > CLASSES_TTL_SECONDS:
        models = {}
        for model in MODELS:
            try:
                models[model] = _describe(model)
            except TransientFailure as exc:
                logger.warning("endpoint not describable", extra={"model": model, "error": str(exc)})
                models[model] = {"available": False, "error": str(exc)}
        _classes_cache.update(at=now, value=models)
    models = _classes_cache["value"]
    names = sorted({c for m in models.values() for c in m.get("classes", {})})
    return {"classes": names, "models": models}


@app.get("/stats")
@tracer.capture_method
def get_stats() -> dict:
    q = app.current_event.query_string_parameters or {}
    return stats_view(
        settings.stats_table, os.environ.get("DLQ_NAME"), q.get("class_name"), q.get("line"), q.get("since"),
        q.get("until"),
    )  # fmt: skip


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
