"""The worker's answer to each kind of transient endpoint failure: retried within the invocation while its
time allows, then the message's visibility set to the next step of the redelivery schedule (by its receive
count) and the record reported in batchItemFailures; a permanent refusal is REJECTED at once, with no retry.

In-process moto holds S3, DynamoDB and the queue (real receipt handles); the endpoint is the HTTP stand-in
(tests/runtime_standin.py), so boto3's own client and its error parsing produce each failure.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config

from tests.runtime_standin import Reply, RuntimeStandIn, model_error, service_error
from tests.unit.test_handlers import aws, items, put, s3_body  # noqa: F401 - `aws` is a fixture
from tests.unit.test_retries import FakeClock

QUEUE_VISIBILITY_S = 360  # the template's: what a failed message waited for before


class Context:
    function_name = "ivadas-test-worker"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ivadas-test-worker"
    aws_request_id = "req"

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def queue(aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:  # noqa: F811 - the fixture above
    url = boto3.client("sqs").create_queue(
        QueueName="ivadas-test-inspection", Attributes={"VisibilityTimeout": str(QUEUE_VISIBILITY_S)}
    )["QueueUrl"]
    monkeypatch.setenv("INSPECTION_QUEUE_URL", url)
    yield url


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[RuntimeStandIn]:
    with RuntimeStandIn() as standin:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", standin.url)
        yield standin


@pytest.fixture
def worker(queue: str, runtime: RuntimeStandIn, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    module = importlib.import_module("ivadas_functions.worker")
    monkeypatch.setattr(module.retries, "clock", FakeClock())  # retry waits pass at once
    return module


def visibility_changes(worker) -> list[dict]:  # noqa: ANN001
    """Every ChangeMessageVisibility the worker's SQS client sends, as sent."""
    sent: list[dict] = []
    sqs = worker.retries.client("sqs")
    sqs.meta.events.register("provide-client-params.sqs.ChangeMessageVisibility",
                             lambda params, **_: sent.append(dict(params)))  # fmt: skip
    return sent


def deliver(queue: str, key: str, body: bytes, deliveries: int = 1) -> tuple[dict, dict]:
    """The object in the inbox, its S3 event received from the queue `deliveries` times (the last receive's
    handle and count), and the Lambda event of that last delivery."""
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(s3_body(key, put(key, body))))
    for n in range(deliveries):
        hold = {"VisibilityTimeout": 0} if n < deliveries - 1 else {}  # earlier deliveries: back at once
        (message,) = sqs.receive_message(QueueUrl=queue, AttributeNames=["All"], **hold)["Messages"]
    record = {"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
              "body": message["Body"], "attributes": message["Attributes"], "messageAttributes": {},
              "md5OfBody": message["MD5OfBody"], "eventSource": "aws:sqs",
              "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ivadas-test-inspection",
              "awsRegion": "us-east-1"}  # fmt: skip
    return message, {"Records": [record]}


def failed(worker, event: dict, context: Context) -> set[str]:  # noqa: ANN001
    """The message ids the invocation leaves to SQS: its batchItemFailures, or every one when it raised
    (powertools raises when every record failed, and Lambda then deletes none of the batch)."""
    from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

    try:
        return {f["itemIdentifier"] for f in worker.handler(event, context)["batchItemFailures"]}
    except BatchProcessingError:
        return {r["messageId"] for r in event["Records"]}


def hung(seconds: float) -> Reply:
    return Reply(200, b"", delay_s=seconds)


TRANSIENT = {
    "connection refused": None,  # the endpoint's instance is gone
    "read timeout": hung(2.0),
    "throttled (400 ThrottlingException)": service_error(400, "ThrottlingException", "Rate exceeded"),
    "internal failure (500)": service_error(500, "InternalFailure", "internal"),
    "unavailable (503)": service_error(503, "ServiceUnavailable", "no healthy instance"),
    "model not ready (429)": service_error(429, "ModelNotReadyException", "model is loading"),
    "model failed (424 with 500)": model_error(500, "CUDA out of memory"),
}


def answer_with(kind: str, runtime: RuntimeStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    if kind == "connection refused":
        with RuntimeStandIn() as gone:
            url = gone.url
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)  # closed: nothing listens there now
    elif kind == "read timeout":  # the worker's own client waits 60 s; the same failure, sooner
        aws_plumbing = importlib.import_module("ivadas_functions.aws")
        once = Config(read_timeout=0.3, retries={"total_max_attempts": 1})
        fast, original = boto3.client("sagemaker-runtime", config=once), aws_plumbing.client
        pick = lambda service: fast if service == "sagemaker-runtime" else original(service)  # noqa: E731
        monkeypatch.setattr(aws_plumbing, "client", pick)
    if TRANSIENT[kind] is not None:
        runtime.set_default(TRANSIENT[kind])


@pytest.mark.parametrize("kind", list(TRANSIENT))
@pytest.mark.parametrize(("delivery", "step"), [(1, 5), (3, 20)])
def test_each_transient_kind_sets_the_next_backoff_step_as_the_messages_visibility(
    worker, queue: str, runtime: RuntimeStandIn, monkeypatch: pytest.MonkeyPatch, kind: str, delivery: int,
    step: int,
) -> None:  # fmt: skip
    answer_with(kind, runtime, monkeypatch)
    sent = visibility_changes(worker)
    message, event = deliver(queue, "line1/widget/a.png", b"image bytes", delivery)
    assert message["Attributes"]["ApproximateReceiveCount"] == str(delivery)
    # no time left to retry within this invocation: the retry is the redelivery
    assert failed(worker, event, Context(remaining_ms=3_000)) == {message["MessageId"]}
    assert items() == []
    (change,) = sent
    assert change["QueueUrl"] == queue and change["ReceiptHandle"] == message["ReceiptHandle"]
    assert 0.75 * step <= change["VisibilityTimeout"] <= step, change
    assert change["VisibilityTimeout"] < QUEUE_VISIBILITY_S


