"""The endpoint's wire protocol: request parsing (JSON, batches, raw images with SageMaker custom attributes),
response bodies, and the one JSON error shape with a status that says whose fault it was. A bad request never
reaches the model and never breaks the next one."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse

from ivadas_contract.errors import error_body, kind_for_status
from model_server.engine.predictor import Prediction, Predictor

IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "application/x-image")
#: InvokeEndpoint's limit on CustomAttributes (SageMaker refuses longer ones before the container sees them)
MAX_CUSTOM_ATTRIBUTES = 1024
#: the error code boto3's sagemaker-runtime client raises (x-amzn-ErrorType): 424 must be ModelError
AWS_ERROR_CODES = {424: "ModelError", 503: "ServiceUnavailable"}


class HttpError(Exception):
    """A refusal with its status and its kind (ivadas_contract.errors.TYPES; the status's own by default)."""

    def __init__(self, status: int, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind or kind_for_status(status)


def error_response(
    status: int, message: str, kind: str | None = None, headers: dict | None = None
) -> JSONResponse:
    """The one error shape, plus `message`: the same text where boto3's rest-json parser reads it (the worker
    records it as the reason)."""
    body = error_body(kind or kind_for_status(status), message)
    code = AWS_ERROR_CODES.get(status, "ValidationError" if status < 500 else "InternalFailure")
    return JSONResponse(
        {**body, "message": message},
        status_code=status,
        headers={"x-amzn-ErrorType": code, **(headers or {})},
    )


@dataclass
class Instance:
    class_name: str
    image: bytes
    return_heatmap: bool
    #: the nearest good training patch of each flagged region (engine/explain.py); off unless asked
    explain: bool = False


def parse_custom_attributes(header: str | None) -> dict[str, str]:
    """`X-Amzn-SageMaker-Custom-Attributes: class_name=bottle,return_heatmap=true,explain=true` -> dict."""
    attrs: dict[str, str] = {}
    for part in (header or "").replace(";", ",").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            attrs[key.strip()] = value.strip()
    return attrs


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _instance_from_json(obj: object, where: str) -> Instance:
    if not isinstance(obj, dict):
        raise HttpError(400, f"{where} must be a JSON object")
    class_name = obj.get("class_name")
    if not isinstance(class_name, str) or not class_name:
        raise HttpError(400, f"{where}: class_name (string) is required")
    encoded = obj.get("image_base64")
    if not isinstance(encoded, str) or not encoded:
        raise HttpError(400, f"{where}: image_base64 (string) is required")
    if encoded.startswith("data:") and "," in encoded:  # a data URL as browsers make them
        encoded = encoded.split(",", 1)[1]
    try:
        image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, f"{where}: image_base64 is not valid base64") from None
    heatmap, explain = obj.get("return_heatmap", False), obj.get("explain", False)
    # JSON has booleans: a string here is a mistake (the header takes text)
    for key, value in (("return_heatmap", heatmap), ("explain", explain)):
        if not isinstance(value, bool):
            raise HttpError(400, f"{where}: {key} must be true or false")
    return Instance(class_name, image, heatmap, explain)


def parse_request(
    content_type: str, body: bytes, custom_attributes: str | None, default_class: str | None = None
) -> tuple[list[Instance], bool]:
    """(instances, is_batch) from a request body, or HttpError 400/415. A raw image without a class_name
    attribute is of `default_class` when the server has one (Batch Transform sends no per-record headers)."""
    if custom_attributes and len(custom_attributes) > MAX_CUSTOM_ATTRIBUTES:
        raise HttpError(400, f"X-Amzn-SageMaker-Custom-Attributes is over {MAX_CUSTOM_ATTRIBUTES} characters")
    media = content_type.split(";")[0].strip().lower()
    if media in ("application/json", ""):
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"malformed JSON: {exc}") from None
        if isinstance(doc, dict) and doc.get("describe") is True:
            return [], False
        if isinstance(doc, dict) and "instances" in doc:
            items = doc["instances"]
            if not isinstance(items, list) or not items:
                raise HttpError(400, "instances must be a non-empty list")
            return [_instance_from_json(item, f"instances[{i}]") for i, item in enumerate(items)], True
        return [_instance_from_json(doc, "request body")], False
    if media in IMAGE_TYPES or media == "application/octet-stream":
        attrs = parse_custom_attributes(custom_attributes)
        class_name = attrs.get("class_name") or default_class
        if not class_name:
            raise HttpError(
                400, "raw image requests need X-Amzn-SageMaker-Custom-Attributes: class_name=<class>"
            )
        if not body:
            raise HttpError(400, "empty request body")
        heatmap, explain = (_truthy(attrs.get(k, "false")) for k in ("return_heatmap", "explain"))
        return [Instance(class_name, body, heatmap, explain)], False
    raise HttpError(415, f"unsupported content type '{media}': use application/json, image/png or image/jpeg")


def describe(predictor: Predictor) -> dict:
    """Model type, version and classes of an endpoint, with each class's threshold and test AUROC."""
    classes = {}
    for name, model in sorted(predictor.artifact.classes.items()):
        card_metrics = model.card.get("metrics", {})
        classes[name] = {
            "threshold": model.calibration.threshold,
            "backbone": model.config.features.backbone,
            "input_size": model.config.features.input_size,
            "trained_at": model.card.get("trained_at"),
            "image_auroc": card_metrics.get("image_auroc"),
        }
    return {
        "available": True,
        "model": predictor.model,
        "model_version": predictor.model_version,
        "classes": classes,
    }


def prediction_body(pred: Prediction) -> dict:
    body = pred.to_dict()
    if pred.heatmap_png is not None:
        body["heatmap_png_base64"] = base64.b64encode(pred.heatmap_png).decode("ascii")
    return body


#: How much of a refused body is still read (and discarded) before the 413 goes out: a server that answers and
#: closes while the client is still sending makes the client's next write fail (EPIPE / RST) before it ever
#: reads the answer. Draining up to a bound, as nginx's lingering close does, lets ordinary clients see the
#: 413; a client sending far more than this is cut off.
DRAIN_FACTOR = 4


async def _drain(request: Request, budget: int) -> None:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > budget:
            return


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 once it is known to exceed `max_bytes` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        if int(declared) <= DRAIN_FACTOR * max_bytes:
            await _drain(request, DRAIN_FACTOR * max_bytes)
        raise HttpError(413, f"request body of {int(declared)} bytes is over the {max_bytes} limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            await _drain(request, (DRAIN_FACTOR - 1) * max_bytes)
            raise HttpError(413, f"request body is over the {max_bytes} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
