"""How every API function answers a failure: one place for the three resolvers (predict, results, models), so
each error leaves in the one shape of `ivadas_contract.errors` (`{"error": ..., "type": ...}`).

Without this, powertools answers its own exceptions as `{"statusCode": ..., "message": ...}`, an unknown
route as `{"statusCode": 404, "message": "Not found"}` and anything else (a body that is not JSON, a bug) by
raising, which API Gateway turns into a 502 and the local shim into a 500 with no body worth reading.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError

from ivadas_contract.errors import error_body, kind_for_status

#: What a caller sees of a bug: the trace goes to the log (with the request id), never into the body.
INTERNAL_MESSAGE = "internal error: the request was not completed (logged for the operators)"


def error_response(status: int, message: str, kind: str | None = None) -> Response:
    """An error answer in the one shape; `kind` defaults to the status's kind (errors.kind_for_status)."""
    body = error_body(kind or kind_for_status(status), message)
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def _text(msg: Any) -> str:
    return msg if isinstance(msg, str) else json.dumps(msg, default=str)


def _body_is_json(app: APIGatewayRestResolver) -> bool:
    try:
        app.current_event.json_body  # noqa: B018 - parsing is the check
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return False
    return True


def _allowed_methods(app: APIGatewayRestResolver, path: str) -> list[str]:
    """The methods the resolver serves on `path` (powertools has no public lookup; its route table does)."""
    routes = [*app._static_routes, *app._dynamic_routes]  # noqa: SLF001
    return sorted({r.method for r in routes if r.rule.match(path)})


def install(app: APIGatewayRestResolver, logger: Logger) -> None:
    """Register the error handlers on `app`: powertools' HTTP errors, unknown routes (404) and methods (405),
    a body that is not JSON (400), and any other exception (500 `internal`, logged with its trace)."""

    @app.exception_handler(NotFoundError)
    def not_found(exc: NotFoundError) -> Response:  # raised by a route, or called for an unknown route
        event = app.current_event
        path, method = event.path, event.http_method.upper()
        allowed = _allowed_methods(app, path)
        if not allowed:
            return error_response(404, f"no route for {method} {path}", "not_found")
        if method not in allowed:
            response = error_response(405, f"{method} is not allowed on {path}", "method_not_allowed")
            response.headers["Allow"] = ", ".join(allowed)
            return response
        return error_response(404, _text(exc.msg), "not_found")

    @app.exception_handler(ServiceError)
    def service_error(exc: ServiceError) -> Response:
        return error_response(int(exc.status_code), _text(exc.msg))

    @app.exception_handler(Exception)
    def unexpected(exc: Exception) -> Response:
        if isinstance(exc, ValueError | RecursionError) and not _body_is_json(app):
            return error_response(400, "the body is not valid JSON", "bad_request")  # event.json_body raised
        logger.exception("unhandled error", extra={"path": app.current_event.path})
        return error_response(500, INTERNAL_MESSAGE, "internal")
