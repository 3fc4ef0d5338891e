"""Worker Lambda: SQS batch of S3 notifications -> one inspection result per inbox object.

Per object: class from the key (`<line>/<class_name>/<file>`) or the object's `class-name` metadata, read it
(bounded), score it on the endpoint, store heatmap + result JSON in the results bucket and the result item in
DynamoDB. Idempotent on (bucket, key, etag): a redelivered message never makes a second result. Permanent
problems become a REJECTED item and are not retried; transient ones fail only their SQS record, so SQS retries
it and finally moves it to the dead-letter queue.
"""

from __future__ import annotations

import base64
import json
import os
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError
from common import (  # type: ignore[import-not-found]  # Lambda puts functions/ on the path
    IMAGE_SUFFIXES,
    RejectedImage,
    Settings,
    TransientFailure,
    class_from_key,
    client,
    inspection_id,
    invoke_endpoint,
    now_iso,
    table,
    to_dynamo,
)

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "IVADAS"))
settings = Settings.from_env()
processor = BatchProcessor(event_type=EventType.SQS)
idempotency_config = IdempotencyConfig(
    event_key_jmespath="[bucket, key, etag]",
    expires_after_seconds=int(os.environ.get("IDEMPOTENCY_TTL_SECONDS", str(7 * 24 * 3600))),
    raise_on_no_idempotency_key=True,
)
persistence = DynamoDBPersistenceLayer(table_name=settings.idempotency_table)


def _metric(name: str, class_name: str, model: str, value: float = 1, unit=MetricUnit.Count) -> None:
    with single_metric(name=name, unit=unit, value=value, namespace=metrics.namespace) as m:
        m.add_dimension(name="class_name", value=class_name)
        m.add_dimension(name="model", value=model)


def _reject(obj: dict, class_name: str | None, reason: str) -> dict:
    item = {
        "inspection_id": obj["inspection_id"],
        "status": "REJECTED",
        "reason": reason,
        "class_name": class_name or "unassigned",
        "line": obj.get("line"),
        "created_at": now_iso(),
        "bucket": obj["bucket"],
        "key": obj["key"],
        "etag": obj["etag"],
        "size_bytes": obj.get("size"),
        "model": settings.default_model,
    }
    table(settings.results_table).put_item(Item=to_dynamo(item))
    logger.warning(
        "rejected", extra={"inspection_id": obj["inspection_id"], "key": obj["key"], "reason": reason}
    )
    _metric("Rejected", item["class_name"], settings.default_model)
    return item


def _resolve_class(obj: dict, head: dict) -> tuple[str | None, str | None]:
    line, class_name = class_from_key(obj["key"])
    meta = {k.lower(): v for k, v in head.get("Metadata", {}).items()}
    return line or meta.get("line"), class_name or meta.get("class-name") or meta.get("class_name")


