"""Nothing is lost when the local stack stops with images queued: gracefully (`ivadas local down` while the
queue holds messages and a worker is mid-batch), or by kill -9 of the whole stack at once, or of its
supervisor alone (its children die with it). After `ivadas local up` every image the inbox accepted is there
and inspected, once per object, and the results stored before the stop are unchanged."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3

from infra.local.state import stack_processes
from tests.e2e.test_pipeline import put, wait_items

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
PARAMS = ["WorkerBatchingWindowSeconds=0"]


def local(action: str, state_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "infra.cli", "local", action, "--state-dir", str(state_dir), *extra]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)


@contextlib.contextmanager
def stack(state_dir: Path, artifact: Path, concurrency: int = 1) -> Iterator[dict]:
    """`ivadas local up` with one worker (so the queue holds messages while it works); this process's boto3
    points at it. On the way out it is stopped if still running."""
    params = [a for p in PARAMS for a in ("--parameter", p)]
    up = local(
        "up", state_dir, "--patchcore", str(artifact), "--worker-concurrency", str(concurrency), *params
    )
    log = state_dir / "supervisor.log"
    assert up.returncode == 0, up.stdout + up.stderr + (log.read_text() if log.exists() else "")
    state = json.loads((state_dir / "state.json").read_text())
    saved = dict(os.environ)
    os.environ.update(state["environment"])
    try:
        yield state
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if stack_processes(state["pgid"]):  # still running; a killed one leaves its state.json to `up`
            local("down", state_dir)
        for pid in stack_processes(state["pgid"]):  # what a failed test could leave running
            os.kill(pid, signal.SIGKILL)


def results(state: dict) -> dict[str, dict]:
    """Every result item by inspection id (scanned whole)."""
    table = boto3.resource("dynamodb").Table(state["resources"]["ResultsTable"])
    items, page = [], table.scan()
    items += page["Items"]
    while "LastEvaluatedKey" in page:
        page = table.scan(ExclusiveStartKey=page["LastEvaluatedKey"])
        items += page["Items"]
    return {i["inspection_id"]: i for i in items}


def wait_for(condition, timeout: float = 120) -> None:  # noqa: ANN001 - a callable returning bool
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def image(synthetic_root: Path, n: int) -> bytes:
    """A good test part; the trailing bytes make every object distinct (PNG decoders ignore them)."""
    return (synthetic_root / f"widget/test/good/{n % 4:03d}.png").read_bytes() + n.to_bytes(4, "big")


def assert_all_inspected_once(state: dict, ids: dict[str, str], before: dict[str, dict]) -> None:
    """Every id has its one INSPECTED item; the items stored before the stop are as they were."""
    found = wait_items(state, list(ids), timeout=180)
    assert sorted(found) == sorted(ids), f"{len(ids) - len(found)} of {len(ids)} images never inspected"
    assert {i["status"] for i in found.values()} == {"INSPECTED"}
    items = results(state)
    keys = [i["key"] for i in items.values()]
    assert sorted(keys) == sorted(ids.values())  # one result item per object
    assert {i: items[i] for i in before} == before


def test_graceful_stop_with_images_queued_loses_nothing(
    trained_artifact: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    state_dir, ids = tmp_path / "stack", {}
    with stack(state_dir, trained_artifact) as state:
        for n in range(36):
            key = f"line1/widget/queued-{n:03d}.png"
            ids[put(state, key, image(synthetic_root, n))] = key
        wait_for(lambda: len(results(state)) >= 3)
        down = local("down", state_dir)
        assert down.returncode == 0, down.stderr
    # measured after the stop, from the store that survives it: what the stop left undone
    with stack(state_dir, trained_artifact) as state:
        restored = state["restored"]
        before = {i: item for i, item in results(state).items() if i in ids}
        assert restored["requeued"] == len(ids) - len(before) > 0  # the queue held messages at the stop
        assert_all_inspected_once(state, ids, before)


def test_kill_9_of_the_whole_stack_loses_no_accepted_object(
    trained_artifact: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    state_dir, accepted, stop = tmp_path / "stack", {}, threading.Event()
    with stack(state_dir, trained_artifact) as state:

        def upload() -> None:  # a camera: puts until S3 stops answering
            for n in range(200):
                if stop.is_set():
                    return
                key = f"line1/widget/cam-{n:03d}.png"
                try:
                    accepted[put(state, key, image(synthetic_root, n))] = key
                except Exception:  # noqa: BLE001 - the stack is gone: this one was never accepted
                    return

        camera = threading.Thread(target=upload)
        camera.start()
        wait_for(lambda: len(results(state)) >= 5 and len(accepted) >= 30)
        before = results(state)
        os.killpg(state["pgid"], signal.SIGKILL)  # the supervisor and every child at once
        stop.set()
        camera.join()
        assert len(before) < len(accepted)  # work was queued and in flight at the kill
    assert (state_dir / "state.json").exists()  # left by the killed supervisor
    with stack(state_dir, trained_artifact) as state:
        assert state["restored"]["interrupted"] >= 0  # counted (the supervisor logs it), never hidden
        inbox = boto3.client("s3").list_objects_v2(Bucket=state["resources"]["InboxBucket"])["Contents"]
        assert sorted(o["Key"] for o in inbox) == sorted(accepted.values())
        assert_all_inspected_once(state, accepted, before)


def test_children_die_with_a_killed_supervisor_and_the_stack_comes_back(
    trained_artifact: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    state_dir = tmp_path / "stack"
    with stack(state_dir, trained_artifact) as state:
        first = {put(state, "line1/widget/first.png", image(synthetic_root, 1)): "line1/widget/first.png"}
        wait_items(state, list(first))
        before = results(state)
        os.kill(state["pid"], signal.SIGKILL)  # the supervisor alone
        wait_for(lambda: not stack_processes(state["pgid"]), timeout=30)
    with stack(state_dir, trained_artifact) as state:  # stale state.json, the same ports free again
        second = {put(state, "line1/widget/second.png", image(synthetic_root, 2)): "line1/widget/second.png"}
        assert_all_inspected_once(state, {**first, **second}, before)
