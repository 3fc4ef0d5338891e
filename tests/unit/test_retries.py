"""The retry schedule of transient endpoint failures (ivadas_functions.retries): the waits within an
invocation, the window they must fit in, and the redelivery steps by receive count."""

from __future__ import annotations

import math
import random

import pytest

from ivadas_functions import retries
from ivadas_functions.aws import RejectedImage, TransientFailure


class FakeClock:
    """Time that passes only when the retries sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(retries, "clock", fake)
    return fake


class Endpoint:
    """Fails `failures` times with `error`, then answers."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures, self.calls = failures, 0
        self.error = error or TransientFailure("endpoint ivadas-x answered 503 ServiceUnavailable")

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "scored"


def test_waits_within_an_invocation_double_from_a_quarter_second_to_four_seconds_jittered() -> None:
    steps = [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    rng = random.Random(26)
    for attempt, step in enumerate(steps):
        waits = [retries.retry_wait(attempt, rng) for _ in range(200)]
        assert all(0.75 * step <= w <= step for w in waits), (attempt, min(waits), max(waits))
        assert max(waits) - min(waits) > 0.2 * step  # jittered: the images of one outage spread out


def test_redelivery_steps_grow_with_the_receive_count_to_25_seconds() -> None:
    rng = random.Random(26)
    steps = {1: 5, 2: 10, 3: 20, 4: 25, 5: 25, 24: 25, 100: 25}
    for delivery, step in steps.items():
        delays = {retries.redelivery_delay(delivery, rng) for _ in range(200)}
        assert all(isinstance(d, int) for d in delays)  # SQS takes whole seconds
        assert min(delays) >= math.floor(0.75 * step) and max(delays) <= step, (delivery, delays)
        assert len(delays) > 1
    # the template's MaxReceiveCount (24) deliveries ride out more than six minutes, at the shortest draws
    assert sum(math.floor(0.75 * steps.get(d, 25)) for d in range(1, 25)) > 360


def test_a_failed_call_is_retried_within_the_window_until_it_answers(clock: FakeClock) -> None:
    endpoint = Endpoint(failures=3)
    window = retries.RetryWindow.for_record(remaining_ms=60_000)
    assert retries.call_with_retries(endpoint, window) == "scored"
    assert endpoint.calls == 4
    assert len(clock.slept) == 3
    assert all(0.75 * s <= w <= s for w, s in zip(clock.slept, [0.25, 0.5, 1.0], strict=True))


def test_retries_stop_where_the_window_closes_and_the_error_says_how_often(clock: FakeClock) -> None:
    endpoint = Endpoint(failures=1000)
    window = retries.RetryWindow.for_record(remaining_ms=60_000)
    with pytest.raises(TransientFailure, match=r"ServiceUnavailable \(tried \d+ times in this invocation"):
        retries.call_with_retries(endpoint, window)
    assert sum(clock.slept) <= retries.RECORD_RETRY_S  # one record never holds its batch longer
    assert clock.now - 1000.0 > retries.RECORD_RETRY_S - retries.RETRY_CAP_S  # and used what it had
    assert endpoint.calls == len(clock.slept) + 1


def test_the_window_closes_before_the_invocation_ends(clock: FakeClock) -> None:
    """The idempotency record's in-progress state expires with the invocation: retries end before it."""
    short = retries.RetryWindow.for_record(remaining_ms=10_000)
    assert short.until == clock.now + 10.0 - retries.RESERVE_S
    batch = retries.RetryWindow.for_record(remaining_ms=10_000, records_after=9)  # each later one its time
    assert batch.until == clock.now + 10.0 - retries.RESERVE_S - 9 * retries.RESERVE_PER_RECORD_S
    assert retries.RetryWindow.for_record(remaining_ms=600_000).until == clock.now + retries.RECORD_RETRY_S
    closed = retries.RetryWindow.for_record(remaining_ms=int(retries.RESERVE_S * 1000))
    endpoint = Endpoint(failures=1)
    with pytest.raises(TransientFailure):
        retries.call_with_retries(endpoint, closed)
    assert endpoint.calls == 1 and clock.slept == []


def test_a_permanent_refusal_and_a_call_without_window_are_tried_once(clock: FakeClock) -> None:
    refused = Endpoint(failures=1, error=RejectedImage("not an image"))
    with pytest.raises(RejectedImage):
        retries.call_with_retries(refused, retries.RetryWindow.for_record(60_000))
    unbounded = Endpoint(failures=1)
    with pytest.raises(TransientFailure):
        retries.call_with_retries(unbounded, None)
    assert refused.calls == unbounded.calls == 1 and clock.slept == []
