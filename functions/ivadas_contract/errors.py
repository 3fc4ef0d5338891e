"""The one error shape of every IVADAS interface (the API, the local API Gateway shim, the model server and
the CLI's JSON output): `{"error": "<what went wrong, for a person>", "type": "<machine-readable kind>"}`.

Clients branch on `type`, never on the message text or only on the HTTP status: several kinds share a status
(a throttled and an unavailable endpoint are both 503), and a kind keeps its name when its words change.
"""

from __future__ import annotations

#: kind -> the HTTP status it answers with
TYPES: dict[str, int] = {
    "bad_request": 400,  # malformed: not JSON, a missing or wrong-typed field, a bad query parameter
    "invalid_image": 400,  # the bytes are not an image this service can decode
    "unauthorized": 401,  # no, expired or forged credentials
    "forbidden": 403,  # signed in, but the caller's group may not do this; or an unknown API key
    "not_found": 404,  # no such route, result, class or model version
    "method_not_allowed": 405,
    "conflict": 409,  # the resource is in a state that forbids this (a rejected result has no verdict)
    "payload_too_large": 413,  # request bytes or image pixels over the limits in limits.py
    "unsupported_media_type": 415,
    "unprocessable": 422,  # well-formed but unusable here (an unknown class for this model)
    # the model server's own: a failure inside the model while scoring (SageMaker's ModelError status)
    "model_error": 424,
    "throttled": 429,
    "internal": 500,  # a bug: the message never carries a stack trace
    "unavailable": 503,  # the model or a dependency is down or loading: retry later
    "timeout": 504,
}

_BY_STATUS: dict[int, str] = {}
for _kind, _status in TYPES.items():
    _BY_STATUS.setdefault(_status, _kind)


def kind_for_status(status: int) -> str:
    """The default kind of an HTTP status (its first kind above); other 4xx: bad_request, 5xx: internal."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return "internal" if status >= 500 else "bad_request"


def error_body(kind: str, message: str) -> dict[str, str]:
    """The error document; `kind` must be one of TYPES."""
    if kind not in TYPES:
        raise ValueError(f"unknown error type {kind!r}")
    return {"error": message, "type": kind}
