"""A model server killed while `ivadas inspect` runs, as a line engineer would see it: every image is uploaded
whatever the results do, every image is inspected, and the images in flight at the kill are inspected within
30 s of the replacement answering /ping.

The queue's visibility timeout is 120 s here: an image that waited for it (what a failed message did before
the worker set its own backoff) would come back four times too late for the bound.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import boto3
import numpy as np
import pytest
from PIL import Image

from tests.conftest import _part, local_stack
from tests.e2e.test_faults import current, wait_for
from tests.e2e.test_pipeline import admin

VISIBILITY_S, BOUND_S, IMAGES, RATE = 120, 30.0, 16, 4
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(trained_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    params = ["WorkerTimeoutSeconds=30", "WorkerBatchSize=5", f"QueueVisibilityTimeoutSeconds={VISIBILITY_S}",
              "WorkerBatchingWindowSeconds=0", "WorkerMaxConcurrency=2"]  # fmt: skip
    with local_stack(tmp_path_factory.mktemp("recovery-stack"), trained_artifact, None, params) as state:
        yield state


def images(folder: Path) -> Path:
    rng = np.random.default_rng(26)
    folder.mkdir()
    for i in range(IMAGES):
        Image.fromarray(_part(rng)).save(folder / f"{i:03d}.png")
    return folder


def results(state: dict) -> dict[str, float]:
    """Inbox key -> when its result was made (unix time)."""
    table = boto3.resource("dynamodb").Table(state["resources"]["ResultsTable"])
    items = table.scan(ConsistentRead=True)["Items"]
    return {
        i["key"]: datetime.fromisoformat(i["created_at"].replace("Z", "+00:00")).timestamp() for i in items
    }


def uploaded(state: dict) -> set[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=state["resources"]["InboxBucket"], Prefix="kill/")
    return {o["Key"] for o in listing.get("Contents", [])}


def test_a_model_server_killed_during_inspect_costs_its_images_seconds(stack: dict, tmp_path: Path) -> None:
    folder = images(tmp_path / "images")
    cmd = [sys.executable, "-m", "infra.cli", "inspect", str(folder), "--class-name", "widget", "--line",
           "kill", "--rate", str(RATE), "--timeout", "150", "--state-dir", stack["state_dir"]]  # fmt: skip
    inspect = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    output: dict[str, str] = {}
    reader = threading.Thread(
        target=lambda: output.update(zip(("out", "err"), inspect.communicate(), strict=True))
    )
    reader.start()
    before = current(stack)
    wait_for(lambda: len(uploaded(stack)) >= 8, 60, "the first uploads")
    admin(stack, "/admin/faults", {"mode": "slow", "delay_seconds": 5})  # images pile up at the endpoint
    time.sleep(2.0)
    in_flight = uploaded(stack) - set(results(stack))
    os.kill(before["model_server_pid"], signal.SIGKILL)
    replaced = wait_for(
        lambda: current(stack)["model_server_replacements"] > before["model_server_replacements"],
        180, "the replacement's /ping",
    )  # fmt: skip
    pinged_at = time.time()
    assert replaced
    reader.join(timeout=300)
    assert inspect.returncode == 0, output.get("err", "")[-3000:]
    summary = json.loads(output["out"].strip().splitlines()[-1])
    assert summary["uploaded"] == summary["inspected"] == IMAGES
    assert summary["not_uploaded"] == summary["in_flight"] == summary["dead_lettered"] == summary["lost"] == 0
    done = results(stack)
    assert len(in_flight) >= 3, "the kill found no image in flight"
    late = {key: round(done[key] - pinged_at, 1) for key in in_flight if done[key] - pinged_at > BOUND_S}
    assert not late, f"inspected more than {BOUND_S:.0f} s after the replacement answered /ping: {late}"
    # the progress line was drawn as results came in, not only at the end
    lines = [part for part in output["err"].replace("\r", "\n").splitlines() if part.startswith("results:")]
    assert any(f"uploaded {IMAGES}/{IMAGES}" not in line for line in lines), lines
    assert f"{IMAGES} images: {IMAGES} uploaded, {IMAGES} inspected" in output["err"]
