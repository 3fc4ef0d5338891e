"""Results Lambda: browse inspection results for operators and the UI.

- `GET /results?class_name=bottle&anomalous=true&since=ISO&until=ISO&limit=50&next_token=...`: newest first,
  paginated (by-class index; anomalies-by-class when anomalous=true; a scan only when no class is given).
- `GET /results/{inspection_id}`: one item, with presigned URLs for its image and heatmap.
- `GET /classes`: the classes each deployed model serves, with model version and threshold.
- `POST /results/export`, with the filters of `GET /results` in the query or as a JSON body: every row as CSV
  in the results bucket, and a presigned link to it (ivadas_functions.exports).
- `POST /results/{inspection_id}/review` `{"verdict": "good" | "defect", "defect_type": ..., "note": ...}`: a
  review by the signed-in user (ivadas_functions.identity), kept as history; the newest is shown on a result.
- `DELETE /results/{inspection_id}/review`: the review shown on a result withdrawn, by its reviewer (or an ML
  engineer): marked in the history, the newest review still standing shown instead, or the result back in
  the review queue when none is left; the counters follow.
- `GET /stats?class_name=&line=&since=ISO&until=ISO`: images inspected, anomaly rate, rejects by reason,
  endpoint latency percentiles and candidate agreement, from the stats table's counters; and the DLQ depth.
"""

from __future__ import annotations

import os
import time
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.exceptions import BadRequestError, NotFoundError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from ivadas_contract import export, reviews, stats
from ivadas_contract.inspection import INSPECTED, now_iso, reviewed_image_key
from ivadas_contract.models import MODELS
from ivadas_contract.results_table import QUEUE_ATTRIBUTES, QUEUE_RANK, from_dynamo, index_keys, to_dynamo
from ivadas_functions import api_errors, counters, identity, request_checks
from ivadas_functions.aws import (
    RejectedImage,
    Settings,
    TransientFailure,
    client,
    cors_config,
    invoke_endpoint_json,
    table,
)
from ivadas_functions.exports import export_csv
from ivadas_functions.results_query import Plan, ResultFilter, plan, query_page, queue_plan
from ivadas_functions.stats_query import stats_view

logger = Logger()
tracer = Tracer()
cors = cors_config()
app = APIGatewayRestResolver(cors=cors)
settings = Settings.from_env()
#: Lifetime of every presigned link this API hands out (images, heatmaps, exports): minutes, not hours.
URL_SECONDS = 300
_classes_cache: dict = {"at": 0.0, "value": None}
CLASSES_TTL_SECONDS = 60


api_errors.install(app, logger)  # the one error shape (ivadas_contract.errors)
app.use(middlewares=[identity.required(identity.READ)])  # signed-in operators and ML engineers


def _query() -> dict[str, str]:
    return request_checks.query(app.current_event.query_string_parameters)  # lengths (openapi/api.yaml)


def _filter(q: dict[str, str]) -> ResultFilter:
    try:
        return ResultFilter.from_query(q)
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None


def _page(p: Plan, q: dict[str, str]) -> dict:
    try:
        size, token = request_checks.page_size(q), q.get("next_token") or None
        page = query_page(table(settings.results_table), p, size, token)
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None
    s3 = client("s3")
    for item in page.items:  # presigning is a local computation: no request per row
        item["thumbnail_url"] = s3.generate_presigned_url(
            "get_object", Params={"Bucket": item["bucket"], "Key": item["key"]}, ExpiresIn=URL_SECONDS
        )
        if item.get("heatmap_key"):
            item["heatmap_url"] = s3.generate_presigned_url(
                "get_object",
                Params={"Bucket": settings.results_bucket, "Key": item["heatmap_key"]},
                ExpiresIn=URL_SECONDS,
            )
        _link_crops(s3, item)
    return {"items": page.items, "next_token": page.next_token, "short": page.short}


def _link_crops(s3: Any, item: dict) -> None:
    """A presigned link (`crop_url`) to each stored explanation's nearest-good crop (the worker put it beside
    the heatmap), as for the heatmap: the console shows the crops without reading the bucket itself."""
    for explanation in item.get("explanations") or []:
        good = explanation.get("nearest_good") or {}
        if good.get("crop_key"):
            good["crop_url"] = s3.generate_presigned_url(
                "get_object", Params={"Bucket": settings.results_bucket, "Key": good["crop_key"]},
                ExpiresIn=URL_SECONDS,
            )  # fmt: skip


