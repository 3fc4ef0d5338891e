"""The SageMaker inference container: `GET /ping`, `POST /invocations`, and the runtime path
`POST /endpoints/{name}/invocations` that boto3's sagemaker-runtime client sends, so one process can stand in
for several named endpoints locally.

Requests are parsed and images decoded on a thread pool; each endpoint runs a few forward passes at once on
its model threads (a lone pass gets every core, concurrent passes share them). Requests for the same endpoint
and class that arrive while the lanes are busy are coalesced into the next forward pass (micro-batching): no
added wait when idle, bigger batches under load. Errors are JSON bodies with a status that says whose fault it
was; a bad request never reaches the model and never breaks the next one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from model_server import defaults
from model_server.datasets import MAX_PIXELS
from model_server.errors import ImageError, IvadasError, UnknownClassError
from model_server.inference import STAGES, Prediction, Predictor

log = logging.getLogger("ivadas.server")

IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "application/x-image")
ERROR_TYPES = {400: "ValidationError", 404: "ValidationError", 413: "ValidationError", 415: "ValidationError",
               422: "ValidationError", 424: "ModelError", 503: "ServiceUnavailable"}  # fmt: skip


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JSONResponse:
    kind = ERROR_TYPES.get(status, "Error")
    return JSONResponse(
        {"error": message, "message": message, "type": kind, "status": status},  # boto3 reads "message"
        status_code=status,
        headers={"x-amzn-ErrorType": kind},
    )


@dataclass
class _Job:
    images: list[np.ndarray]
    future: asyncio.Future


@dataclass
class MicroBatcher:
    """Queue of scoring jobs for one (endpoint, class); one forward pass per drained group of jobs."""

    run: Callable[[list[np.ndarray]], list[Prediction]]
    executor: ThreadPoolExecutor
    max_batch: int = defaults.MAX_BATCH
    max_coalesce: int = defaults.MAX_COALESCE
    window_s: float = defaults.BATCH_WINDOW_MS / 1000.0
    #: forward passes in flight at once (each on its own executor thread)
    lanes: int = 1
    queue: list[_Job] = field(default_factory=list)
    draining: bool = False
    _task: asyncio.Task | None = None
    _slots: asyncio.Semaphore | None = None
    _running: set = field(default_factory=set)
    batches: int = 0
    images: int = 0

    async def score(self, images: list[np.ndarray]) -> list[Prediction]:
        loop = asyncio.get_running_loop()
        results: list[Prediction] = []
        for start in range(0, len(images), self.max_batch):  # an explicit batch above the cap is split
            job = _Job(images[start : start + self.max_batch], loop.create_future())
            self.queue.append(job)
            if not self.draining:
                self.draining = True
                self._task = loop.create_task(self._drain())  # keep a reference: tasks are weakly held
            results.extend(await job.future)
        return results

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.lanes)
        try:
            while self.queue:
                await self._slots.acquire()  # a free lane; meanwhile new requests pile up and get coalesced
                if not self.queue:
                    self._slots.release()
                    break
                if self.window_s > 0 and sum(len(j.images) for j in self.queue) < self.max_coalesce:
                    await asyncio.sleep(self.window_s)
                group, count = [], 0  # the first job whole (an explicit batch), then others up to the cap
                while self.queue and (not group or count + len(self.queue[0].images) <= self.max_coalesce):
                    job = self.queue.pop(0)
                    group.append(job)
                    count += len(job.images)
                task = loop.create_task(self._run_group(group))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        finally:
            self.draining = False

    async def _run_group(self, group: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        batch = [img for job in group for img in job.images]
        try:
            preds = await loop.run_in_executor(self.executor, self.run, batch)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            for job in group:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self._slots.release()
        self.batches += 1
        self.images += len(batch)
        offset = 0
        for job in group:
            n = len(job.images)
            if not job.future.done():
                job.future.set_result(preds[offset : offset + n])
            offset += n


class Endpoint:
    """One named model: its artifact, loaded in the background, and a batcher per class."""

    def __init__(self, name: str, artifact: str | Path, config: ServerConfig) -> None:
        self.name = name
        self.artifact_path = str(artifact)
        self.config = config
        self.predictor: Predictor | None = None
        self.load_error: str | None = None
        self.model_executor = ThreadPoolExecutor(
            max_workers=config.model_lanes, thread_name_prefix=f"model-{name}"
        )
        self._batchers: dict[str, MicroBatcher] = {}
        self._active = 0
        self._active_lock = threading.Lock()

    def _run(self, model, images: list[np.ndarray]) -> list[Prediction]:
        """One forward pass: alone it uses every core; with another in flight each takes its share, so two
        lanes never oversubscribe the cores (OpenMP thread counts are per calling thread)."""
        from model_server.common import set_threads

        with self._active_lock:
            self._active += 1
            active = self._active
        try:
            set_threads(max(1, self.config.cores // active))
            return self.predictor.predict_decoded(model, images)
        finally:
            with self._active_lock:
                self._active -= 1

    def load(self) -> None:
        try:
            self.predictor = Predictor(self.artifact_path, max_pixels=self.config.max_pixels)
            self.predictor.predict_decoded(  # warm-up: first forward pass allocates buffers
                next(iter(self.predictor.artifact.classes.values())), [np.zeros((64, 64, 3), np.uint8)]
            )
            log.info(
                "endpoint %s loaded %s (%s)", self.name, self.artifact_path, self.predictor.model_version
            )
        except IvadasError as exc:
            self.load_error = str(exc)
            log.error("endpoint %s cannot load %s: %s", self.name, self.artifact_path, exc)
        except Exception as exc:  # noqa: BLE001 - /ping must report it instead of the process dying
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("endpoint %s failed to load", self.name)

    def batcher(self, class_name: str) -> MicroBatcher:
        if class_name not in self._batchers:
            assert self.predictor is not None
            model = self.predictor.artifact.get(class_name)
            self._batchers[class_name] = MicroBatcher(
                run=lambda images: self._run(model, images),
                executor=self.model_executor,
                max_batch=self.config.max_batch,
                max_coalesce=self.config.max_coalesce,
                window_s=self.config.batch_window_ms / 1000.0,
                lanes=self.config.model_lanes,
            )
        return self._batchers[class_name]


@dataclass
class ServerConfig:
    endpoints: dict[str, str]  # name -> artifact path; the first also answers /invocations
    max_body_bytes: int = defaults.MAX_BODY_BYTES
    max_pixels: int = MAX_PIXELS
    max_batch: int = defaults.MAX_BATCH
    max_coalesce: int = defaults.MAX_COALESCE
    batch_window_ms: float = defaults.BATCH_WINDOW_MS
    model_lanes: int = defaults.MODEL_LANES
    cores: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    io_threads: int = 4

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        return cls(**json.loads(text))


@dataclass
class _Instance:
    class_name: str
    image: bytes
    return_heatmap: bool


def parse_custom_attributes(header: str | None) -> dict[str, str]:
    """`X-Amzn-SageMaker-Custom-Attributes: class_name=bottle,return_heatmap=true` -> dict."""
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


def _instance_from_json(obj: object, where: str) -> _Instance:
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
    return _Instance(class_name, image, _truthy(obj.get("return_heatmap", False)))


def parse_request(
    content_type: str, body: bytes, custom_attributes: str | None
) -> tuple[list[_Instance], bool]:
    """(instances, is_batch) from a request body, or HttpError 400/415."""
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
        class_name = attrs.get("class_name")
        if not class_name:
            raise HttpError(
                400, "raw image requests need X-Amzn-SageMaker-Custom-Attributes: class_name=<class>"
            )
        if not body:
            raise HttpError(400, "empty request body")
        return [_Instance(class_name, body, _truthy(attrs.get("return_heatmap", "false")))], False
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


def prediction_body(pred: Prediction, heatmap_png: bytes | None) -> dict:
    body = pred.to_dict()
    if heatmap_png is not None:
        body["heatmap_png_base64"] = base64.b64encode(heatmap_png).decode("ascii")
    return body


def create_app(config: ServerConfig) -> Starlette:
    if not config.endpoints:
        raise ValueError("the server needs at least one endpoint (artifact)")
    endpoints = {name: Endpoint(name, path, config) for name, path in config.endpoints.items()}
    default_endpoint = next(iter(endpoints))
    io_pool = ThreadPoolExecutor(max_workers=config.io_threads, thread_name_prefix="io")

    def load_all() -> None:
        for ep in endpoints.values():
            ep.load()

    @asynccontextmanager
    async def lifespan(app: Starlette):
        threading.Thread(target=load_all, name="model-loader", daemon=True).start()
        yield
        io_pool.shutdown(wait=False, cancel_futures=True)
        for ep in endpoints.values():
            ep.model_executor.shutdown(wait=False, cancel_futures=True)

    async def ping(request: Request) -> Response:
        failed = {n: ep.load_error for n, ep in endpoints.items() if ep.load_error}
        if failed:
            return error_response(503, f"model failed to load: {failed}")
        if any(ep.predictor is None for ep in endpoints.values()):
            return error_response(503, "model is loading")
        return JSONResponse(
            {"status": "ok", "endpoints": {n: ep.predictor.model_version for n, ep in endpoints.items()}}
        )

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > config.max_body_bytes:
            raise HttpError(
                413, f"request body of {int(declared)} bytes is over the {config.max_body_bytes} limit"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body_bytes:
                raise HttpError(413, f"request body is over the {config.max_body_bytes} byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def score(ep: Endpoint, instances: list[_Instance]) -> list[dict]:
        predictor = ep.predictor
        assert predictor is not None
        loop = asyncio.get_running_loop()
        for inst in instances:  # every class must exist before any image is decoded
            try:
                predictor.artifact.get(inst.class_name)
            except UnknownClassError as exc:
                raise HttpError(422, str(exc)) from None

        def decode(inst: _Instance, i: int) -> tuple[np.ndarray, float]:
            t = time.perf_counter()
            name = "image" if len(instances) == 1 else f"instances[{i}]"
            return predictor.decode(inst.image, name=name), (time.perf_counter() - t) * 1000.0

        try:
            decoded = await asyncio.gather(
                *(loop.run_in_executor(io_pool, decode, inst, i) for i, inst in enumerate(instances))
            )
        except ImageError as exc:
            raise HttpError(422, str(exc)) from None
        by_class: dict[str, list[int]] = {}
        for i, inst in enumerate(instances):
            by_class.setdefault(inst.class_name, []).append(i)
        preds: list[Prediction | None] = [None] * len(instances)
        t_queue = time.perf_counter()
        try:
            groups = await asyncio.gather(
                *(ep.batcher(c).score([decoded[i][0] for i in idx]) for c, idx in by_class.items())
            )
        except IvadasError as exc:
            raise HttpError(422, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a failure inside the model: 424 ModelError
            log.exception("model failure on endpoint %s", ep.name)
            raise HttpError(424, f"the model failed: {type(exc).__name__}: {exc}") from None
        model_ms = (time.perf_counter() - t_queue) * 1000.0
        for idx, group in zip(by_class.values(), groups, strict=True):
            for i, p in zip(idx, group, strict=True):
                preds[i] = p

        def finish(i: int) -> dict:
            pred = preds[i]
            assert pred is not None
            t = time.perf_counter()
            png = predictor.render_heatmap(pred) if instances[i].return_heatmap else None
            timings = dict(pred.timings_ms)
            timings["decode"] = round(decoded[i][1], 3)
            timings["heatmap"] = round(timings.get("heatmap", 0.0) + (time.perf_counter() - t) * 1000.0, 3)
            run_ms = sum(pred.timings_ms.get(k, 0.0) for k in ("preprocess", "backbone", "knn", "heatmap"))
            timings["queue"] = round(max(model_ms - run_ms, 0.0), 3)  # waiting for the model thread
            timings["total"] = round(sum(timings[k] for k in STAGES), 3)  # this image's stages, as in-process
            pred.timings_ms = timings
            return prediction_body(pred, png)

        return list(
            await asyncio.gather(*(loop.run_in_executor(io_pool, finish, i) for i in range(len(preds))))
        )

    async def invoke(request: Request, name: str) -> Response:
        t0 = time.perf_counter()
        ep = endpoints.get(name)
        try:
            if ep is None:
                raise HttpError(404, f"endpoint '{name}' not found (endpoints: {', '.join(endpoints)})")
            if ep.predictor is None:
                raise HttpError(503, ep.load_error or "model is loading")
            body = await read_body(request)
            instances, is_batch = parse_request(
                request.headers.get("content-type", ""),
                body,
                request.headers.get("x-amzn-sagemaker-custom-attributes"),
            )
            if not instances:  # {"describe": true}: what this endpoint serves (for GET /classes)
                return JSONResponse(describe(ep.predictor))
            results = await score(ep, instances)
        except HttpError as exc:
            return error_response(exc.status, exc.message)
        except ClientDisconnect:
            return Response(status_code=499)
        total_ms = round((time.perf_counter() - t0) * 1000.0, 3)
        for r in results:
            r["timings_ms"]["server_total"] = total_ms
        payload = {"predictions": results} if is_batch else results[0]
        return Response(
            json.dumps(payload, separators=(",", ":")),
            media_type="application/json",
            headers={"X-Ivadas-Model-Version": ep.predictor.model_version},
        )

    async def invocations(request: Request) -> Response:
        return await invoke(request, default_endpoint)

    async def endpoint_invocations(request: Request) -> Response:
        return await invoke(request, request.path_params["name"])

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, f"no route for {request.method} {request.url.path}")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"{request.method} not allowed on {request.url.path}"}, status_code=405)

    app = Starlette(
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
            Route("/endpoints/{name}/invocations", endpoint_invocations, methods=["POST"]),
        ],
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
    app.state.endpoints = endpoints
    return app