@idempotent_function(data_keyword_argument="obj", config=idempotency_config, persistence_store=persistence)
def inspect_object(obj: dict) -> dict:
    """Inspect one object version exactly once; returns the result item."""
    s3 = client("s3")
    try:
        # one GET for metadata and body; the body is only read once its size is known to be acceptable
        head = s3.get_object(Bucket=obj["bucket"], Key=obj["key"], IfMatch=f'"{obj["etag"]}"')
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound", "412", "PreconditionFailed"):
            return _reject(obj, None, "the object no longer exists in this version")
        raise TransientFailure(f"cannot read s3://{obj['bucket']}/{obj['key']}: {err}") from None
    line, class_name = _resolve_class(obj, head)
    obj["line"] = line
    size = int(head.get("ContentLength", 0))
    obj["size"] = size
    if not class_name or size == 0 or size > settings.max_image_bytes:
        head["Body"].close()  # not reading it: release the connection
    if not class_name:
        return _reject(
            obj, None, "no class: put images under <line>/<class_name>/ or set metadata class-name"
        )
    if size == 0:
        return _reject(obj, class_name, "empty file (0 bytes)")
    if size > settings.max_image_bytes:
        return _reject(
            obj, class_name, f"file of {size} bytes is over the {settings.max_image_bytes} byte limit"
        )
    if not obj["key"].lower().endswith(IMAGE_SUFFIXES):
        return _reject(obj, class_name, "not an image file name (.png, .jpg, .jpeg)")
    image = head["Body"].read()
    model = settings.default_model
    endpoint = settings.endpoints[model]
    try:
        answer = invoke_endpoint(endpoint, class_name, image)
    except RejectedImage as exc:
        return _reject(obj, class_name, str(exc))
    result = answer.result
    iid = obj["inspection_id"]
    heatmap_key = f"heatmaps/{class_name}/{iid}.png"
    result_key = f"results/{class_name}/{iid}.json"
    heatmap = result.pop("heatmap_png_base64", None)
    if heatmap:
        client("s3").put_object(
            Bucket=settings.results_bucket,
            Key=heatmap_key,
            Body=base64.b64decode(heatmap),
            ContentType="image/png",
        )
    item = {
        "inspection_id": iid,
        "status": "INSPECTED",
        "class_name": class_name,
        "line": line,
        "created_at": now_iso(),
        "bucket": obj["bucket"],
        "key": obj["key"],
        "etag": obj["etag"],
        "size_bytes": size,
        "model": result.get("model", model),
        "model_version": result.get("model_version"),
        "endpoint": endpoint,
        "anomaly_score": result.get("anomaly_score"),
        "normalized_score": result.get("normalized_score"),
        "threshold": result.get("threshold"),
        "is_anomaly": bool(result.get("is_anomaly")),
        "regions": result.get("regions", []),
        "image_width": result.get("image_width"),
        "image_height": result.get("image_height"),
        "heatmap_key": heatmap_key if heatmap else None,
        "result_key": result_key,
        "endpoint_latency_ms": round(answer.latency_ms, 3),
    }
    if item["is_anomaly"]:
        item["anomaly_class"] = class_name  # only anomalies enter the sparse anomalies-by-class index
    client("s3").put_object(
        Bucket=settings.results_bucket,
        Key=result_key,
        Body=json.dumps({**item, "endpoint_response": result}, default=str).encode(),
        ContentType="application/json",
    )
    table(settings.results_table).put_item(Item=to_dynamo(item))
    logger.info(
        "inspected",
        extra={
            "inspection_id": iid,
            "key": obj["key"],
            "is_anomaly": item["is_anomaly"],
            "score": item["anomaly_score"],
        },
    )
    _metric("ImagesInspected", class_name, item["model"])
    if item["is_anomaly"]:
        _metric("AnomaliesFound", class_name, item["model"])
    _metric("EndpointLatency", class_name, item["model"], answer.latency_ms, MetricUnit.Milliseconds)
    return item


def _objects(record: SQSRecord) -> list[dict]:
    """The inbox objects named by one SQS message (an S3 event with one or more records)."""
    try:
        body = json.loads(record.body)
    except ValueError:
        logger.error("SQS message is not JSON: dropped", extra={"message_id": record.message_id})
        return []
    if isinstance(body, dict) and body.get("Event") == "s3:TestEvent":
        return []
    out = []
    for r in S3Event(body).records:
        key = unquote_plus(r.s3.get_object.key)
        bucket = r.s3.bucket.name
        etag = r.s3.get_object.etag or ""
        if not etag:  # moto's events may lack it: ask S3 for the current version's tag
            etag = client("s3").head_object(Bucket=bucket, Key=key)["ETag"]
        etag = etag.strip('"')
        out.append(
            {"bucket": bucket, "key": key, "etag": etag, "inspection_id": inspection_id(bucket, key, etag)}
        )
    return out


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    for obj in _objects(record):
        logger.append_keys(inspection_id=obj["inspection_id"])
        inspect_object(obj=obj)  # TransientFailure propagates: this record goes back to SQS


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict:
    idempotency_config.register_lambda_context(context)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