@app.get("/results")
@tracer.capture_method
def list_results() -> dict:
    q = _query()
    flt = _filter(q)
    return {**_page(plan(flt, settings.retention_days), q), "filters": flt.to_dict()}


@app.get("/review-queue")
@tracer.capture_method
def review_queue() -> dict:
    q = _query()
    if not q.get("class_name"):
        raise BadRequestError("class_name is required: the queue is kept per class (and line)")
    page = _page(queue_plan(q["class_name"], q.get("line") or None), q)
    return {**page, "defect_types": counters.defect_types(settings, q["class_name"])}


@app.post("/results/export")
@tracer.capture_method
def export_results() -> dict:
    q, body = _query(), request_checks.filters_body(app.current_event)
    if body and any(name in q for name in request_checks.FILTERS):
        raise BadRequestError("give the filters in the query or in the body, not in both")
    q = body or q
    flt = _filter(q)
    try:
        written = export_csv(
            client("s3"), table(settings.results_table), settings.results_bucket,
            plan(flt, settings.retention_days), app.lambda_context.get_remaining_time_in_millis,
            q.get("next_token") or None,
        )  # fmt: skip
    except ValueError as exc:  # a next_token this query did not issue
        raise BadRequestError(str(exc)) from None
    written["url"] = client("s3").generate_presigned_url(
        "get_object", Params={"Bucket": settings.results_bucket, "Key": written["key"]}, ExpiresIn=URL_SECONDS
    )
    return {**written, "columns": list(export.HEADER), "filters": flt.to_dict()}


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
    _link_crops(s3, item)
    return item


def _reviews(inspection_id: str) -> list[dict]:
    resp = table(settings.reviews_table).query(
        KeyConditionExpression=Key(reviews.PARTITION_KEY).eq(inspection_id), ConsistentRead=True
    )
    return [from_dynamo(i) for i in resp.get("Items", [])]


def _shown(record: dict) -> dict:
    """A review as the result shows it (without the table's partition key)."""
    return {k: v for k, v in record.items() if k != reviews.PARTITION_KEY}


@app.post("/results/<inspection_id>/review")
@tracer.capture_method
def review(inspection_id: str):  # noqa: ANN201 - dict or Response
    reviewer = identity.require(app.current_event.raw_event, identity.REVIEW)
    item = table(settings.results_table).get_item(Key={"inspection_id": inspection_id}).get("Item")
    if not item:
        return api_errors.error_response(404, f"no inspection {inspection_id}")
    if item.get("status") != INSPECTED:
        return api_errors.error_response(409, "a rejected object has no verdict to review")
    try:
        record = reviews.review_record(
            from_dynamo(item), request_checks.json_body(app.current_event), reviewer.as_reviewer(), now_iso()
        )
    except ValueError as exc:
        return api_errors.error_response(400, str(exc))
    record["image_copy"] = _keep_image(from_dynamo(item))
    table(settings.reviews_table).put_item(Item=to_dynamo(record))  # history first: never lost
    if record.get("defect_type") and record["verdict"] == "defect":  # offered to the class's next reviewers
        counters.remember_defect_type(settings, item["class_name"], record["defect_type"])
    shown = _shown(record)
    try:  # the newest review is shown on the result (and it leaves the queue); a late older one leaves it
        replaced = table(settings.results_table).update_item(
            Key={"inspection_id": inspection_id},
            UpdateExpression="SET #r = :r REMOVE " + ", ".join(QUEUE_ATTRIBUTES),
            ConditionExpression="attribute_not_exists(#r) OR #r.review_id < :id",
            ExpressionAttributeNames={"#r": "review"},
            ExpressionAttributeValues={":r": to_dynamo(shown), ":id": record[reviews.SORT_KEY]},
            ReturnValues="UPDATED_OLD",
        )
        old = from_dynamo(replaced.get("Attributes", {}).get("review"))
        counters.add(settings, from_dynamo(item), stats.review_counts(shown, old))
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        logger.info("a newer review is already shown", extra={"inspection_id": inspection_id})
    history = _reviews(inspection_id)
    return {"review": shown, "reviews": len(history)}