def test_sqs_delivers_the_message_again_after_its_step_not_the_visibility_timeout(
    worker, queue: str, runtime: RuntimeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setattr(worker.retries, "REDELIVERY_FIRST_S", 1)
    runtime.set_default(service_error(503, "ServiceUnavailable", "no healthy instance"))
    message, event = deliver(queue, "line1/widget/b.png", b"other bytes")
    assert failed(worker, event, Context(remaining_ms=3_000)) == {message["MessageId"]}
    sqs = boto3.client("sqs")
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)
    time.sleep(1.2)
    (again,) = sqs.receive_message(QueueUrl=queue, AttributeNames=["All"], WaitTimeSeconds=2)["Messages"]
    assert again["MessageId"] == message["MessageId"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"


def test_a_failure_that_passes_is_retried_within_the_invocation(
    worker, queue: str, runtime: RuntimeStandIn
) -> None:
    runtime.script(model_error(500, "CUDA out of memory"), service_error(429, "ModelNotReadyException", "x"))
    sent = visibility_changes(worker)
    message, event = deliver(queue, "line1/widget/c.png", b"third bytes")
    assert worker.handler(event, Context(remaining_ms=60_000)) == {"batchItemFailures": []}
    (item,) = items()
    assert item["status"] == "INSPECTED" and runtime.count(b"third bytes") == 3
    assert sent == [] and len(worker.retries.clock.slept) == 2


def test_a_permanent_refusal_is_rejected_at_once_without_a_retry(
    worker, queue: str, runtime: RuntimeStandIn
) -> None:
    runtime.set_default(model_error(422, '{"error": "class \'capsule\' is not in this model", "type": "x"}'))
    sent = visibility_changes(worker)
    _, event = deliver(queue, "line1/capsule/d.png", b"fourth bytes")
    assert worker.handler(event, Context(remaining_ms=60_000)) == {"batchItemFailures": []}
    (item,) = items()
    assert item["status"] == "REJECTED" and "capsule" in item["reason"]
    assert runtime.count(b"fourth bytes") == 1 and sent == [] and worker.retries.clock.slept == []


def test_an_image_in_progress_elsewhere_comes_back_once_that_invocation_has_ended(
    worker, queue: str, runtime: RuntimeStandIn
) -> None:
    """Its idempotency record stays in progress as long as the invocation that took it had left (up to the
    function's timeout): a redelivery sooner would only find it in progress again and spend a delivery."""
    message, event = deliver(queue, "line1/widget/e.png", b"fifth bytes")
    obj = worker.inspector.inbox_objects(message["Body"])[0]
    worker.persistence.configure(worker.idempotency_config, key_prefix="inspection")
    worker.persistence.save_inprogress(data=obj, remaining_time_in_millis=12_000)  # another invocation's
    sent = visibility_changes(worker)
    assert failed(worker, event, Context(remaining_ms=12_000)) == {message["MessageId"]}
    assert runtime.count() == 0
    (change,) = sent
    assert change["VisibilityTimeout"] == 13  # past the other invocation's end, not the 5 s first step


def test_the_first_record_leaves_time_for_the_rest_of_its_batch(
    worker, queue: str, runtime: RuntimeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each record still to come keeps its share of the invocation: one that ran past its Timeout would leave
    the whole batch to the queue's visibility timeout."""
    monkeypatch.setattr(worker.retries, "JITTER_FLOOR", 1.0)  # waits of exactly 0.25, 0.5, 1, 2, 4 s
    runtime.set_default(service_error(503, "ServiceUnavailable", "no healthy instance"))
    events = [deliver(queue, f"line1/widget/batch-{i}.png", f"batch {i}".encode())[1] for i in range(5)]
    batch = {"Records": [r for e in events for r in e["Records"]]}
    assert len(failed(worker, batch, Context(remaining_ms=12_000))) == 5
    # 12 s less 3 s and 0.5 s for each of the 4 after it: 7 s, the time of 5 tries (the 6th starts at 7.75 s)
    assert runtime.count(b"batch 0") == 5


def test_once_the_endpoint_failed_the_batch_keeps_its_time_for_the_rest(
    worker, queue: str, runtime: RuntimeStandIn
) -> None:
    """With no time left to retry, the records after a failed one do not call the failing endpoint again
    (a busy or loading endpoint can take seconds to refuse): each goes straight to its redelivery step."""
    runtime.set_default(service_error(503, "ServiceUnavailable", "model is loading"))
    sent = visibility_changes(worker)
    events = [deliver(queue, f"line1/widget/late-{i}.png", f"late {i}".encode())[1] for i in range(4)]
    batch = {"Records": [r for e in events for r in e["Records"]]}
    assert len(failed(worker, batch, Context(remaining_ms=3_000))) == 4
    assert runtime.count() == 1  # the first record's one try
    assert len(sent) == 4 and all(4 <= change["VisibilityTimeout"] <= 5 for change in sent)
