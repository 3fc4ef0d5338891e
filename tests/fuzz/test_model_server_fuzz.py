"""The model server, a real process serving two synthetic artifacts, fuzzed from the document it serves
(openapi/model_server.yaml at GET /openapi.json): no 5xx, only documented answers, every error in the one
shape; and afterwards it still scores a valid request correctly."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import yaml

from tests.fuzz.contract import Tally, config, fuzz_operation, operations

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "openapi/model_server.yaml"
MAX_BODY = 1_000_000  # small, so the 413 path is reachable by generated bodies
TALLY = Tally()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


@pytest.fixture(scope="module")
def model_server(trained_artifact: Path, trained_softpatch: Path) -> Iterator[str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "model_server.server.serve", "--host", "127.0.0.1", "--port", str(port),
           "--endpoint", f"ivadas-patchcore={trained_artifact}",
           "--endpoint", f"ivadas-softpatch={trained_softpatch}",
           "--max-body-bytes", str(MAX_BODY), "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while _get(url + "/ping")[0] != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"model server did not start: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.05)
    yield url
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    print(f"model server fuzz: {TALLY.summary()}")
    assert "Traceback" not in out, out[-3000:]  # nothing unexpected was raised while fuzzing


@pytest.fixture(scope="module")
def server_schema(model_server: str):  # noqa: ANN201 - schemathesis' schema
    return schemathesis.openapi.from_url(model_server + "/openapi.json", config=config())


def test_the_served_document_is_the_repository_one(model_server: str) -> None:
    status, body = _get(model_server + "/openapi.json")
    assert status == 200
    assert json.loads(body) == yaml.safe_load(DOCUMENT.read_text())


@pytest.mark.parametrize(("path", "method", "mode"), operations(DOCUMENT), ids=str)
def test_fuzz(server_schema, model_server: str, path: str, method: str, mode) -> None:  # noqa: ANN001
    """The named endpoint is a served one (an unknown name is one 404, checked in test_server); half the
    bodies name its class."""
    fuzz_operation(server_schema, path, method, mode, model_server, TALLY,
                   path_parameters={"name": "ivadas-patchcore"}, class_name="widget")  # fmt: skip


def test_after_the_fuzz_a_valid_request_is_scored(model_server: str, synthetic_root: Path) -> None:
    good = (synthetic_root / "widget/test/good/000.png").read_bytes()
    bad = (synthetic_root / "widget/test/scratch/000.png").read_bytes()
    answers = []
    for image in (good, bad):
        body = json.dumps({"class_name": "widget", "image_base64": base64.b64encode(image).decode()}).encode()
        req = urllib.request.Request(
            model_server + "/endpoints/ivadas-patchcore/invocations", data=body,
            headers={"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=60) as resp:
            answers.append(json.loads(resp.read()))
    assert [a["class_name"] for a in answers] == ["widget", "widget"]
    assert answers[0]["is_anomaly"] is False and answers[1]["is_anomaly"] is True
    assert answers[1]["anomaly_score"] > answers[0]["anomaly_score"]
