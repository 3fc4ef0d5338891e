"""An endpoint swaps its artifact while it serves (the local stack's endpoint update): under concurrent
requests none fails, each is answered wholly by one version, and every response and /ping name it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_server.engine.artifact import load_artifact
from tests.integration.test_server import ROOT, Server, _json_body, _ping, free_port

ENDPOINT = "ivadas-local-patchcore"


@pytest.fixture(scope="module")
def admin_server(trained_artifact: Path) -> Iterator[Server]:
    port = free_port()
    cmd = [sys.executable, "-m", "model_server.server.serve", "--host", "127.0.0.1", "--port", str(port),
           "--endpoint", f"{ENDPOINT}={trained_artifact}", "--admin", "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while _ping(url) != 200:
        assert proc.poll() is None and time.monotonic() < deadline, "server never became healthy"
        time.sleep(0.05)
    yield Server(url, proc, [])
    proc.terminate()
    proc.wait(timeout=20)


def _swap(server: Server, artifact: str) -> tuple[int, dict]:
    status, _, body = server.request(
        f"/endpoints/{ENDPOINT}/artifact", json.dumps({"artifact": artifact}).encode(),
        {"Content-Type": "application/json"}, method="PUT",
    )  # fmt: skip
    return status, json.loads(body)


def _version(server: Server) -> str:
    return json.loads(server.request("/ping", method="GET")[2])["endpoints"][ENDPOINT]


def test_swap_under_load_fails_no_request(
    admin_server: Server, trained_artifact: Path, retrained_artifact: Path, synthetic_root: Path
) -> None:
    old, new = (load_artifact(p).model_version for p in (trained_artifact, retrained_artifact))
    assert old != new and _version(admin_server) == old
    body = _json_body("widget", (synthetic_root / "widget/test/scratch/000.png").read_bytes(), heatmap=False)
    answers: list[tuple[int, str | None, str | None]] = []
    started_after_swap: list[str | None] = []  # versions of requests sent once the swap had answered
    swapped_at = [float("inf")]
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            status, headers, raw = admin_server.request(
                f"/endpoints/{ENDPOINT}/invocations", body, {"Content-Type": "application/json"}
            )
            version = json.loads(raw).get("model_version") if status == 200 else raw.decode()
            header = {k.lower(): v for k, v in headers.items()}.get("x-ivadas-model-version")
            answers.append((status, header, version))
            if sent > swapped_at[0]:
                started_after_swap.append(version)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    status, swapped = _swap(admin_server, str(retrained_artifact))
    swapped_at[0] = time.monotonic()
    after_swap = len(answers)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert status == 200 and swapped["model_version"] == new
    assert answers and all(s == 200 for s, _, _ in answers), [a for a in answers if a[0] != 200][:3]
    assert all(header == version for _, header, version in answers)  # one version answers each request
    versions = [v for _, _, v in answers]
    assert versions[0] == old and versions[-1] == new
    assert versions[after_swap:].count(old) <= len(threads)  # only requests already in flight finish on old
    assert started_after_swap and set(started_after_swap) == {new}  # every later request gets the new one
    assert _version(admin_server) == new


def test_a_bad_artifact_leaves_the_old_one_serving(admin_server: Server, tmp_path: Path) -> None:
    before = _version(admin_server)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a tarball")
    status, answer = _swap(admin_server, str(broken))
    assert status == 422 and "cannot load" in answer["error"]
    assert _version(admin_server) == before
    status, answer = admin_server.request(f"/endpoints/{ENDPOINT}/artifact", b"[]", method="PUT")[::2]
    assert status == 400


def test_swap_adds_a_new_endpoint(admin_server: Server, trained_softpatch: Path) -> None:
    body = json.dumps({"artifact": str(trained_softpatch)}).encode()
    status, _, _ = admin_server.request("/endpoints/ivadas-local-softpatch/artifact", body, method="PUT")
    assert status == 200
    assert json.loads(admin_server.request("/ping", method="GET")[2])["endpoints"]["ivadas-local-softpatch"]
