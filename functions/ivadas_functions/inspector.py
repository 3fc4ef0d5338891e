"""What happens to one inbox object: read it (bounded), check it, score it, store its heatmap, result JSON and
result item. Plain functions: the worker handler adds idempotency, logging and metrics around them.

Permanent problems (no class, empty, too large, not an image, unknown class) end as a REJECTED record and are
not retried; a transient endpoint failure is retried while the invocation's retry window allows (`retries`),
then raises `TransientFailure`, so SQS delivers the message again and finally moves it to the dead-letter
queue.

In shadow mode the candidate scores the same bytes at the same time as the baseline; the baseline's result is
stored first, whatever the candidate does, and the candidate's answer (or its error) is then added to the same
item. A candidate failure never fails, retries or delays the baseline result.
"""

from __future__ import annotations

import base64
import binascii
import json
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import S3Event
from botocore.exceptions import ClientError

from ivadas_contract.inspection import (
    CLASS_NAME_RULE,
    MAX_CROP_BYTES,
    MAX_STORED_EXPLANATIONS,
    class_from_key,
    class_from_metadata,
    explanation_crop_key,
    heatmap_key,
    inspected_record,
    inspection_id,
    is_class_name,
    is_folder_marker,
    rejected_record,
    shadow_fields,
)
from ivadas_contract.results_table import to_dynamo, to_item
from ivadas_contract.stats import counts_for, shadow_counts
from ivadas_functions import counters
from ivadas_functions.aws import RejectedImage, Settings, TransientFailure, client, invoke_endpoint, table
from ivadas_functions.retries import RetryWindow, call_with_retries

logger = Logger(child=True)
_MISSING = ("404", "NoSuchKey", "NotFound", "412", "PreconditionFailed")
#: Shadow calls run beside the baseline's (a few at once: the worker handles one object at a time per thread).
_shadow_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="shadow")


def inbox_objects(message_body: str) -> list[dict]:
    """The inbox objects one SQS message names (an S3 event with one or more records); none for S3's test
    event and for folder markers. Raises ValueError when the body is not JSON."""
    body = json.loads(message_body)
    if isinstance(body, dict) and body.get("Event") == "s3:TestEvent":
        return []
    out = []
    for r in S3Event(body).records:
        key = unquote_plus(r.s3.get_object.key)
        if is_folder_marker(key):
            continue
        bucket = r.s3.bucket.name
        etag = r.s3.get_object.etag or ""
        if not etag:  # moto's events may lack it: ask S3 for the current version's tag
            etag = client("s3").head_object(Bucket=bucket, Key=key)["ETag"]
        etag = etag.strip('"')
        out.append(
            {"bucket": bucket, "key": key, "etag": etag, "inspection_id": inspection_id(bucket, key, etag)}
        )
    return out


def _problem(class_name: str | None, size: int, limit: int) -> str | None:
    """Why an object cannot be inspected, judged before its body is read; None when it can be."""
    if not class_name:
        return "no class: put images under <line>/<class_name>/ or set metadata class-name"
    if not is_class_name(class_name):
        return f"class {class_name!r} is not a class name ({CLASS_NAME_RULE})"
    if size == 0:
        return "empty file (0 bytes)"
    if size > limit:
        return f"file of {size} bytes is over the {limit} byte limit"
    return None


def inspect(obj: dict, settings: Settings, window: RetryWindow | None = None) -> dict:
    """Inspect one object version; returns its result record (already stored). A transient endpoint failure
    is retried while `window` allows."""
    try:
        # one GET for metadata and body; the body is only read once its size is known to be acceptable
        got = client("s3").get_object(Bucket=obj["bucket"], Key=obj["key"], IfMatch=f'"{obj["etag"]}"')
    except ClientError as err:
        if err.response.get("Error", {}).get("Code", "") in _MISSING:
            return reject(obj, None, "the object no longer exists in this version", settings)
        raise TransientFailure(f"cannot read s3://{obj['bucket']}/{obj['key']}: {err}") from None
    key_line, key_class = class_from_key(obj["key"])
    meta_line, meta_class = class_from_metadata(got.get("Metadata", {}))
    obj["line"], class_name = key_line or meta_line, key_class or meta_class
    obj["size"] = int(got.get("ContentLength", 0))
    problem = _problem(class_name, obj["size"], settings.max_image_bytes)
    if problem:
        got["Body"].close()  # not reading it: release the connection
        return reject(obj, class_name, problem, settings)
    model = settings.default_model
    endpoint = settings.endpoints[model]
    image = got["Body"].read()
    shadow = None
    if settings.shadow_model and settings.shadow_model != model:
        shadow = _shadow_pool.submit(invoke_endpoint, settings.endpoints[settings.shadow_model], class_name,
                                     image, False)  # fmt: skip
    try:
        # explain: a flagged image's regions with their nearest good patches; a good image gets [] at no cost
        answer = call_with_retries(lambda: invoke_endpoint(endpoint, class_name, image, explain=True), window)
    except RejectedImage as exc:  # the model's decoder decides what is an image, whatever the key says
        return reject(obj, class_name, str(exc), settings)
    record = store(obj, class_name, model, endpoint, answer.result, answer.latency_ms, settings)
    if shadow is not None:
        record.update(add_shadow(record, shadow, settings))
    return record


