"""The local stack keeps its results across `local down` / `local up`, and an image that was still waiting
when it stopped is inspected after the restart."""

from __future__ import annotations

import os
from pathlib import Path

import boto3

from tests.conftest import local_stack
from tests.e2e.test_pipeline import put, wait_items


def test_state_survives_a_restart_and_waiting_images_are_inspected(
    trained_artifact: Path, trained_softpatch: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    state_dir = tmp_path / "stack"
    good = (synthetic_root / "widget/test/good/000.png").read_bytes()
    with local_stack(state_dir, trained_artifact, trained_softpatch, []) as state:
        done = put(state, "line1/widget/kept.png", good)
        item = wait_items(state, [done])[done]
        os.kill(state["model_server_pid"], 15)  # the next image cannot be inspected before the stop
        waiting = put(state, "line 1/widget/wait+ing é.png", good + b"\0")
    with local_stack(state_dir, trained_artifact, trained_softpatch, []) as state:
        again = wait_items(state, [done, waiting], timeout=60)
        assert again[done] == item  # restored as it was
        assert (
            again[waiting]["status"] == "INSPECTED"
            and again[waiting]["key"] == "line 1/widget/wait+ing é.png"
        )
        heatmap = boto3.client("s3").get_object(
            Bucket=state["resources"]["ResultsBucket"], Key=item["heatmap_key"]
        )
        assert heatmap["Body"].read()[:4] == b"\x89PNG"
        table = boto3.resource("dynamodb").Table(state["resources"]["ResultsTable"])
        keys = [i["key"] for i in table.scan()["Items"]]
        assert sorted(keys) == sorted(["line1/widget/kept.png", "line 1/widget/wait+ing é.png"])
