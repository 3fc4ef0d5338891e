"""The endpoint call's error taxonomy (ivadas_functions.aws), through boto3's own sagemaker-runtime client
and its error parsing, against a real HTTP stand-in that answers as SageMaker does.

What is retried where matters: a RejectedImage ends as a REJECTED result at once, a TransientFailure is
retried on the callers' own schedule (ivadas_functions.retries: within the invocation, then by SQS, finally
the DLQ), so boto3's client makes exactly one request a call.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest

from tests.runtime_standin import RuntimeStandIn, model_error, not_json, scored, service_error

ENDPOINT = "ivadas-local-patchcore"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    module = importlib.import_module("ivadas_functions.aws")
    module._client.cache_clear()  # its clients are cached per AWS_ENDPOINT_URL, not per runtime URL
    yield module
    module._client.cache_clear()


@pytest.fixture
def runtime(aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[RuntimeStandIn]:
    with RuntimeStandIn() as standin:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", standin.url)
        yield standin


def test_a_scored_image_is_returned_with_the_request_as_sagemaker_gets_it(aws, runtime) -> None:
    runtime.script(scored(anomalous=True))
    answer = aws.invoke_endpoint(ENDPOINT, "widget", b"image bytes")
    assert answer.result["is_anomaly"] is True and answer.result["model_version"] == "patchcore-standin"
    assert answer.latency_ms > 0
    (request,) = runtime.received
    assert request.endpoint == ENDPOINT and request.content_type == "application/x-image"
    assert request.custom_attributes == "class_name=widget,return_heatmap=true"
    assert runtime.count(b"image bytes") == 1


REJECTED = {
    # SageMaker wraps a container's refusal in a 424 ModelError; the container's status decides, and the
    # operator reads the model server's own message, not SageMaker's wrapping of it
    "model refused the bytes (400)": (
        model_error(400, '{"error": "not an image: cannot identify image file", "type": "invalid_image"}'),
        "not an image: cannot identify image file",
    ),
    "model does not know the class (422)": (
        model_error(422, '{"error": "class \'capsule\' is not in this patchcore model", "type": "x"}'),
        "class 'capsule' is not in this patchcore model",
    ),
    "model found the image too large (413)": (
        model_error(413, '{"error": "50000000 pixels is over the limit", "type": "too_large"}'),
        "50000000 pixels is over the limit",
    ),
    "SageMaker refused the request (400 ValidationError)": (
        service_error(400, "ValidationError", "1 validation error detected: Value at 'body' failed"),
        "1 validation error detected: Value at 'body' failed",
    ),
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_permanent_refusals_are_rejected_images_and_not_retried(aws, runtime, case: str) -> None:
    reply, message = REJECTED[case]
    runtime.set_default(reply)
    with pytest.raises(aws.RejectedImage) as err:
        aws.invoke_endpoint(ENDPOINT, "widget", b"image")
    assert str(err.value) == message
    assert runtime.count() == 1  # botocore does not retry a 4xx


TRANSIENT = {
    # a failure inside the model (424 with the container's 500): worth another try
    "model failed (424 with 500)": (model_error(500, "CUDA out of memory"), "answered 500 ModelError: CUDA"),
    "model not ready (429)": (
        service_error(429, "ModelNotReadyException", "model is loading"),
        "answered 429 ModelNotReadyException: model is loading",
    ),
    "a dependency failed (530)": (
        service_error(530, "InternalDependencyException", "s3 throttled"),
        "answered 530 InternalDependencyException",
    ),
    "a body that is not JSON": (not_json(), "sent a body that is not JSON"),
    # SageMaker reports throttling as a 400 ThrottlingException: a 400 that must not become a REJECTED result
    "throttled (400 ThrottlingException)": (
        service_error(400, "ThrottlingException", "Rate exceeded"),
        "answered 400 ThrottlingException: Rate exceeded",
    ),
    "internal failure (500)": (
        service_error(500, "InternalFailure", "internal"),
        "answered 500 InternalFailure",
    ),
    "unavailable (503)": (
        service_error(503, "ServiceUnavailable", "no healthy instance"),
        "answered 503 ServiceUnavailable: no healthy instance",
    ),
}


@pytest.mark.parametrize("case", list(TRANSIENT))
def test_transient_answers_are_one_request_each(aws, runtime, case: str) -> None:
    """botocore would retry throttling and 5xx with its own backoff and quota; the client leaves every retry
    to the one schedule the callers keep (ivadas_functions.retries)."""
    reply, message = TRANSIENT[case]
    runtime.set_default(reply)
    with pytest.raises(aws.TransientFailure) as err:
        aws.invoke_endpoint(ENDPOINT, "widget", b"image")
    assert message in str(err.value) and ENDPOINT in str(err.value)
    assert runtime.count() == 1


def test_one_503_is_absorbed_by_a_retry_within_the_window(aws, runtime) -> None:
    from ivadas_functions import retries

    runtime.script(service_error(503, "ServiceUnavailable", "instance replaced"), scored())
    answer = retries.call_with_retries(
        lambda: aws.invoke_endpoint(ENDPOINT, "widget", b"image"), retries.RetryWindow.lasting(5.0)
    )
    assert answer.result["model_version"] == "patchcore-standin"
    assert runtime.count() == 2


def test_an_unreachable_endpoint_is_transient(aws, monkeypatch: pytest.MonkeyPatch) -> None:
    with RuntimeStandIn() as standin:
        url = standin.url
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)  # closed: nothing listens there now
    with pytest.raises(aws.TransientFailure) as err:
        aws.invoke_endpoint(ENDPOINT, "widget", b"image")
    assert f"endpoint {ENDPOINT} unreachable" in str(err.value)


def test_json_requests_share_the_taxonomy(aws, runtime) -> None:
    runtime.script(model_error(400, '{"error": "the body must be JSON", "type": "bad_request"}'))
    with pytest.raises(aws.RejectedImage, match="the body must be JSON"):
        aws.invoke_endpoint_json(ENDPOINT, {"describe": True})
    runtime.script(service_error(400, "ThrottlingException", "Rate exceeded"))
    with pytest.raises(aws.TransientFailure, match="ThrottlingException"):
        aws.invoke_endpoint_json(ENDPOINT, {"describe": True})
    runtime.set_default(scored())
    assert aws.invoke_endpoint_json(ENDPOINT, {"describe": True})["model"] == "patchcore"
    assert [r.content_type for r in runtime.received] == ["application/json"] * 3