@app.delete("/results/<inspection_id>/review")
@tracer.capture_method
def withdraw_review(inspection_id: str):  # noqa: ANN201 - dict or Response
    """Take back the review a result shows (an undo): only its reviewer, or an ML engineer, may."""
    who = identity.require(app.current_event.raw_event, identity.REVIEW)
    found = table(settings.results_table).get_item(Key={"inspection_id": inspection_id}, ConsistentRead=True)
    if not found.get("Item"):
        return api_errors.error_response(404, f"no inspection {inspection_id}")
    item = from_dynamo(found["Item"])
    shown = item.get("review")
    if item.get("status") != INSPECTED or not shown:
        return api_errors.error_response(409, "this result has no review to withdraw")
    if not reviews.made_by(shown, who.as_reviewer()) and not who.may(identity.MODERATE):
        raise identity.Forbidden(
            f"{who.username} may withdraw only their own reviews (this one is {shown.get('reviewer')}'s); "
            f"an ML engineer may withdraw anyone's"
        )
    marks = reviews.withdrawal(who.as_reviewer(), now_iso())
    try:  # the withdrawal recorded on the review itself, once
        table(settings.reviews_table).update_item(
            Key={reviews.PARTITION_KEY: inspection_id, reviews.SORT_KEY: shown[reviews.SORT_KEY]},
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in marks),
            ConditionExpression="attribute_exists(review_id) AND attribute_not_exists(withdrawn_at)",
            ExpressionAttributeNames={f"#{k}": k for k in marks},
            ExpressionAttributeValues={f":{k}": v for k, v in marks.items()},
        )
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        return api_errors.error_response(409, "this review was already withdrawn")
    history = _reviews(inspection_id)
    standing = reviews.standing(history)
    restored = _shown(standing) if standing else None
    if restored:  # the review before it shows again, and the result stays out of the queue
        update, names, values = "SET #r = :r", {"#r": "review"}, {":r": to_dynamo(restored)}
    else:  # nothing left standing: the result is unreviewed again, back in the queue (index_keys)
        back = {
            k: v
            for k, v in index_keys({**item, "review": None}).items()
            if k in (*QUEUE_ATTRIBUTES, QUEUE_RANK)
        }
        update = "REMOVE #r" + (" SET " + ", ".join(f"#{k} = :{k}" for k in back) if back else "")
        names = {"#r": "review", **{f"#{k}": k for k in back}}
        values = {f":{k}": to_dynamo(v) for k, v in back.items()}
    try:  # only if the result still shows the review withdrawn (a newer one made meanwhile stays)
        table(settings.results_table).update_item(
            Key={"inspection_id": inspection_id},
            UpdateExpression=update,
            ConditionExpression="#r.review_id = :withdrawn",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={**values, ":withdrawn": shown[reviews.SORT_KEY]},
        )
        counters.add(settings, item, stats.review_counts(restored, shown))
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        logger.info("a newer review is shown: it stays", extra={"inspection_id": inspection_id})
    return {"withdrawn": {**_shown(shown), **marks}, "review": restored, "queued": restored is None,
            "reviews": len(history)}  # fmt: skip


def _keep_image(item: dict) -> str | None:
    """Copy the reviewed image out of the inbox's retention (server-side); None when it is already gone (the
    review is still stored: what the reviewer saw is in the history). A correction reuses the first copy."""
    kept = (item.get("review") or {}).get("image_copy")
    if kept:
        return kept
    key = reviewed_image_key(item["class_name"], item["inspection_id"])
    try:
        client("s3").copy_object(
            Bucket=settings.results_bucket, Key=key, CopySource={"Bucket": item["bucket"], "Key": item["key"]}
        )
    except ClientError as err:
        logger.warning("reviewed image not kept", extra={"key": item["key"], "error": str(err)})
        return None
    return key


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
            except (TransientFailure, RejectedImage) as exc:  # down, or not deployed (a 400 ValidationError)
                logger.warning("endpoint not describable", extra={"model": model, "error": str(exc)})
                models[model] = {"available": False, "error": "unavailable"}  # the cause stays in the log
        _classes_cache.update(at=now, value=models)
    models = _classes_cache["value"]
    names = sorted({c for m in models.values() for c in m.get("classes", {})})
    return {"classes": names, "models": models}


@app.get("/stats")
@tracer.capture_method
def get_stats() -> dict:
    q = _query()
    flt = _filter({k: v for k, v in q.items() if k in ("since", "until")})
    interval = q.get("interval", "hour")
    if interval not in ("hour", "day"):
        raise BadRequestError("interval must be hour or day")
    return stats_view(
        settings.stats_table, os.environ.get("DLQ_NAME"), q.get("class_name") or None, q.get("line") or None,
        flt.since, flt.until, interval,
    )  # fmt: skip


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    cors.use(event)
    return app.resolve(event, context)
