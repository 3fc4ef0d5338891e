"""What the local API Gateway shim says on its own: its errors in the one shape (ivadas_contract.errors), and
the API's OpenAPI document (openapi/api.yaml), served without a key at /openapi.json and /openapi.yaml.

API Gateway answers some requests before any function runs (a missing key, a body over the limit, no such
route or method); the shim does the same, so those answers too carry `{"error": ..., "type": ...}`.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import yaml
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from infra.local.processes import ROOT
from ivadas_contract.errors import error_body, kind_for_status

API_DOCUMENT = ROOT / "openapi" / "api.yaml"
log = logging.getLogger("ivadas.api")


def error(status: int, message: str, kind: str | None = None, headers: dict | None = None) -> JSONResponse:
    """An answer of the shim's own, in the one error shape."""
    body = error_body(kind or kind_for_status(status), message)
    return JSONResponse(body, status_code=status, headers=headers)


@cache
def document(path: Path = API_DOCUMENT) -> dict:
    return yaml.safe_load(path.read_text())


def contract_routes(path: Path = API_DOCUMENT) -> list[Route]:
    """GET /openapi.json and /openapi.yaml: the document the API is tested against (no key needed)."""

    async def as_json(request: Request) -> Response:
        return JSONResponse(document(path))

    async def as_yaml(request: Request) -> Response:
        return Response(path.read_text(), media_type="application/yaml")

    return [
        Route("/openapi.json", as_json, methods=["GET"]),
        Route("/openapi.yaml", as_yaml, methods=["GET"]),
    ]


def method_not_allowed(request: Request, api_routes: list[Route]) -> Response | None:
    """405 when `request`'s path is an API route served with other methods (as API Gateway answers), else
    None."""
    for route in api_routes:
        match, _ = route.matches(request.scope)
        if match == Match.PARTIAL:
            allow = ", ".join(sorted(route.methods or ()))
            message = f"{request.method} is not allowed on {request.url.path}"
            return error(405, message, "method_not_allowed", {"Allow": allow})
    return None


def exception_handlers() -> dict:
    """Starlette's own 404/405 and any exception in the shim, in the one shape (the trace only in the log)."""

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        headers = getattr(exc, "headers", None)
        if status == 405:
            return error(405, f"{request.method} is not allowed on {request.url.path}", headers=headers)
        if status == 404:
            return error(404, f"no route for {request.method} {request.url.path}", "not_found")
        return error(status, str(getattr(exc, "detail", "")) or "error", headers=headers)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("shim error on %s %s", request.method, request.url.path, exc_info=exc)
        return error(502, "internal error: the function did not answer (see the stack's log)", "internal")

    return {HTTPException: http_error, Exception: unexpected}
