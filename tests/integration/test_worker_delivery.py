"""The worker under SQS's at-least-once delivery: moto in server mode holds what template.yaml declares (the
inbox's notification, the queue with its redrive policy to the DLQ, the tables), a stand-in for the SageMaker
runtime answers and counts every request, and the real worker handler does the rest.

`deliver` below is the Lambda SQS event source mapping's documented contract (receive a batch, invoke the
function with it, delete the messages its batchItemFailures does not name), so these tests hold SQS and the
handler to their behaviour whatever runs the worker locally. Counting requests at the stand-in and counter
writes in the stats table shows what a redelivery did: a count of result items cannot, as a re-inspection
overwrites the same item.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from urllib.parse import unquote_plus

import boto3
import pytest

from infra.local.processes import ROOT, free_port, wait_http
from infra.local.provision import provision
from infra.local.state import aws_environment
from infra.template import Stack, load_template
from ivadas_contract.inspection import inspection_id
from ivadas_contract.results_table import from_dynamo
from tests.runtime_standin import RuntimeStandIn, model_error, scored, service_error

MAX_RECEIVE = 2
VISIBILITY_S = 1
PARAMETERS = {
    "Stage": "local",
    "QueueVisibilityTimeoutSeconds": str(VISIBILITY_S),
    "MaxReceiveCount": str(MAX_RECEIVE),
    "ShadowCandidate": "false",
}


class Context:
    """The Lambda context the handler reads (powertools' idempotency uses the remaining time)."""

    function_name = "ivadas-local-worker"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ivadas-local-worker"
    aws_request_id = "req"

    def __init__(self, timeout_s: float = 60) -> None:
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Pipeline:
    names: dict[str, str]
    worker: ModuleType
    runtime: RuntimeStandIn
    #: deliveries to the worker, by the inbox key the message names
    deliveries: Counter = field(default_factory=Counter)

    @property
    def queue(self) -> str:
        return self.names["InspectionQueue"]

    @property
    def dlq(self) -> str:
        return self.names["InspectionDeadLetterQueue"]


@pytest.fixture(scope="module")
def moto_port() -> Iterator[int]:
    """The local stack's moto server (infra.local.moto_server), in a process of its own."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.local.moto_server", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", 60, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def runtime() -> Iterator[RuntimeStandIn]:
    with RuntimeStandIn() as standin:
        yield standin


@pytest.fixture
def pipeline(moto_port: int, runtime: RuntimeStandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    base = f"http://127.0.0.1:{moto_port}"
    urllib.request.urlopen(urllib.request.Request(f"{base}/moto-api/reset", method="POST"), timeout=10)
    runtime.reset(default=scored())
    stack = Stack(load_template(), PARAMETERS)
    port = int(runtime.url.rsplit(":", 1)[1])
    for key, value in aws_environment(moto_port, port).items():
        monkeypatch.setenv(key, value)
    names = provision(stack)
    for key, value in stack.functions_environment().items():  # with the queue's URL, as Ref gives it
        monkeypatch.setenv(key, value)
    for name in [m for m in sys.modules if m.split(".")[0] == "ivadas_functions"]:
        monkeypatch.delitem(sys.modules, name)  # a fresh worker (its settings and clients) per test
    p = Pipeline(names, importlib.import_module("ivadas_functions.worker"), runtime)
    drain(p)  # S3's s3:TestEvent from configuring the notification
    assert runtime.count() == 0
    yield p


def _keys(message: dict) -> list[str]:
    body = json.loads(message["Body"])
    return [unquote_plus(r["s3"]["object"]["key"]) for r in body.get("Records", [])]


def deliver(
    p: Pipeline, wait_s: int = 0, delete: bool = True, timeout_s: float = 60
) -> tuple[list[dict], set[str]]:
    """One poll of the event source mapping: the messages received and the ids that failed (all of them when
    the invocation itself failed), in an invocation of `timeout_s`. With `delete=False` the invocation's
    deletes are lost (as when its instance dies right after it returns)."""
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(QueueUrl=p.queue, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s,
                                   AttributeNames=["All"]).get("Messages", [])  # fmt: skip
    if not messages:
        return [], set()
    records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
                "awsRegion": "us-east-1"} for m in messages]  # fmt: skip
    for m in messages:
        p.deliveries.update(_keys(m))
    try:
        result = p.worker.handler({"Records": records}, Context(timeout_s))
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    except Exception:  # noqa: BLE001 - a failed invocation (powertools raises when every record failed)
        failed = {m["MessageId"] for m in messages}  # Lambda then deletes none of the batch
    done = [m for m in messages if m["MessageId"] not in failed]
    if delete and done:
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)]
        sqs.delete_message_batch(QueueUrl=p.queue, Entries=entries)
    return messages, failed


def drain(p: Pipeline) -> None:
    while deliver(p)[0]:
        pass


def depth(p: Pipeline, queue: str) -> int:
    attrs = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def put(p: Pipeline, key: str, body: bytes) -> str:
    inbox = p.names["InboxBucket"]
    etag = boto3.client("s3").put_object(Bucket=inbox, Key=key, Body=body)["ETag"].strip('"')
    return inspection_id(inbox, key, etag)


def result(p: Pipeline, iid: str) -> dict | None:
    table = boto3.resource("dynamodb").Table(p.names["ResultsTable"])
    item = table.get_item(Key={"inspection_id": iid}, ConsistentRead=True).get("Item")
    return from_dynamo(item) if item else None


def counted(p: Pipeline, class_name: str, counter: str) -> int:
    """What the stats table counted for a class (each stored result adds to it once)."""
    table = boto3.resource("dynamodb").Table(p.names["StatsTable"])
    items = table.query(
        KeyConditionExpression="class_name = :c", ExpressionAttributeValues={":c": class_name}
    )["Items"]
    return sum(int(i.get(counter, 0)) for i in items)


def test_a_redelivered_object_is_not_inspected_again(pipeline: Pipeline) -> None:
    """A delete lost after the result was stored, then a duplicate notification: both deliveries reach the
    worker, neither calls the endpoint or writes a result again (the idempotency record answers them)."""
    p, image = pipeline, b"redelivered image"
    iid = put(p, "line1/widget/again.png", image)
    messages, failed = deliver(p, delete=False)  # stored, then the deletes are lost
    assert len(messages) == 1 and not failed
    first = result(p, iid)
    assert first["status"] == "INSPECTED" and p.runtime.count(image) == 1
    time.sleep(VISIBILITY_S + 0.2)
    again, failed = deliver(p, wait_s=2)
    assert [m["MessageId"] for m in again] == [messages[0]["MessageId"]] and not failed
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    boto3.client("sqs").send_message(QueueUrl=p.queue, MessageBody=messages[0]["Body"])  # S3 said it twice
    duplicate, failed = deliver(p, wait_s=2)
    assert len(duplicate) == 1 and not failed
    assert p.deliveries["line1/widget/again.png"] == 3
    assert p.runtime.count(image) == 1, "a redelivery called the endpoint again"
    assert counted(p, "widget", "inspected") == 1, "a redelivery stored the result again"
    assert result(p, iid)["created_at"] == first["created_at"]
    assert depth(p, p.queue) == 0 and depth(p, p.dlq) == 0


def test_a_transient_failure_is_retried_within_the_invocation(pipeline: Pipeline) -> None:
    p, image, key = pipeline, b"image the model failed on once", "line1/widget/flaky.png"
    p.runtime.script(model_error(500, "CUDA out of memory"))  # one failure inside the model, then scores
    iid = put(p, key, image)
    messages, failed = deliver(p)
    assert len(messages) == 1 and not failed
    item = result(p, iid)
    assert item["status"] == "INSPECTED" and item["model_version"] == "patchcore-standin"
    assert p.runtime.count(image) == 2 and counted(p, "widget", "inspected") == 1
    assert depth(p, p.queue) == 0 and depth(p, p.dlq) == 0


def test_a_failure_past_the_invocation_comes_back_after_the_workers_backoff_step(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker sets the failed message's visibility (ChangeMessageVisibility) and SQS keeps to it: not back
    after the queue's own timeout (1 s here), but after the step (3 s)."""
    p, image, key = pipeline, b"image while the model loads", "line1/widget/loading.png"
    monkeypatch.setattr(p.worker.retries, "REDELIVERY_FIRST_S", 3)
    monkeypatch.setattr(p.worker.retries, "JITTER_FLOOR", 1.0)
    p.runtime.script(service_error(429, "ModelNotReadyException", "model is loading"))
    iid = put(p, key, image)
    messages, failed = deliver(p, timeout_s=2)  # no time to retry within the invocation
    assert failed == {messages[0]["MessageId"]} and result(p, iid) is None
    failed_at = time.monotonic()
    time.sleep(VISIBILITY_S + 0.5)
    assert deliver(p)[0] == []  # the queue's visibility timeout has passed: still invisible
    again, failed = deliver(p, wait_s=5)
    assert time.monotonic() - failed_at >= 3 - 0.1 and not failed
    assert [m["MessageId"] for m in again] == [messages[0]["MessageId"]]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    assert result(p, iid)["status"] == "INSPECTED" and p.runtime.count(image) == 2


def test_an_endpoint_that_stays_down_dead_letters_after_max_receive_count(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    p, image, key = pipeline, b"image while the endpoint is down", "line1/widget/stranded.png"
    monkeypatch.setattr(p.worker.retries, "REDELIVERY_FIRST_S", 1)  # every step about a second
    monkeypatch.setattr(p.worker.retries, "REDELIVERY_CAP_S", 1)
    p.runtime.reset(default=service_error(503, "ServiceUnavailable", "no healthy instance"))
    iid = put(p, key, image)
    deadline = time.monotonic() + 30
    while depth(p, p.dlq) == 0 and time.monotonic() < deadline:
        deliver(p, wait_s=1, timeout_s=2)
    assert depth(p, p.dlq) == 1 and depth(p, p.queue) == 0
    assert p.deliveries[key] == MAX_RECEIVE  # every delivery reached the worker, none after the last
    assert p.runtime.count(image) == MAX_RECEIVE  # each one tried the endpoint once (no time to retry within)
    assert result(p, iid) is None and counted(p, "widget", "rejected") == 0  # nothing stored: it waits
    (dead,) = boto3.client("sqs").receive_message(QueueUrl=p.dlq, AttributeNames=["All"])["Messages"]
    assert _keys(dead) == [key]
    # SQS's own count agrees: moto keeps a message's receive count when it moves it, and this receive adds one
    assert int(dead["Attributes"]["ApproximateReceiveCount"]) == MAX_RECEIVE + 1
