"""A stand-in for the SageMaker runtime's InvokeEndpoint: a real HTTP server on localhost that answers each
request from a script, the way SageMaker answers it, and records every request it receives.

Tests point boto3 at it with AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, so the handlers' own client, its retries and
its error parsing are exercised, and the count of requests shows what a redelivery or a retry really did
(a count of result items cannot: a re-inspection overwrites the same item).

The error replies follow the service model botocore ships for sagemaker-runtime (ModelError 424 with
OriginalStatusCode and OriginalMessage, ValidationError 400, InternalFailure 500, ServiceUnavailable 503,
ModelNotReadyException 429) and SageMaker's common ThrottlingException (400).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PATH = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")
#: SageMaker's x-amzn-ErrorType carries the shape name, then a namespace after a colon (botocore drops it)
_NAMESPACE = ":http://internal.amazon.com/coral/com.amazonaws.sagemaker.runtime/"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # held this long before it is sent (a hung instance: the client's read times out)


@dataclass(frozen=True)
class Received:
    endpoint: str
    content_type: str
    custom_attributes: str
    body_sha256: str


def scored(anomalous: bool = False, heatmap_png: bytes | None = b"\x89PNG\r\n\x1a\n", **extra) -> Reply:
    """A 200 answer with the fields the model server returns for one image."""
    result = {
        "model": "patchcore",
        "model_version": "patchcore-standin",
        "anomaly_score": 3.5 if anomalous else 1.0,
        "normalized_score": 0.8 if anomalous else 0.2,
        "threshold": 2.0,
        "is_anomaly": anomalous,
        "regions": [{"x": 1, "y": 2, "width": 3, "height": 4}] if anomalous else [],
        "image_width": 10,
        "image_height": 10,
        **extra,
    }
    if heatmap_png is not None:
        result["heatmap_png_base64"] = base64.b64encode(heatmap_png).decode()
    return Reply(200, json.dumps(result).encode(), {"Content-Type": "application/json"})


def service_error(status: int, error_type: str, message: str) -> Reply:
    """An error of the runtime service itself (throttling, validation, internal failure, unavailable)."""
    headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": error_type + _NAMESPACE}
    return Reply(status, json.dumps({"message": message}).encode(), headers)


def model_error(original_status: int, original_message: str) -> Reply:
    """SageMaker's 424 ModelError: the container answered `original_status` with `original_message`."""
    body = {
        "ErrorCode": "CLIENT_ERROR_FROM_MODEL" if original_status < 500 else "SERVER_ERROR_FROM_MODEL",
        "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/standin",
        "Message": f"Received error ({original_status}) from primary with message {original_message!r}.",
        "OriginalMessage": original_message,
        "OriginalStatusCode": original_status,
    }
    headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": "ModelError" + _NAMESPACE}
    return Reply(424, json.dumps(body).encode(), headers)


def not_json() -> Reply:
    return Reply(200, b"<html>502 Bad Gateway</html>", {"Content-Type": "text/html"})


class RuntimeStandIn:
    """`with RuntimeStandIn() as runtime:` serves on runtime.url; `runtime.script(...)` queues the next
    replies (after them, `default` answers); `runtime.received` lists every request in arrival order."""

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or scored()
        self.received: list[Received] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="runtime-standin", daemon=True
        )

    def __enter__(self) -> RuntimeStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def set_default(self, reply: Reply) -> None:
        with self._lock:
            self.default = reply

    def reset(self, default: Reply | None = None) -> None:
        """Forget the requests and the script; `default` answers from now on."""
        with self._lock:
            self.received.clear()
            self._script.clear()
            self.default = default or scored()

    def count(self, image: bytes | None = None, endpoint: str | None = None) -> int:
        """Requests received (for these image bytes, at this endpoint)."""
        digest = hashlib.sha256(image).hexdigest() if image is not None else None
        with self._lock:
            return sum(
                1
                for r in self.received
                if (digest is None or r.body_sha256 == digest)
                and (endpoint is None or r.endpoint == endpoint)
            )

    def _answer(self, received: Received | None) -> Reply:
        with self._lock:
            if received is None:
                return Reply(404, b'{"message": "no such route"}', {"Content-Type": "application/json"})
            self.received.append(received)
            return self._script.popleft() if self._script else self.default

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                match = _PATH.match(self.path)
                received = None
                if match:
                    received = Received(
                        endpoint=match["name"],
                        content_type=self.headers.get("Content-Type", ""),
                        custom_attributes=self.headers.get("X-Amzn-SageMaker-Custom-Attributes", ""),
                        body_sha256=hashlib.sha256(body).hexdigest(),
                    )
                reply = standin._answer(received)
                time.sleep(reply.delay_s)
                self.send_response(reply.status)
                for name, value in {**reply.headers, "Content-Length": str(len(reply.body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
                return

        return Handler
