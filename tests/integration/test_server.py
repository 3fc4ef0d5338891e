"""The model server as a real subprocess, driven with boto3's sagemaker-runtime client and plain HTTP."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from PIL import Image

from infra.cli import main as ivadas
from ivadas_contract.errors import TYPES
from model_server.engine.predictor import Predictor

ROOT = Path(__file__).resolve().parents[2]
MAX_BODY = 1_500_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    ping_history: list[int]

    def request(
        self, path: str, body: bytes | None = None, headers: dict | None = None, method: str = "POST"
    ):
        req = urllib.request.Request(self.url + path, data=body, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def runtime(self):
        return boto3.client(
            "sagemaker-runtime",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(max_pool_connections=64, retries={"max_attempts": 1}),
        )


def _ping(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/ping", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0  # not listening yet


@pytest.fixture(scope="module")
def server(trained_artifact: Path, trained_softpatch: Path) -> Iterator[Server]:
    port = free_port()
    cmd = [sys.executable, "-m", "model_server.server.serve", "--host", "127.0.0.1", "--port", str(port),
           "--endpoint", f"ivadas-patchcore={trained_artifact}",
           "--endpoint", f"ivadas-softpatch={trained_softpatch}",
           "--max-body-bytes", str(MAX_BODY), "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    history: list[int] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = _ping(url)
        if status:
            history.append(status)
        if status == 200:
            break
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read()}")
        time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail("server never became healthy")
    yield Server(url, proc, history)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _png(path: Path) -> bytes:
    return path.read_bytes()


def _jpeg(path: Path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _json_body(class_name: str, image: bytes, heatmap: bool = True) -> bytes:
    return json.dumps(
        {
            "class_name": class_name,
            "image_base64": base64.b64encode(image).decode(),
            "return_heatmap": heatmap,
        }
    ).encode()


def test_ping_is_503_until_the_models_are_loaded(server: Server) -> None:
    history = server.ping_history
    assert history[-1] == 200
    # loading takes seconds and the fixture pings every 10 ms from the moment the port answers
    assert history[:-1] and set(history[:-1]) == {503}, f"never seen loading: {history}"
    status, _, body = server.request("/ping", method="GET")
    assert status == 200 and set(json.loads(body)["endpoints"]) == {"ivadas-patchcore", "ivadas-softpatch"}


def test_json_request_through_boto3(server: Server, synthetic_root: Path) -> None:
    image = synthetic_root / "widget/test/scratch/000.png"
    resp = server.runtime().invoke_endpoint(
        EndpointName="ivadas-patchcore",
        ContentType="application/json",
        Body=_json_body("widget", _png(image)),
    )
    out = json.loads(resp["Body"].read())
    assert out["class_name"] == "widget" and out["model"] == "patchcore"
    assert out["is_anomaly"] is True and out["normalized_score"] > 0.5
    assert out["threshold"] > 0 and out["model_version"].startswith("patchcore-")
    assert out["regions"] and {"x", "y", "width", "height"} <= set(out["regions"][0])
    heatmap = Image.open(io.BytesIO(base64.b64decode(out["heatmap_png_base64"])))
    # at the map's resolution: the 64 px model's input over a 96 px image; a palette PNG (the colour map)
    assert heatmap.size == (64, 64) and heatmap.mode == "P"
    for stage in ("decode", "preprocess", "backbone", "knn", "heatmap", "queue", "server_total"):
        assert out["timings_ms"][stage] >= 0


def test_raw_png_and_jpeg_with_custom_attributes(server: Server, synthetic_root: Path) -> None:
    image = synthetic_root / "widget/test/good/000.png"
    runtime = server.runtime()
    for content_type, body in (("image/png", _png(image)), ("image/jpeg", _jpeg(image))):
        resp = runtime.invoke_endpoint(
            EndpointName="ivadas-softpatch",
            ContentType=content_type,
            CustomAttributes="class_name=widget",
            Body=body,
        )
        out = json.loads(resp["Body"].read())
        assert out["model"] == "softpatch" and out["is_anomaly"] is False
        assert "heatmap_png_base64" not in out


def test_flagged_images_are_explained_when_asked(server: Server, synthetic_root: Path) -> None:
    bad, good = synthetic_root / "widget/test/scratch/001.png", synthetic_root / "widget/test/good/001.png"
    instances = [
        {"class_name": "widget", "image_base64": base64.b64encode(_png(p)).decode(), "explain": True}
        for p in (bad, good)
    ]
    status, _, body = server.request(
        "/endpoints/ivadas-softpatch/invocations",
        json.dumps({"instances": instances}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200
    flagged, fine = json.loads(body)["predictions"]
    assert flagged["is_anomaly"] and not fine["is_anomaly"] and fine["explanations"] == []
    assert 1 <= len(flagged["explanations"]) <= min(5, len(flagged["regions"]))
    first = flagged["explanations"][0]
    assert first["region"] == 0 and first["peak_score"] == pytest.approx(flagged["regions"][0]["max_score"])
    near = first["nearest_good"]
    assert near["image_id"].startswith("train/good/") and near["distance"] > 0
    crop = Image.open(io.BytesIO(base64.b64decode(near["crop_png_base64"])))
    assert crop.size == (near["crop_width"], near["crop_height"])
    assert flagged["timings_ms"]["explain"] >= 0
    # raw images ask through the custom attributes; unasked, there are none
    for attrs, asked in (("class_name=widget,explain=true", True), ("class_name=widget", False)):
        resp = server.runtime().invoke_endpoint(
            EndpointName="ivadas-patchcore", ContentType="image/png", CustomAttributes=attrs, Body=_png(bad)
        )
        out = json.loads(resp["Body"].read())
        assert out["is_anomaly"] and bool(out.get("explanations")) is asked


def test_batch_scores_several_images_in_one_pass(server: Server, synthetic_root: Path) -> None:
    paths = sorted((synthetic_root / "widget/test").rglob("*.png"))
    instances = [{"class_name": "widget", "image_base64": base64.b64encode(_png(p)).decode()} for p in paths]
    status, _, body = server.request(
        "/invocations", json.dumps({"instances": instances}).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200
    preds = json.loads(body)["predictions"]
    assert len(preds) == len(paths) == 8
    assert all(p["timings_ms"]["batch_size"] == 8 for p in preds)
    assert [p["is_anomaly"] for p in preds] == ["scratch" in str(p) for p in paths]


def test_invocations_goes_to_the_first_endpoint(server: Server, synthetic_root: Path) -> None:
    status, headers, body = server.request(
        "/invocations", _json_body("widget", _png(synthetic_root / "widget/test/good/001.png"), False),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 200 and json.loads(body)["model"] == "patchcore"


def test_scores_agree_with_ivadas_predict(
    server: Server, synthetic_root: Path, trained_artifact: Path, capsys: pytest.CaptureFixture
) -> None:
    paths = [synthetic_root / "widget/test/good/002.png", synthetic_root / "widget/test/scratch/002.png"]
    capsys.readouterr()
    assert (
        ivadas(["predict", "--artifact", str(trained_artifact), "--class-name", "widget", *map(str, paths)])
        == 0
    )
    cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    runtime = server.runtime()
    for path, expected in zip(paths, cli, strict=True):
        resp = runtime.invoke_endpoint(
            EndpointName="ivadas-patchcore", ContentType="image/png", CustomAttributes="class_name=widget",
            Body=_png(path),
        )  # fmt: skip
        got = json.loads(resp["Body"].read())
        assert got["anomaly_score"] == pytest.approx(expected["anomaly_score"], abs=1e-5)
        assert got["normalized_score"] == pytest.approx(expected["normalized_score"], abs=1e-5)


def _bomb_png() -> bytes:
    """A 50-megapixel PNG that compresses to a few kilobytes: refused from its header."""
    buf = io.BytesIO()
    Image.new("1", (10_000, 5_000)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("endpoint", "content_type", "body", "attrs", "status", "message"),
    [
        ("ivadas-patchcore", "application/json", b"{not json", None, 400, "malformed JSON"),
        ("ivadas-patchcore", "application/json", b'{"class_name": "w", "image_base64": "***"}', None, 400,
         "not valid base64"),
        ("ivadas-patchcore", "application/json", b'{"image_base64": "AAAA"}', None, 400, "class_name"),
        ("ivadas-patchcore", "image/png", b"\x89PNG", None, 400, "class_name=<class>"),
        ("ivadas-nope", "application/json", b"{}", None, 404, "endpoint 'ivadas-nope' not found"),
        ("ivadas-patchcore", "image/png", b"\0" * (MAX_BODY + 1), "class_name=widget", 413, "limit"),
        ("ivadas-patchcore", "text/plain", b"hello", None, 415, "unsupported content type"),
        ("ivadas-patchcore", "image/png", b"\x89PNG\r\n\x1a\n", "class_name=capsule", 422, "'capsule'"),
        ("ivadas-patchcore", "image/png", b"this is no image", "class_name=widget", 400, "cannot"),
        ("ivadas-patchcore", "image/png", "BOMB", "class_name=widget", 413, "pixels"),
    ],
)  # fmt: skip
def test_errors_are_json_with_the_right_status(
    server, endpoint, content_type, body, attrs, status, message
) -> None:
    if body == "BOMB":
        body = _bomb_png()
    headers = {"Content-Type": content_type}
    if attrs:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = attrs
    got, resp_headers, raw = server.request(f"/endpoints/{endpoint}/invocations", body, headers)
    doc = json.loads(raw)
    assert got == status, doc
    assert message in doc["error"] and TYPES[doc["type"]] == status  # the one error shape, its kind's status
    assert "Traceback" not in doc["error"]
    # boto3 sees the same status (no retries on 4xx)
    kwargs = {"CustomAttributes": attrs} if attrs else {}
    with pytest.raises(ClientError) as err:
        server.runtime().invoke_endpoint(EndpointName=endpoint, ContentType=content_type, Body=body, **kwargs)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_a_bad_request_does_not_break_the_next(server: Server, synthetic_root: Path) -> None:
    headers = {"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": "class_name=widget"}
    assert server.request("/invocations", b"garbage", headers)[0] == 400  # invalid_image
    status, _, body = server.request(
        "/invocations", _png(synthetic_root / "widget/test/good/003.png"), headers
    )
    assert status == 200 and json.loads(body)["is_anomaly"] is False
    assert server.process.poll() is None


def test_burst_of_50_concurrent_requests(
    server: Server, synthetic_root: Path, trained_artifact: Path
) -> None:
    paths = sorted((synthetic_root / "widget/test").rglob("*.png"))
    expected = {p: Predictor(trained_artifact).predict("widget", [p])[0].anomaly_score for p in paths}
    runtime = server.runtime()

    def call(i: int) -> tuple[Path, dict]:
        path = paths[i % len(paths)]
        resp = runtime.invoke_endpoint(
            EndpointName="ivadas-patchcore", ContentType="application/json",
            Body=_json_body("widget", _png(path), heatmap=i % 2 == 0),
        )  # fmt: skip
        return path, json.loads(resp["Body"].read())

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(call, range(50)))
    assert len(results) == 50
    for path, out in results:
        assert out["class_name"] == "widget"
        assert out["anomaly_score"] == pytest.approx(expected[path], rel=1e-4)
        assert out["is_anomaly"] == ("scratch" in str(path))


def test_requests_queued_while_the_model_is_busy_share_one_forward_pass() -> None:
    """Micro-batching: jobs that arrive during a forward pass are coalesced into the next one."""
    import asyncio
    import threading

    from model_server.server.batching import MicroBatcher

    gate = threading.Event()
    calls: list[int] = []

    def run(images):
        calls.append(len(images))
        gate.wait(10)
        return [f"p{int(img[0, 0, 0])}" for img in images]

    async def scenario():
        batcher = MicroBatcher(run=run, executor=ThreadPoolExecutor(1), max_batch=8, max_coalesce=8)
        first = asyncio.create_task(batcher.score([np.full((2, 2, 3), 0, np.uint8)]))
        await asyncio.sleep(0.05)  # the first job is now inside the (blocked) model
        rest = [asyncio.create_task(batcher.score([np.full((2, 2, 3), i, np.uint8)])) for i in range(1, 12)]
        await asyncio.sleep(0.05)
        gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(scenario())
    assert first == ["p0"] and [r[0] for r in rest] == [f"p{i}" for i in range(1, 12)]
    assert calls == [1, 8, 3]  # 11 queued jobs: one full batch of 8, then the remaining 3


def test_two_lanes_run_two_forward_passes_at_once() -> None:
    import asyncio
    import threading

    from model_server.server.batching import MicroBatcher

    started = threading.Semaphore(0)
    gate = threading.Event()

    def run(images):
        started.release()
        gate.wait(10)
        return [int(img[0, 0, 0]) for img in images]

    async def scenario():
        batcher = MicroBatcher(run=run, executor=ThreadPoolExecutor(2), max_coalesce=1, lanes=2)
        jobs = [asyncio.create_task(batcher.score([np.full((2, 2, 3), i, np.uint8)])) for i in range(3)]
        await asyncio.sleep(0.1)
        both_running = started.acquire(timeout=0) and started.acquire(timeout=0)
        third_waiting = not started.acquire(timeout=0)
        gate.set()
        return both_running, third_waiting, [await j for j in jobs]

    both_running, third_waiting, results = asyncio.run(scenario())
    assert both_running and third_waiting
    assert results == [[0], [1], [2]]


def test_server_refuses_a_corrupt_artifact_at_ping(tmp_path: Path) -> None:
    bad = tmp_path / "model.tar.gz"
    bad.write_bytes(b"corrupt")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "model_server.server.serve", "--artifact", str(bad), "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        status = 0
        while time.monotonic() < deadline and status != 503:
            status = _ping(url)
            time.sleep(0.05)
        time.sleep(0.5)
        req = urllib.request.Request(url + "/ping")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 503 and "not a readable model artifact" in err.value.read().decode()
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_model_failure_is_424_model_error(trained_artifact: Path) -> None:
    """A failure inside the model (here: a forward pass that raises) is a 424 ModelError."""
    import asyncio

    from model_server.server.app import create_app
    from model_server.server.config import ServerConfig

    app = create_app(ServerConfig(endpoints={"e": str(trained_artifact)}))
    endpoint = app.state.endpoints["e"]
    endpoint.load()

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    endpoint.predictor.score = broken
    image = np.zeros((32, 32, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    messages = asyncio.run(_asgi_post(app, "/invocations", buf.getvalue(), "class_name=widget"))
    start, body = messages
    headers = dict(start["headers"])
    assert start["status"] == 424 and headers[b"x-amzn-errortype"] == b"ModelError"
    assert "out of memory" in json.loads(body)["error"]


def test_ping_answers_503_while_the_model_loads_then_200(trained_artifact: Path) -> None:
    """The same, step by step in one process: the app serves before its models are loaded."""
    import asyncio

    from model_server.server.app import create_app
    from model_server.server.config import ServerConfig

    app = create_app(ServerConfig(endpoints={"e": str(trained_artifact)}))  # no lifespan: nothing loads
    start, body = asyncio.run(_asgi_get(app, "/ping"))
    assert start["status"] == 503 and "loading" in json.loads(body)["error"]
    app.state.endpoints["e"].load()
    start, body = asyncio.run(_asgi_get(app, "/ping"))
    assert start["status"] == 200 and set(json.loads(body)["endpoints"]) == {"e"}


async def _asgi_get(app, path: str) -> tuple[dict, bytes]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http", "headers": [],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def _asgi_post(app, path: str, body: bytes, attrs: str) -> tuple[dict, bytes]:
    sent: list[dict] = []
    received = False

    async def receive():
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
        "headers": [(b"content-type", b"image/png"), (b"x-amzn-sagemaker-custom-attributes", attrs.encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_sagemaker_serve_entry_point(trained_artifact: Path, tmp_path: Path, synthetic_root: Path) -> None:
    """The container's `serve` program: model from SM_MODEL_DIR (the unpacked tarball), port from the env."""
    import shutil
    import tarfile

    model_dir = tmp_path / "opt/ml/model"
    with tarfile.open(trained_artifact) as tar:
        tar.extractall(model_dir, filter="data")
    serve = shutil.which("serve", path=str(Path(sys.executable).parent))
    assert serve, "the `serve` console script is not installed (pyproject [project.scripts])"
    port = free_port()
    env = {**os.environ, "SM_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(port)}
    proc = subprocess.Popen([serve, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while _ping(url) != 200:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        req = urllib.request.Request(
            url + "/invocations",
            data=(synthetic_root / "widget/test/scratch/001.png").read_bytes(),
            headers={"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": "class_name=widget"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert json.loads(resp.read())["is_anomaly"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_dockerfile_runs_the_serve_program() -> None:
    dockerfile = (ROOT / "model_server/Dockerfile").read_text()
    assert 'CMD ["serve"]' in dockerfile and "EXPOSE 8080" in dockerfile
    assert '"torch==2.14.1" "torchvision==0.29.1"' in dockerfile
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'serve = "model_server.server.serve:main"' in pyproject
