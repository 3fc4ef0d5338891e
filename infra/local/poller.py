"""Lambda's SQS event source mapping, locally: receive up to the batch size (within the batching window), call
the real worker handler with the SQS event, and delete only the messages it did not report in
batchItemFailures. `concurrency` pollers run at once (at most the template's ScalingConfig
MaximumConcurrency), each with its own execution environment: a child process (infra.local.lambda_process)
that the poller kills when the function's Timeout passes, and replaces when it dies. A batch whose invocation
failed, timed out or crashed is never deleted: its messages return after the visibility timeout, and move to
the dead-letter queue after MaxReceiveCount deliveries, as with Lambda."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boto3

from infra.local.lambda_process import ExecutionEnvironment, InvocationFailed
from infra.local.lambda_runtime import function_timeout
from infra.template import REGION, Stack

log = logging.getLogger("ivadas.local")
WORKER = "WorkerFunction"
QUEUE = "InspectionQueue"
#: Long polling, as the event source mapping's: an idle poller asks SQS once per wait, not once a second.
LONG_POLL_S = 20


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
    def __init__(
        self,
        stack: Stack,
        queue_url: str,
        concurrency: int,
        logs: Path,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
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
        visibility = float(stack.resolve(stack.props(QUEUE).get("VisibilityTimeout", 30)))
        if visibility < self.timeout_s:  # CreateEventSourceMapping refuses this on AWS
            log.warning(
                "queue visibility timeout %.0f s is shorter than the worker timeout %.0f s: a batch still "
                "running is delivered again, and finds its images in progress", visibility, self.timeout_s,
            )  # fmt: skip
        self.environments = [
            ExecutionEnvironment(WORKER, str(i), stack.parameters, logs / f"worker-{i}.log", on_change)
            for i in range(concurrency)
        ]
        self.threads = [
            threading.Thread(target=self._run, args=(i,), name=f"poller-{i}", daemon=True)
            for i in range(concurrency)
        ]
        self.invocations = 0
        self.busy = [False] * concurrency  # an invocation under way (what a shutdown waits for)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def pids(self) -> list[int]:
        """The execution environments' process ids (a test may kill -9 one mid-batch)."""
        return [pid for env in self.environments if (pid := env.ready_pid) is not None]

    def shutdown(self, grace_s: float = 0.0) -> None:
        """No more batches: the ones running get up to `grace_s` to finish (a batch cut short is inspected
        again, where it had reached the endpoint), then every environment is killed. A poller still waiting
        on SQS is not waited for: what it receives now it leaves in the queue."""
        self.stop.set()
        deadline = time.monotonic() + grace_s
        for busy, t in zip(self.busy, self.threads, strict=True):
            if busy and t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
        for env in self.environments:
            env.kill()

    def _receive(self, sqs) -> list[dict]:
        messages: list[dict] = []
        deadline = time.monotonic() + self.window_s
        while len(messages) < self.batch_size and not self.stop.is_set():
            wait = LONG_POLL_S if not messages else max(0, int(deadline - time.monotonic()))
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

    def _start(self, index: int) -> bool:
        try:
            self.environments[index].start()
            return True
        except InvocationFailed as exc:
            log.error("worker environment %d could not start: %s", index, exc)
            time.sleep(1.0)
            return False

    def _run(self, index: int) -> None:
        sqs = boto3.client("sqs")
        env = self.environments[index]
        while not self.stop.is_set():
            if env.pid is None and not self._start(index):  # first start, or the last one was killed
                continue
            try:
                messages = self._receive(sqs)
            except Exception:  # noqa: BLE001 - moto restarting or shutting down
                time.sleep(0.5)
                continue
            self.busy[index] = True
            try:
                if messages and not self.stop.is_set():  # received as the stack stops: left in the queue
                    self._invoke(sqs, env, messages)
            finally:
                self.busy[index] = False

    def _invoke(self, sqs, env: ExecutionEnvironment, messages: list[dict]) -> None:
        """One invocation with the batch; then the messages it did not report failed are deleted."""
        event = {"Records": [sqs_record(m, self.queue_arn) for m in messages]}
        try:
            result = env.invoke(event, self.timeout_s)
        except InvocationFailed as exc:  # every message returns after the visibility timeout
            log.warning("worker invocation failed (%d messages back to the queue): %s", len(messages), exc)
            return
        self.invocations += 1
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        try:
            self._delete(sqs, [m for m in messages if m["MessageId"] not in failed])
        except Exception:  # noqa: BLE001 - not deleted: delivered again, idempotency absorbs it
            log.warning("could not delete a finished batch; its messages will be delivered again")
