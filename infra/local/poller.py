"""Lambda's SQS event source mapping, locally: receive up to the batch size (within the batching window), call
the real worker handler with the SQS event, and delete only the messages it did not report in
batchItemFailures. `concurrency` pollers run at once (at most the template's ScalingConfig
MaximumConcurrency), each with its own copy of the handler."""

from __future__ import annotations

import logging
import threading
import time

import boto3

from infra.local.lambda_runtime import LambdaContext, function_timeout, load_handler
from infra.template import REGION, Stack

log = logging.getLogger("ivadas.local")
WORKER = "WorkerFunction"
QUEUE = "InspectionQueue"


def sqs_record(message: dict, queue_arn: str) -> dict:
    """One record of the event Lambda builds from a received message."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


class Poller:
    def __init__(self, stack: Stack, queue_url: str, concurrency: int) -> None:
        event = stack.sqs_event(WORKER)
        self.stack = stack
        self.batch_size = int(event.get("BatchSize", 10))
        self.window_s = float(event.get("MaximumBatchingWindowInSeconds", 0))
        self.timeout_s = function_timeout(stack, WORKER)
        self.function_name = str(stack.resolve(stack.props(WORKER)["FunctionName"]))
        self.queue_url = queue_url
        self.queue_arn = stack.get_att(QUEUE, "Arn")
        cap = event.get("ScalingConfig", {}).get("MaximumConcurrency")  # as the event source mapping caps it
        concurrency = min(concurrency, int(cap)) if cap else concurrency
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), name=f"poller-{i}", daemon=True)
            for i in range(concurrency)
        ]
        self.invocations = 0

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _receive(self, sqs) -> list[dict]:
        messages: list[dict] = []
        deadline = time.monotonic() + self.window_s
        while len(messages) < self.batch_size and not self.stop.is_set():
            wait = 1 if not messages else max(0, int(deadline - time.monotonic()))
            resp = sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
                WaitTimeSeconds=wait,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            got = resp.get("Messages", [])
            messages.extend(got)
            if not messages or not got or time.monotonic() >= deadline:
                break
        return messages

    def _delete(self, sqs, messages: list[dict]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
            sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)

    def _run(self, index: int) -> None:
        sqs = boto3.client("sqs")
        handler = load_handler(self.stack, WORKER, str(index))
        while not self.stop.is_set():
            try:
                messages = self._receive(sqs)
            except Exception:  # noqa: BLE001 - moto restarting or shutting down
                time.sleep(0.5)
                continue
            if not messages:
                continue
            event = {"Records": [sqs_record(m, self.queue_arn) for m in messages]}
            try:
                result = handler(event, LambdaContext(self.function_name, self.timeout_s)) or {}
            except Exception:  # a crashed invocation: every message returns after the visibility timeout
                log.exception("worker invocation failed")
                continue
            self.invocations += 1
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
            self._delete(sqs, [m for m in messages if m["MessageId"] not in failed])
