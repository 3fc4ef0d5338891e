"""The public API through the real local shim of a running local stack (the real handlers, moto, the model
server), fuzzed from the document the shim serves (openapi/api.yaml at GET /openapi.json): no 5xx, only
documented answers, every error in the one shape; afterwards a valid prediction is still right.

The caller is a signed-in ML engineer (both groups' routes admit them) and, on /machine/predict, the API key;
the path parameters name a real result and a registered version, so generated bodies reach the handlers'
own validation rather than a 404 (unknown ids and versions are covered by the unit tests).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import schemathesis
import yaml

from infra.cli import main as ivadas
from infra.local.users import create_user, sign_in
from ivadas_contract.inspection import inspection_id
from tests.conftest import local_stack
from tests.fuzz.contract import Tally, config, fuzz_operation, operations

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "openapi/api.yaml"
PASSWORD = "Fuzz-Fuzz-Fuzz-2026"
TALLY = Tally()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - the local shim
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def stack(
    trained_artifact: Path,
    trained_softpatch: Path,
    synthetic_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict]:
    state_dir = tmp_path_factory.mktemp("fuzz-stack")
    parameters = ["WorkerBatchingWindowSeconds=0"]
    with local_stack(state_dir, trained_artifact, trained_softpatch, parameters) as state:
        create_user(state, "fuzzer", PASSWORD, ["operators", "ml-engineers"])
        token = sign_in(state, "fuzzer", PASSWORD)["IdToken"]
        s3, bucket = boto3.client("s3"), state["resources"]["InboxBucket"]
        key = "line1/widget/fuzz-target.png"
        image = (synthetic_root / "widget/test/good/001.png").read_bytes()
        put = s3.put_object(Bucket=bucket, Key=key, Body=image)
        target = inspection_id(bucket, key, put["ETag"])
        results = boto3.resource("dynamodb").Table(state["resources"]["ResultsTable"])
        deadline = time.monotonic() + 120
        while not results.get_item(Key={"inspection_id": target}, ConsistentRead=True).get("Item"):
            assert time.monotonic() < deadline, "the fuzz target was never inspected"
            time.sleep(0.5)
        where = ["--state-dir", str(state_dir)]
        assert ivadas(["register", "--artifact", str(trained_artifact), "--model", "patchcore", *where]) == 0
        versions = json.loads(_get_models(state, token))["models"]["patchcore"]["versions"]
        yield {**state, "token": token, "inspection_id": target, "version": versions[0]["version"]}
        print(f"API fuzz: {TALLY.summary()}")
        log = Path(state["state_dir"]) / "supervisor.log"
        assert "Traceback" not in (log.read_text() if log.exists() else ""), "an exception was raised"


def _get_models(state: dict, token: str) -> bytes:
    req = urllib.request.Request(state["api_url"] + "/models", headers={"Authorization": token})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - the local shim
        return resp.read()


@pytest.fixture(scope="module")
def api_schema(stack: dict):  # noqa: ANN201 - schemathesis' schema
    return schemathesis.openapi.from_url(stack["api_url"] + "/openapi.json", config=config())


def test_the_served_document_is_the_repository_one(stack: dict) -> None:
    status, body = _get(stack["api_url"] + "/openapi.json")  # no key, no token
    assert status == 200 and json.loads(body) == yaml.safe_load(DOCUMENT.read_text())


@pytest.mark.parametrize(("path", "method", "mode"), operations(DOCUMENT), ids=str)
def test_fuzz(api_schema, stack: dict, path: str, method: str, mode) -> None:  # noqa: ANN001
    machine = path.startswith("/machine/")
    headers = {"x-api-key": stack["api_key"]} if machine else {"Authorization": stack["token"]}
    fuzz_operation(
        api_schema, path, method, mode, stack["api_url"], TALLY, headers=headers,
        path_parameters={"inspection_id": stack["inspection_id"], "version": stack["version"]},
        class_name="widget",
    )  # fmt: skip


def test_after_the_fuzz_a_valid_prediction_is_right(stack: dict, synthetic_root: Path) -> None:
    answers = []
    for name in ("good/000.png", "scratch/000.png"):
        image = base64.b64encode((synthetic_root / "widget/test" / name).read_bytes()).decode()
        req = urllib.request.Request(
            stack["api_url"] + "/machine/predict", method="POST",
            data=json.dumps({"class_name": "widget", "image_base64": image, "model": "both"}).encode(),
            headers={"Content-Type": "application/json", "x-api-key": stack["api_key"]},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - the local shim
            answers.append(json.loads(resp.read()))
    for model in ("patchcore", "softpatch"):
        assert [a[model]["is_anomaly"] for a in answers] == [False, True], answers
