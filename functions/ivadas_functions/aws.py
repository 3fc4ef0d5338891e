"""AWS plumbing the Lambda functions share: settings from the environment, clients, and the endpoint call with
its error taxonomy.

No torch here: the functions stay small and start fast. Every AWS client is a plain boto3 client, so the same
code runs on AWS and against the local stack (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ivadas_contract import errors
from ivadas_contract.limits import MAX_IMAGE_BYTES
from ivadas_contract.models import BASELINE, CANDIDATE, MODELS, endpoint_variable


@dataclass(frozen=True)
class Settings:
    results_table: str
    stats_table: str
    reviews_table: str
    results_bucket: str
    inbox_bucket: str
    idempotency_table: str
    endpoints: dict[str, str]  # model -> endpoint name
    default_model: str
    max_image_bytes: int
    #: the model that also scores every inbox image in shadow (template: ShadowCandidate), or None
    shadow_model: str | None = None
    #: longest wait for the shadow answer once the baseline result is stored
    shadow_timeout_s: float = 10.0
    #: days a stats slot is kept (template: RetentionDays, as for results)
    retention_days: int = 90
    #: the worker's queue (template: the InspectionQueue's URL), where a failed message's retry is scheduled
    inspection_queue_url: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        """Resource names come only from the environment template.yaml sets: no default can name another
        stage's bucket."""
        env = os.environ

        def required(name: str) -> str:
            if not env.get(name):
                raise RuntimeError(f"environment variable {name} is not set (template.yaml sets it)")
            return env[name]

        default_model = env.get("DEFAULT_MODEL", BASELINE)
        if default_model not in MODELS:
            raise RuntimeError(f"DEFAULT_MODEL={default_model} is not one of {', '.join(MODELS)}")
        return cls(
            results_table=required("RESULTS_TABLE"),
            stats_table=required("STATS_TABLE"),
            reviews_table=required("REVIEWS_TABLE"),
            results_bucket=required("RESULTS_BUCKET"),
            inbox_bucket=required("INBOX_BUCKET"),
            idempotency_table=required("IDEMPOTENCY_TABLE"),
            endpoints={model: required(endpoint_variable(model)) for model in MODELS},
            default_model=default_model,
            max_image_bytes=int(env.get("MAX_IMAGE_BYTES", str(MAX_IMAGE_BYTES))),
            shadow_model=CANDIDATE if env.get("SHADOW_CANDIDATE", "false").lower() == "true" else None,
            shadow_timeout_s=float(env.get("SHADOW_TIMEOUT_SECONDS", "10")),
            retention_days=int(env.get("RETENTION_DAYS", "90")),
            inspection_queue_url=env.get("INSPECTION_QUEUE_URL"),
        )


def client(service: str) -> Any:
    """One boto3 client per service per process (Lambda reuses them across invocations), per endpoint: a
    process that talks to one local stack after another (the CLI in tests) never keeps a stale one."""
    return _client(service, os.environ.get("AWS_ENDPOINT_URL"))


@cache
def _client(service: str, endpoint: str | None) -> Any:
    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30)
    if service == "sagemaker-runtime":  # one request a call: callers retry on their own schedule (retries)
        once = {"mode": "standard", "total_max_attempts": 1}
        config = Config(retries=once, connect_timeout=3, read_timeout=60)
    if service == "s3":  # presigned links signed with SigV4 (X-Amz-Expires), not botocore's legacy SigV2
        config = config.merge(Config(signature_version="s3v4"))
    return boto3.client(service, config=config)


#: The API stage's variable naming the UI's origin (template.yaml, Api.Variables): the one origin CORS allows.
UI_ORIGIN_VARIABLE = "uiOrigin"


def ui_origin(event: dict) -> str | None:
    """The UI origin the API stage names, or None (then no answer carries CORS headers)."""
    return (event.get("stageVariables") or {}).get(UI_ORIGIN_VARIABLE) or None


def cors_config() -> Any:
    """CORS headers on every API answer, for the stage's UI origin only; `use(event)` before each resolve.

    The origin is a stage variable, not an environment variable: the UI's CloudFront domain is known only once
    its distribution exists, and the distribution already depends on the API (template.yaml, Api)."""
    from aws_lambda_powertools.event_handler import CORSConfig

    class StageOriginCors(CORSConfig):
        origin: str | None = None

        def use(self, event: dict) -> None:
            self.origin = ui_origin(event)

        def allowed_origin(self, extracted_origin: str) -> str | None:
            return extracted_origin if extracted_origin and extracted_origin == self.origin else None

        def to_dict(self, origin: str | None) -> dict[str, str]:
            return super().to_dict(origin) if origin and origin == self.origin else {}

    headers = ["Authorization", "X-Api-Key"]  # a signed-in user's id token; a machine's API key
    return StageOriginCors(allow_origin="*", allow_headers=headers, max_age=600)


