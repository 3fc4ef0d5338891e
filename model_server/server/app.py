"""The SageMaker inference container's routes: `GET /ping`, `POST /invocations`, and the runtime path
`POST /endpoints/{name}/invocations` that boto3's sagemaker-runtime client sends, so one process can stand in
for several named endpoints locally; there (`admin`) also `PUT /endpoints/{name}/artifact`, the endpoint
update that swaps an endpoint's artifact while it serves.

Requests are parsed and images decoded on a thread pool; each endpoint runs a few forward passes at once on
its model lanes (a lone pass gets every core, concurrent passes share them), with micro-batching.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import yaml
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from model_server.server.config import ServerConfig
from model_server.server.endpoint import Endpoint
from model_server.server.faults import Faults
from model_server.server.protocol import HttpError, describe, error_response, parse_request, read_body
from model_server.server.scoring import score_instances

log = logging.getLogger("ivadas.server")
#: the contract of these routes (in the image: IVADAS_OPENAPI_DIR), served at CONTRACT_PATH
_OPENAPI_DIR = Path(__file__).resolve().parents[2] / "openapi"
CONTRACT_DOCUMENT = Path(os.environ.get("IVADAS_OPENAPI_DIR", _OPENAPI_DIR)) / "model_server.yaml"
CONTRACT_PATH = "/openapi.json"


class Server:
    """The endpoints of one process and the handlers of their routes."""

    def __init__(self, config: ServerConfig) -> None:
        if not config.endpoints:
            raise ValueError("the server needs at least one endpoint (artifact)")
        self.config = config
        self.endpoints = {name: Endpoint(name, path, config) for name, path in config.endpoints.items()}
        self.default_endpoint = next(iter(self.endpoints))
        self.io_pool = ThreadPoolExecutor(max_workers=config.io_threads, thread_name_prefix="io")
        self.faults = Faults.from_env() if config.admin else None  # local stack only

    def load_all(self) -> None:
        for ep in self.endpoints.values():
            ep.load()

    def shutdown(self) -> None:
        self.io_pool.shutdown(wait=False, cancel_futures=True)
        for ep in self.endpoints.values():
            ep.model_executor.shutdown(wait=False, cancel_futures=True)

    async def ping(self, request: Request) -> Response:
        failed = {n: ep.load_error for n, ep in self.endpoints.items() if ep.load_error}
        if failed:
            return error_response(503, f"model failed to load: {failed}")
        if any(ep.predictor is None for ep in self.endpoints.values()):
            return error_response(503, "model is loading")
        versions = {n: ep.current.model_version for n, ep in self.endpoints.items()}
        return JSONResponse({"status": "ok", "endpoints": versions})

    async def invoke(self, request: Request, name: str) -> Response:
        t0 = time.perf_counter()
        if self.faults is not None and (injected := await self.faults.before()) is not None:
            return injected
        ep = self.endpoints.get(name)
        try:
            if ep is None:
                known = ", ".join(self.endpoints)
                raise HttpError(404, f"endpoint '{name}' not found (endpoints: {known})")
            gen = ep.current  # this request is answered by this artifact even if a swap happens meanwhile
            if gen is None:
                raise HttpError(503, ep.load_error or "model is loading")
            body = await read_body(request, self.config.max_body_bytes)
            instances, is_batch = parse_request(
                request.headers.get("content-type", ""),
                body,
                request.headers.get("x-amzn-sagemaker-custom-attributes"),
                self.config.default_class,
            )
            if not instances:  # {"describe": true}: what this endpoint serves (for GET /classes)
                return JSONResponse(describe(gen.predictor))
            if self.faults is not None:
                self.faults.count([i.image for i in instances])
            results = await score_instances(gen, instances, self.io_pool)
        except HttpError as exc:
            return error_response(exc.status, exc.message, exc.kind)
        except ClientDisconnect:
            return Response(status_code=499)
        total_ms = round((time.perf_counter() - t0) * 1000.0, 3)
        for r in results:
            r["timings_ms"]["server_total"] = total_ms
        payload = {"predictions": results} if is_batch else results[0]
        return Response(
            json.dumps(payload, separators=(",", ":")),
            media_type="application/json",
            headers={"X-Ivadas-Model-Version": gen.model_version},
        )

    async def swap(self, request: Request) -> Response:
        """Local stack only (`serve --admin`): serve another artifact on an endpoint, new or existing, as an
        endpoint update would. The old artifact answers until the new one is loaded and warm."""
        name = request.path_params["name"]
        try:
            body = json.loads(await read_body(request, 64 * 1024) or b"{}")
            path = body["artifact"] if isinstance(body, dict) else None
            if not isinstance(path, str) or not path:
                raise HttpError(400, 'the body must be {"artifact": "<path>"}')
        except (ValueError, KeyError):
            return error_response(400, 'the body must be {"artifact": "<path>"}')
        except HttpError as exc:
            return error_response(exc.status, exc.message, exc.kind)
        ep = self.endpoints.get(name) or Endpoint(name, path, self.config)
        try:
            gen = await asyncio.get_running_loop().run_in_executor(None, ep.swap, path)
        except Exception as exc:  # noqa: BLE001 - the caller learns why; the endpoint keeps its old model
            return error_response(422, f"cannot load {path}: {type(exc).__name__}: {exc}", "unprocessable")
        self.endpoints[name] = ep
        return JSONResponse({"endpoint": name, "artifact": path, "model_version": gen.model_version})

    async def invocations(self, request: Request) -> Response:
        return await self.invoke(request, self.default_endpoint)

    async def endpoint_invocations(self, request: Request) -> Response:
        return await self.invoke(request, request.path_params["name"])


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, f"no route for {request.method} {request.url.path}", "not_found")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    allow = getattr(exc, "headers", None) or {}  # Starlette's HTTPException names the allowed methods
    message = f"{request.method} is not allowed on {request.url.path}"
    return error_response(405, message, "method_not_allowed", headers=allow)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """A bug: the trace goes to the log (Starlette re-raises it to the server's log), never to the caller."""
    return error_response(500, "internal error: the request was not completed (logged)", "internal")


def _contract(document: Path) -> Route:
    """`GET /openapi.json`: this server's OpenAPI document (openapi/model_server.yaml), read once."""
    loaded: dict = {}

    async def contract(request: Request) -> Response:
        if not loaded and document.is_file():
            loaded.update(yaml.safe_load(document.read_text()))
        if not loaded:
            return error_response(404, f"no contract document in this image ({document})", "not_found")
        return JSONResponse(loaded)

    return Route(CONTRACT_PATH, contract, methods=["GET"])


def create_app(config: ServerConfig) -> Starlette:
    """The ASGI app; models load in a background thread once it starts (/ping answers 503 until then)."""
    server = Server(config)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        threading.Thread(target=server.load_all, name="model-loader", daemon=True).start()
        yield
        server.shutdown()

    app = Starlette(
        routes=[
            Route("/ping", server.ping, methods=["GET"]),
            Route("/invocations", server.invocations, methods=["POST"]),
            Route("/endpoints/{name}/invocations", server.endpoint_invocations, methods=["POST"]),
            _contract(CONTRACT_DOCUMENT),
            *([Route("/endpoints/{name}/artifact", server.swap, methods=["PUT"])] if config.admin else []),
            *(server.faults.routes() if server.faults is not None else []),
        ],
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _method_not_allowed, Exception: _unexpected},
    )
    app.state.endpoints = server.endpoints
    return app
