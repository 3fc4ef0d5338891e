"""Worker Lambda: SQS batch of S3 notifications -> one inspection result per inbox object.

Each object is inspected once (Idempotency on bucket, key and ETag: a redelivered message never makes a second
result) by `inspector.inspect`. A transient failure fails only its SQS record (partial batch response), after
the retries `retries` allows within the invocation, and its message comes back after the next step of the
redelivery schedule rather than the queue's visibility timeout.
"""

from __future__ import annotations

import math
import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from ivadas_contract.inspection import INSPECTED
from ivadas_functions import inspector, retries
from ivadas_functions.aws import Settings, TransientFailure

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "IVADAS"))
settings = Settings.from_env()
processor = BatchProcessor(event_type=EventType.SQS)
#: The most time any invocation had when it started (the function's Timeout): the latest an idempotency record
#: taken by another invocation can stay in progress.
_longest_invocation_s = 0.0


class _Batch:
    """The batch being handled (Lambda runs one invocation at a time in an execution environment, and
    powertools handles its records one after the other). A plain class: the local runtime loads this module
    outside sys.modules, where a dataclass cannot resolve its annotations."""

    def __init__(self, records: int = 0) -> None:
        self.records_left = records  # not yet started
        self.failing = False  # a record of it failed transiently


_batch = _Batch()


def _replayed(response: dict, record: DataRecord) -> dict:
    """A delivery of an object already inspected: its stored result, no second inspection (logged, so how
    often at-least-once delivery repeats itself is visible)."""
    logger.info("already inspected: delivered again", extra={"status": (response or {}).get("status")})
    return response


idempotency_config = IdempotencyConfig(
    event_key_jmespath="[bucket, key, etag]",
    expires_after_seconds=int(os.environ.get("IDEMPOTENCY_TTL_SECONDS", str(7 * 24 * 3600))),
    raise_on_no_idempotency_key=True,
    response_hook=_replayed,
)
persistence = DynamoDBPersistenceLayer(table_name=settings.idempotency_table)


def _metric(name: str, record: dict, value: float = 1, unit: str = MetricUnit.Count) -> None:
    with single_metric(name=name, unit=unit, value=value, namespace=metrics.namespace) as m:
        m.add_dimension(name="class_name", value=record["class_name"])
        m.add_dimension(name="model", value=record["model"])


def observe(record: dict) -> None:
    """One log line and the metrics of a finished inspection."""
    if record["status"] != INSPECTED:
        logger.warning("rejected", extra={"key": record["key"], "reason": record["reason"]})
        _metric("Rejected", record)
        return
    logger.info(
        "inspected",
        extra={"key": record["key"], "is_anomaly": record["is_anomaly"], "score": record["anomaly_score"]},
    )
    _metric("ImagesInspected", record)
    if record["is_anomaly"]:
        _metric("AnomaliesFound", record)
    _metric("EndpointLatency", record, record["endpoint_latency_ms"], MetricUnit.Milliseconds)
    if "shadow_agrees" in record:  # the dashboard's baseline/candidate agreement (mean of 0/1)
        _metric("CandidateAgreement", record, 1 if record["shadow_agrees"] else 0)
    elif "shadow" in record:
        _metric("CandidateErrors", record)


# key_prefix: the record's key must not depend on the module's import name (Lambda's is the handler path; the
# local runtime loads one copy per execution environment), or two environments inspect the same object.
@idempotent_function(
    data_keyword_argument="obj",
    config=idempotency_config,
    persistence_store=persistence,
    key_prefix="inspection",
)
def inspect_once(obj: dict, window: retries.RetryWindow | None = None) -> dict:
    record = inspector.inspect(obj, settings, window)
    observe(record)
    return record


def _delivery(record: SQSRecord) -> int:
    """Which delivery of its message this is (SQS's ApproximateReceiveCount; 1 where an event lacks it)."""
    return int(record.attributes.get("ApproximateReceiveCount") or 1)


def redelivery_delay(exc: Exception, record: SQSRecord) -> int | None:
    """Seconds until a failed message is delivered again; None leaves it to the queue's visibility timeout
    (a failure nobody expects to pass in seconds).

    The idempotency record's in-progress state lasts as long as the invocation that took it had left (it is
    set from the Lambda context's remaining time), and that invocation stops retrying before then
    (retries.RetryWindow). So a retry after a transient failure finds the record deleted (powertools deletes
    it when the call raises) and inspects the image, and a message whose image was in progress elsewhere is
    made visible again only once that other invocation has ended, when the record is completed or has
    expired: never while it is still in progress, which would spend one of its maxReceiveCount deliveries.
    """
    delivery = _delivery(record)
    if isinstance(exc, TransientFailure):
        return retries.redelivery_delay(delivery)
    if isinstance(exc, IdempotencyAlreadyInProgressError):
        return max(retries.redelivery_delay(delivery), math.ceil(_longest_invocation_s) + 1)
    return None


@tracer.capture_method
def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    _batch.records_left = max(0, _batch.records_left - 1)
    try:
        objects = inspector.inbox_objects(record.body)
    except ValueError:
        logger.error("SQS message is not JSON: dropped", extra={"message_id": record.message_id})
        return
    logger.append_keys(message_id=record.message_id)
    for obj in objects:
        logger.append_keys(inspection_id=obj["inspection_id"])
        remaining = lambda_context.get_remaining_time_in_millis()
        window = retries.RetryWindow.for_record(remaining, _batch.records_left)
        try:
            if _batch.failing and not window.allows(0):  # its time is the rest of the batch's
                raise TransientFailure("not tried: the endpoint failed earlier in this invocation")
            inspect_once(obj=obj, window=window)
        except Exception as exc:  # TransientFailure, or in progress elsewhere: this record goes back to SQS
            _batch.failing = _batch.failing or isinstance(exc, TransientFailure)
            delay = redelivery_delay(exc, record)
            queue = settings.inspection_queue_url
            if delay is not None and queue:
                delay = delay if retries.redeliver_after(queue, record.receipt_handle, delay) else None
            # the last of these for a message is why it is in the dead-letter queue (`ivadas redrive` says it)
            logger.warning(
                "inspection failed: the message returns to the queue",
                extra={"error": f"{type(exc).__name__}: {exc}", "delivery": _delivery(record),
                       "retry_in_s": delay},
            )  # fmt: skip
            raise


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict:
    global _longest_invocation_s, _batch
    _longest_invocation_s = max(_longest_invocation_s, context.get_remaining_time_in_millis() / 1000.0)
    _batch = _Batch(len(event.get("Records", [])))
    idempotency_config.register_lambda_context(context)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
