"""Faults through the local stack, nothing lost: a worker killed mid-batch, the model server killed, the
dead-letter queue re-driven, and the endpoint's throttling and 5xx classified as transient.

The worker's Timeout (10 s) is below the queue's visibility timeout (12 s), as AWS requires: a redelivery then
finds the in-progress idempotency record of the killed invocation expired (it lasts the invocation's remaining
time), so the image is inspected instead of failing as already in progress.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from ivadas_contract.models import BASELINE, endpoint_variable
from ivadas_functions.aws import TransientFailure, invoke_endpoint
from tests.conftest import local_stack
from tests.e2e.test_pipeline import admin, put, queue_depth, wait_items

TIMEOUT_S, VISIBILITY_S, MAX_RECEIVE = 10, 12, 2


@pytest.fixture(scope="module")
def stack(trained_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    params = [f"WorkerTimeoutSeconds={TIMEOUT_S}", f"QueueVisibilityTimeoutSeconds={VISIBILITY_S}",
              f"MaxReceiveCount={MAX_RECEIVE}", "WorkerBatchingWindowSeconds=0",
              "WorkerMaxConcurrency=2"]  # fmt: skip
    with local_stack(tmp_path_factory.mktemp("fault-stack"), trained_artifact, None, params) as state:
        yield state


def current(stack: dict) -> dict:
    return json.loads((Path(stack["state_dir"]) / "state.json").read_text())


def wait_for(predicate, timeout: float, what: str):  # noqa: ANN001, ANN201 - a test helper
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def image(synthetic_root: Path, i: int) -> bytes:
    return sorted((synthetic_root / "widget/test/good").glob("*.png"))[i % 4].read_bytes() + bytes([i])


def test_worker_killed_mid_batch_gets_its_images_inspected(stack: dict, synthetic_root: Path) -> None:
    pids = wait_for(lambda: len(current(stack)["worker_pids"]) == 2 and current(stack)["worker_pids"], 120,
                    "two worker environments")  # fmt: skip
    admin(stack, "/admin/faults", {"mode": "slow", "delay_seconds": 6})
    try:
        ids = [put(stack, f"line1/widget/killed-{i}.png", image(synthetic_root, i)) for i in range(3)]
        time.sleep(2.5)  # every image received, the batch waits on the endpoint
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    finally:
        admin(stack, "/admin/faults", {"mode": "off"})

    # fresh environments, named in state.json, as Lambda starts after a crash
    def replaced() -> bool:
        now = current(stack)["worker_pids"]
        return len(now) == 2 and set(now).isdisjoint(pids)

    wait_for(replaced, 60, "new worker environments")
    items = wait_items(stack, ids, timeout=VISIBILITY_S * MAX_RECEIVE + 60)
    assert {i: items[i]["status"] for i in ids if i in items} == dict.fromkeys(ids, "INSPECTED")
    assert queue_depth(stack, "InspectionDeadLetterQueue") == 0
    log = "".join(p.read_text() for p in (Path(stack["state_dir"]) / "logs").glob("worker-*.log"))
    assert "exited during invocation (code -9)" in log  # the platform's line for the killed batch


def test_model_server_killed_is_replaced_and_inspection_resumes(stack: dict, synthetic_root: Path) -> None:
    before = current(stack)
    counted = sum(admin(stack, "/admin/invocations")["invocations"].values())
    os.kill(before["model_server_pid"], signal.SIGKILL)

    def replaced() -> dict | None:
        now = current(stack)
        new_pid = now["model_server_pid"] not in (None, before["model_server_pid"])
        return (
            now
            if new_pid and now["model_server_replacements"] > before["model_server_replacements"]
            else None
        )

    after = wait_for(replaced, 180, "a replaced model server")
    ids = [put(stack, f"line1/widget/resumed-{i}.png", image(synthetic_root, 10 + i)) for i in range(3)]
    items = wait_items(stack, ids, timeout=120)
    assert {i: items[i]["status"] for i in ids if i in items} == dict.fromkeys(ids, "INSPECTED")
    os.kill(after["model_server_pid"], 0)  # the replacement is the one serving
    # the replacement kept its predecessor's counts (journal) and counted the new images
    assert sum(admin(stack, "/admin/invocations")["invocations"].values()) >= counted + 3
    assert "model server replaced" in (Path(stack["state_dir"]) / "supervisor.log").read_text()


def test_redrive_moves_dlq_back_says_why_and_they_get_inspected(stack: dict, synthetic_root: Path) -> None:
    from infra.cli import main

    admin(stack, "/admin/faults", {"mode": "error", "status": 503})
    try:
        iid = put(stack, "line1/widget/dead-letter.png", image(synthetic_root, 20))
        in_dlq = lambda: queue_depth(stack, "InspectionDeadLetterQueue") == 1  # noqa: E731
        wait_for(in_dlq, VISIBILITY_S * (MAX_RECEIVE + 2) + 30, "the message in the DLQ")
    finally:
        admin(stack, "/admin/faults", {"mode": "off"})
    assert not wait_items(stack, [iid], timeout=1)
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["redrive", "--state-dir", stack["state_dir"], "--wait", "60"])
    text = out.getvalue()
    assert code == 0, text
    assert "moved 1 message(s)" in text
    assert f"line1/widget/dead-letter.png: delivered {MAX_RECEIVE} times" in text
    assert "ServiceUnavailable" in text  # the worker's last logged error for it
    assert "1 with a result, 0 still without one" in text
    assert wait_items(stack, [iid], timeout=5)[iid]["status"] == "INSPECTED"
    assert queue_depth(stack, "InspectionDeadLetterQueue") == 0


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"mode": "throttle"}, "400 ThrottlingException"),
        ({"mode": "error", "status": 500}, "500 InternalFailure"),
    ],
)
def test_throttling_and_5xx_are_transient(
    stack: dict, synthetic_root: Path, fault: dict, expected: str
) -> None:
    endpoint = os.environ[endpoint_variable(BASELINE)]  # local_stack pointed this process at the stack
    admin(stack, "/admin/faults", fault)
    try:
        with pytest.raises(TransientFailure, match=expected):
            invoke_endpoint(endpoint, "widget", image(synthetic_root, 30))
    finally:
        admin(stack, "/admin/faults", {"mode": "off"})
    assert invoke_endpoint(endpoint, "widget", image(synthetic_root, 30)).result["class_name"] == "widget"