_per_thread = threading.local()


def table(name: str) -> Any:
    """A DynamoDB Table from this thread's one boto3 resource.

    Creating a resource builds a new client and connection pool (about 10 ms of CPU here): too much to pay per
    item. Resources, unlike clients, must not be shared between threads, and the local stack runs several
    worker instances as threads of one process.
    """
    tables = getattr(_per_thread, "tables", None)
    if tables is None:
        tables = _per_thread.tables = {}
    key = (name, os.environ.get("AWS_ENDPOINT_URL"))
    if key not in tables:
        tables[key] = boto3.resource("dynamodb").Table(name)
    return tables[key]


# ------------------------------------------------------------------------------------------ endpoint


class RejectedImage(Exception):
    """The image can never be inspected (not an image, too big, unknown class): record it, do not retry.
    `kind` is the error type (ivadas_contract.errors) the model server gave, for `/predict` to pass on."""

    def __init__(self, message: str, kind: str = "unprocessable") -> None:
        super().__init__(message)
        self.kind = kind


class TransientFailure(Exception):
    """Worth retrying later (endpoint down, throttled, 5xx, a failure inside the model)."""


@dataclass
class EndpointAnswer:
    result: dict
    latency_ms: float


def _status_and_message(err: ClientError) -> tuple[int, str]:
    response = err.response
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    message = response.get("Error", {}).get("Message") or str(err)
    original = response.get("OriginalStatusCode")  # SageMaker wraps container errors in a 424 ModelError
    if original:
        status = int(original)
        message = response.get("OriginalMessage") or message
    return status, message


def invoke_endpoint(
    endpoint: str, class_name: str, image: bytes, return_heatmap: bool = True, explain: bool = False
) -> EndpointAnswer:
    """Score one image; permanent refusals raise RejectedImage, anything worth a retry TransientFailure.
    `explain`: the nearest good training patch of each flagged region (the model server's `explanations`)."""
    attrs = f"class_name={class_name},return_heatmap={'true' if return_heatmap else 'false'}"
    if explain:
        attrs += ",explain=true"
    return _invoke(endpoint, "application/x-image", image, attrs)


def invoke_endpoint_json(endpoint: str, payload: dict) -> dict:
    """A JSON request to the endpoint (for example {"describe": true}); same error taxonomy."""
    return _invoke(endpoint, "application/json", json.dumps(payload).encode(), None).result


def _invoke(endpoint: str, content_type: str, body: bytes, attrs: str | None) -> EndpointAnswer:
    start = time.perf_counter()
    extra = {"CustomAttributes": attrs} if attrs else {}
    try:
        resp = client("sagemaker-runtime").invoke_endpoint(
            EndpointName=endpoint, ContentType=content_type, Accept="application/json", Body=body, **extra
        )
        body = resp["Body"].read()
    except ClientError as err:
        status, message = _status_and_message(err)
        code = err.response.get("Error", {}).get("Code", "")
        if status in (400, 404, 413, 415, 422) and code != "ThrottlingException":
            raise RejectedImage(*_server_error(status, message)) from None
        raise TransientFailure(f"endpoint {endpoint} answered {status} {code}: {message}") from None
    except (BotoCoreError, OSError) as err:
        raise TransientFailure(f"endpoint {endpoint} unreachable: {err}") from None
    try:
        result = json.loads(body)
    except ValueError:
        raise TransientFailure(f"endpoint {endpoint} sent a body that is not JSON") from None
    return EndpointAnswer(result, (time.perf_counter() - start) * 1000.0)


#: the kind of a refusal whose body names none (locally boto3 keeps only the message, not the body's type)
_REFUSAL_KINDS = {400: "invalid_image", 413: "payload_too_large", 415: "unsupported_media_type"}


def _server_error(status: int, message: str) -> tuple[str, str]:
    """(message, error type) of a model server refusal: from its JSON error body where the text is that body
    (on AWS, SageMaker passes it on as OriginalMessage), else from the status."""
    kind = _REFUSAL_KINDS.get(status, "unprocessable")
    try:
        doc = json.loads(message)
    except (ValueError, TypeError):
        return message, kind
    if not isinstance(doc, dict):
        return message, kind
    named = doc.get("type")
    if named in errors.TYPES and 400 <= errors.TYPES[named] < 500:
        kind = named
    return str(doc.get("error", message)), kind