def add_shadow(record: dict, call: Future, settings: Settings) -> dict:
    """The candidate's fields, added to the stored item; its failure is recorded, never raised."""
    try:
        answer = call.result(timeout=settings.shadow_timeout_s)
        fields = shadow_fields(settings.shadow_model, (answer.result, answer.latency_ms), record, None)
    except FutureTimeout:
        fields = shadow_fields(
            settings.shadow_model, None, record, f"no answer in {settings.shadow_timeout_s} s"
        )
    except Exception as exc:  # noqa: BLE001 - the candidate must never fail the baseline's result
        fields = shadow_fields(settings.shadow_model, None, record, f"{type(exc).__name__}: {exc}")
    try:
        table(settings.results_table).update_item(
            Key={"inspection_id": record["inspection_id"]},
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in fields),
            ExpressionAttributeNames={f"#{k}": k for k in fields},
            ExpressionAttributeValues={f":{k}": to_dynamo(v) for k, v in fields.items()},
        )
    except Exception:  # noqa: BLE001 - the baseline's item is already whole
        return {}
    counters.add(settings, record, shadow_counts(fields))
    return fields


def reject(obj: dict, class_name: str | None, reason: str, settings: Settings) -> dict:
    record = rejected_record(obj, class_name, reason, settings.default_model)
    table(settings.results_table).put_item(Item=to_item(record))
    logger.info("result written", extra={"status": record["status"]})  # one line per write: re-writes count
    counters.add(settings, record, counts_for(record))
    return record


def store(
    obj: dict, class_name: str, model: str, endpoint: str, result: dict, latency_ms: float, settings: Settings
) -> dict:
    """Heatmap PNG and result JSON to the results bucket, then the item (last: its presence means done)."""
    s3 = client("s3")
    heatmap = result.pop("heatmap_png_base64", None)
    heatmap_at = heatmap_key(class_name, obj["inspection_id"]) if heatmap else None
    if heatmap:
        s3.put_object(
            Bucket=settings.results_bucket,
            Key=heatmap_at,
            Body=base64.b64decode(heatmap),
            ContentType="image/png",
        )
    keep_explanations(s3, result, class_name, obj["inspection_id"], settings.results_bucket)
    record = inspected_record(obj, class_name, model, endpoint, (result, latency_ms), heatmap_at)
    s3.put_object(
        Bucket=settings.results_bucket,
        Key=record["result_key"],
        Body=json.dumps({**record, "endpoint_response": result}, default=str).encode(),
        ContentType="application/json",
    )
    table(settings.results_table).put_item(Item=to_item(record))
    logger.info("result written", extra={"status": record["status"]})
    counters.add(settings, record, counts_for(record))
    return record


def keep_explanations(s3: Any, result: dict, class_name: str, iid: str, bucket: str) -> None:
    """Put each explanation's nearest-good crop into the results bucket and keep its key in `result` instead
    of the bytes: the item stays small (its indexes copy every attribute), and the console shows the crop
    through a presigned link, as it shows the heatmap. At most MAX_STORED_EXPLANATIONS; a crop that is
    missing, not base64 or over MAX_CROP_BYTES leaves `crop_key` null, the patch's id and boxes stay."""
    found = result.get("explanations")
    if not isinstance(found, list):
        return  # not asked for, or a model server that does not explain
    kept = []
    for n, explanation in enumerate(e for e in found[:MAX_STORED_EXPLANATIONS] if isinstance(e, dict)):
        good = dict(explanation.get("nearest_good") or {})
        crop, good["crop_key"] = good.pop("crop_png_base64", None), None
        try:
            data = base64.b64decode(crop, validate=True) if isinstance(crop, str) else b""
        except (binascii.Error, ValueError):
            data = b""
        if 0 < len(data) <= MAX_CROP_BYTES:
            good["crop_key"] = explanation_crop_key(class_name, iid, n)
            s3.put_object(Bucket=bucket, Key=good["crop_key"], Body=data, ContentType="image/png")
        kept.append({**explanation, "nearest_good": good})
    result["explanations"] = kept
