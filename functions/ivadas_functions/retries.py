"""When a transient endpoint failure is tried again: within the worker's invocation, then between deliveries
of its SQS message (and, within a few seconds, for `/predict`). boto3's client makes one request per call:
this is the one retry policy of the endpoint calls, so no second layer with its own backoff stretches a call
past the invocation's time.

An endpoint that fails for a moment (an instance replaced, a throttling burst, a deployment's brief 5xx) is
back in seconds, while the queue's visibility timeout must outlast a whole invocation (minutes). So a failed
call is retried within the invocation while the Lambda context's time allows, and a record that still fails is
made visible again after the next step of a growing schedule (SQS ChangeMessageVisibility, by its
ApproximateReceiveCount): the retry comes in seconds, and a long outage still ends in the dead-letter queue
after the queue's maxReceiveCount deliveries (docs/operating.md, "Recovery from endpoint faults").

Every wait is drawn between 75 % and 100 % of its step, so the images of one outage do not all come back at
the same moment, and every step is capped.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from aws_lambda_powertools import Logger

from ivadas_functions.aws import TransientFailure, client

logger = Logger(child=True)
T = TypeVar("T")

#: Within an invocation: the first retry's wait; each next one doubles, up to the cap.
RETRY_FIRST_S, RETRY_CAP_S = 0.25, 4.0
#: The longest one record retries within an invocation: an image the model keeps failing on must not hold the
#: rest of its batch for a whole invocation.
RECORD_RETRY_S = 20.0
#: Kept back from the invocation's remaining time for the record's result still to store, and for each
#: record after it in the batch (one call, its visibility change and log lines: tens of milliseconds, kept
#: generously): an invocation past its Timeout would leave its whole batch to the visibility timeout.
RESERVE_S, RESERVE_PER_RECORD_S = 3.0, 0.5
#: Between deliveries: the wait after a message's first failed delivery; each next one doubles, up to the cap.
#: The cap bounds recovery: an endpoint back after an outage of any length has every image in flight tried
#: again within 25 s. The template's MaxReceiveCount (24) makes the steps add up to about 9 minutes of outage
#: before the dead-letter queue.
REDELIVERY_FIRST_S, REDELIVERY_CAP_S = 5, 25
#: The smallest share of a step a jittered wait is.
JITTER_FLOOR = 0.75


class Clock:
    """Time as the retries see it (tests replace it: no real sleeping)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


clock = Clock()
_rng = random.Random()  # nosec B311 - jitter spreads retries in time; nothing secret depends on it


def _jittered(step: float, rng: random.Random | None) -> float:
    return step * (rng or _rng).uniform(JITTER_FLOOR, 1.0)


def retry_wait(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retrying, within the invocation, a call that failed `attempt` + 1 times."""
    return _jittered(min(RETRY_CAP_S, RETRY_FIRST_S * 2**attempt), rng)


def redelivery_delay(delivery: int, rng: random.Random | None = None) -> int:
    """Whole seconds (SQS's unit) until a message whose `delivery`-th delivery failed is delivered again."""
    step = min(REDELIVERY_CAP_S, REDELIVERY_FIRST_S * 2 ** max(0, delivery - 1))
    return max(1, math.ceil(_jittered(step, rng)))


@dataclass(frozen=True)
class RetryWindow:
    """Until when (clock.monotonic) a record's failed call may still be retried within the invocation."""

    until: float

    @classmethod
    def lasting(cls, seconds: float) -> RetryWindow:
        return cls(clock.monotonic() + seconds)

    @classmethod
    def for_record(cls, remaining_ms: int, records_after: int = 0) -> RetryWindow:
        """The window of a record that starts now, in an invocation with `remaining_ms` left and
        `records_after` records of its batch still to come. It closes before the invocation's end, which is
        also when the idempotency record's in-progress state expires (powertools sets that from the same
        remaining time): a record is never still being retried once another delivery may take it over."""
        now = clock.monotonic()
        reserve = RESERVE_S + RESERVE_PER_RECORD_S * records_after
        return cls(min(now + RECORD_RETRY_S, now + remaining_ms / 1000.0 - reserve))

    def allows(self, wait_s: float) -> bool:
        return clock.monotonic() + wait_s < self.until


def call_with_retries(call: Callable[[], T], window: RetryWindow | None) -> T:
    """`call()`, again after each TransientFailure while `window` allows the next wait (no window: once)."""
    attempt = 0
    while True:
        try:
            return call()
        except TransientFailure as exc:
            wait = retry_wait(attempt)
            if window is None or not window.allows(wait):
                if attempt:
                    raise TransientFailure(f"{exc} (tried {attempt + 1} times in this invocation)") from None
                raise
            logger.info("endpoint call failed: retrying", extra={"error": str(exc), "attempt": attempt + 1,
                                                                  "wait_s": round(wait, 2)})  # fmt: skip
            clock.sleep(wait)
            attempt += 1


def redeliver_after(queue_url: str, receipt_handle: str, seconds: int) -> bool:
    """Make a received message visible again in `seconds` (instead of the queue's visibility timeout); False
    when SQS refused, and the message then comes back after the visibility timeout as before."""
    try:
        client("sqs").change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )
    except Exception as exc:  # noqa: BLE001 - the record is reported failed either way
        logger.warning("could not shorten the message's visibility", extra={"error": f"{exc}"})
        return False
    return True
