"""The local stack's poller (Lambda's SQS event source mapping) with the real worker in its execution
environment process, moto in server mode and the runtime stand-in: a failed message comes back when the
worker's ChangeMessageVisibility says, not after the queue's visibility timeout, as with Lambda and SQS."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from infra.local.poller import Poller
from infra.local.provision import provision
from infra.local.state import aws_environment
from infra.template import Stack, load_template
from tests.integration.test_worker_delivery import moto_port  # noqa: F401 - a fixture
from tests.runtime_standin import RuntimeStandIn, scored, service_error

VISIBILITY_S = 40  # far above the first backoff step (5 s): which of the two brought it back is plain
PARAMETERS = {"Stage": "local", "QueueVisibilityTimeoutSeconds": str(VISIBILITY_S),
              "WorkerTimeoutSeconds": "10", "WorkerBatchingWindowSeconds": "0",
              "ShadowCandidate": "false"}  # fmt: skip


@pytest.fixture
def poller(moto_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:  # noqa: F811
    base = f"http://127.0.0.1:{moto_port}"
    urllib.request.urlopen(urllib.request.Request(f"{base}/moto-api/reset", method="POST"), timeout=10)
    with RuntimeStandIn(default=service_error(503, "ServiceUnavailable", "no healthy instance")) as runtime:
        for key, value in aws_environment(moto_port, int(runtime.url.rsplit(":", 1)[1])).items():
            monkeypatch.setenv(key, value)
        stack = Stack(load_template(), PARAMETERS)
        names = provision(stack)
        for key, value in stack.functions_environment().items():  # the worker processes inherit these
            monkeypatch.setenv(key, value)
        boto3.client("sqs").purge_queue(QueueUrl=names["InspectionQueue"])  # S3's s3:TestEvent
        poller = Poller(stack, names["InspectionQueue"], 1, tmp_path)
        poller.start()
        try:
            yield poller, names, runtime, tmp_path / "worker-0.log"
        finally:
            poller.shutdown()


def logged(log: Path, message: str) -> list[dict]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [doc for doc in (json.loads(line) for line in lines if line.startswith("{"))
            if doc["message"] == message]  # fmt: skip


def queued(queue: str) -> int:
    attrs = boto3.client("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_a_failed_message_comes_back_at_the_workers_step_not_the_visibility_timeout(poller: tuple) -> None:
    poller, names, runtime, log = poller
    key = "line1/widget/during-outage.png"
    boto3.client("s3").put_object(Bucket=names["InboxBucket"], Key=key, Body=b"image during an outage")
    deadline = time.monotonic() + 60
    while not (failures := logged(log, "inspection failed: the message returns to the queue")):
        assert time.monotonic() < deadline, "the worker never reported the failure"
        time.sleep(0.2)
    failed_at = time.monotonic()
    runtime.set_default(scored())  # the endpoint is back
    (failure,) = failures
    assert failure["delivery"] == 1 and 4 <= failure["retry_in_s"] <= 5
    assert "ServiceUnavailable" in failure["error"] and "tried" in failure["error"]  # retried within first
    table = boto3.resource("dynamodb").Table(names["ResultsTable"])
    while not (items := table.scan()["Items"]):
        assert time.monotonic() - failed_at < VISIBILITY_S / 2, "back only after the visibility timeout"
        time.sleep(0.2)
    assert time.monotonic() - failed_at >= failure["retry_in_s"] - 1.0  # not before its step either
    assert items[0]["key"] == key and items[0]["status"] == "INSPECTED"
    deadline = time.monotonic() + 10
    while queued(names["InspectionQueue"]) and time.monotonic() < deadline:  # deleted once the batch returns
        time.sleep(0.2)
    assert queued(names["InspectionQueue"]) == 0
    started = time.monotonic()  # idle pollers wait on SQS (20 s long polls): a shutdown leaves them
    poller.shutdown(grace_s=20)
    assert time.monotonic() - started < 10
