"""API Gateway, locally: each route of template.yaml's API events becomes a Starlette route that checks its
authorizer or API key (authorizer.py), turns the request into a REST proxy event for the real handler, and
its answer back into HTTP. The same app serves `ui/` and its `config.json`."""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from infra.local import api_contract
from infra.local.authorizer import Denied, Gate, UserPool, stamp
from infra.local.lambda_runtime import Handler, LambdaContext, function_timeout, load_handler
from infra.local.processes import ROOT
from infra.template import ACCOUNT, Stack
from ivadas_contract.limits import MAX_API_BODY_BYTES

UI = ROOT / "ui"


class ApiFunction:
    """One function behind the API: loaded on first use, one request at a time (one execution environment)."""

    def __init__(self, stack: Stack, logical_id: str) -> None:
        self.stack, self.logical_id = stack, logical_id
        self.name = str(stack.resolve(stack.props(logical_id)["FunctionName"]))
        self.timeout_s = function_timeout(stack, logical_id)
        self._handler: Handler | None = None
        self._lock = threading.Lock()

    def __call__(self, event: dict) -> dict:
        with self._lock:
            if self._handler is None:
                self._handler = load_handler(self.stack, self.logical_id, "api")
            return self._handler(event, LambdaContext(self.name, self.timeout_s))


def proxy_event(
    request: Request, body: bytes, resource: str, api_key: str | None, stage_variables: dict | None = None
) -> dict:
    """The REST API (v1) proxy event API Gateway sends for `request` on route `resource`."""
    return {
        "resource": resource,
        "path": request.url.path,
        "httpMethod": request.method,
        "headers": dict(request.headers),
        "multiValueHeaders": {k: request.headers.getlist(k) for k in request.headers},
        "queryStringParameters": dict(request.query_params) or None,
        "multiValueQueryStringParameters": {k: request.query_params.getlist(k) for k in request.query_params}
        or None,
        "pathParameters": dict(request.path_params) or None,
        "stageVariables": stage_variables or None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": request.method,
            "path": f"/local{request.url.path}",
            "stage": "local",
            "requestId": str(uuid.uuid4()),
            "accountId": ACCOUNT,
            "identity": {
                "sourceIp": request.client.host if request.client else "127.0.0.1",
                "apiKey": api_key,
            },
        },
        "body": body.decode("utf-8", errors="replace") if body else None,
        "isBase64Encoded": False,
    }


def http_response(result: dict) -> Response:
    """A Lambda proxy integration result as the HTTP response API Gateway makes of it."""
    raw = result.get("body") or ""
    payload = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
    headers = dict(result.get("headers") or {})
    for k, values in (result.get("multiValueHeaders") or {}).items():
        headers[k] = ", ".join(values)
    return Response(payload, status_code=int(result.get("statusCode", 200)), headers=headers)


#: The gateway response type of each refusal the shim makes before a function runs (template:
#: GatewayResponses).
_GATEWAY_RESPONSES = {401: "UNAUTHORIZED", 403: "INVALID_API_KEY", 413: "REQUEST_TOO_LARGE"}


def _preflight_headers(stack: Stack) -> dict[str, str]:
    """The Api's Cors answer to a preflight, its mapping expressions resolved (stageVariables.uiOrigin)."""
    cors = stack.resolve(stack.props("Api").get("Cors", {}))
    names = {"AllowOrigin": "Origin", "AllowHeaders": "Headers", "AllowMethods": "Methods"}
    values = {
        f"Access-Control-Allow-{h}": stack.mapping_value(str(cors[k])) for k, h in names.items() if k in cors
    }
    return {name: value for name, value in values.items() if value is not None}


def _refusal(stack: Stack, status: int, message: str, kind: str) -> Response:
    """An answer API Gateway makes itself, with its gateway response's headers (the UI's origin)."""
    headers = stack.gateway_response_headers(_GATEWAY_RESPONSES.get(status, ""), status)
    return api_contract.error(status, message, kind, headers)


def _api_route(method: str, resource: str, function: ApiFunction, gate: Gate) -> Route:
    stack = function.stack
    preflight, stage_variables = _preflight_headers(stack), stack.stage_variables()

    async def endpoint(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=200, headers=preflight)
        try:  # the route's authorizer or API key (authorizer.py), as API Gateway checks them
            admitted = gate.admit(method, resource, request.headers)
        except Denied as denied:
            return _refusal(stack, denied.status, denied.message, denied.kind)
        body = await request.body()
        if len(body) > MAX_API_BODY_BYTES:  # Lambda refuses the event: API Gateway answers 413
            return _refusal(stack, 413, f"request body over {MAX_API_BODY_BYTES} bytes", "payload_too_large")
        event = stamp(proxy_event(request, body, resource, None, stage_variables), admitted)
        result = await asyncio.get_running_loop().run_in_executor(None, function, event)
        return http_response(result)

    return Route(resource, endpoint, methods=[method, "OPTIONS"])  # API Gateway's {param} is Starlette's too


def _static(ui_dir: Path, api_routes: list[Route]):
    async def static(request: Request) -> Response:
        rel = request.path_params.get("path") or "index.html"
        target = (ui_dir / rel).resolve()
        if not target.is_relative_to(ui_dir.resolve()) or not target.is_file():
            refused = api_contract.method_not_allowed(request, api_routes)  # GET on a POST route: 405
            return refused or api_contract.error(404, f"not found: /{rel}", "not_found")
        return FileResponse(target)

    return static


def create_shim(
    stack: Stack, api_key: str, config: dict, ui_dir: Path = UI, pool: UserPool | None = None
) -> Starlette:
    """Starlette app: API Gateway REST proxy events for the real handlers, plus ui/ and its config.json.
    `pool`: the user pool whose id tokens the Cognito authorizer's routes take (none: they answer 401)."""
    gate = Gate(stack, api_key, pool)
    functions: dict[str, ApiFunction] = {}
    routes = []
    for method, resource, logical_id in stack.api_routes():
        function = functions.setdefault(logical_id, ApiFunction(stack, logical_id))
        routes.append(_api_route(method, resource, function, gate))

    async def config_json(request: Request) -> Response:
        return JSONResponse(config)

    static = _static(ui_dir, list(routes))
    routes += [*api_contract.contract_routes(), Route("/config.json", config_json)]
    routes += [Route("/", static), Route("/{path:path}", static)]
    return Starlette(routes=routes, exception_handlers=api_contract.exception_handlers())
