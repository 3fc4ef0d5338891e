"""Shadow scoring through the local stack (ShadowCandidate=true): the candidate's score, verdict and version
land beside the baseline's in the same item; while the candidate endpoint fails, every baseline result is
still stored whole, with the candidate's error beside it. `ivadas compare` and `ivadas stats` then read what
the stack stored."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import boto3

from infra.cli import main
from ivadas_contract.results_table import from_dynamo
from tests.conftest import local_stack
from tests.e2e.test_pipeline import put

CANDIDATE_ENDPOINT = "ivadas-local-softpatch"


def wait_shadowed(state: dict, ids: list[str], timeout: float = 120) -> dict[str, dict]:
    table = boto3.resource("dynamodb").Table(state["resources"]["ResultsTable"])
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(ids) and time.monotonic() < deadline:
        for i in set(ids) - set(found):
            item = table.get_item(Key={"inspection_id": i}, ConsistentRead=True).get("Item")
            if item and "shadow" in item:
                found[i] = from_dynamo(item)
        time.sleep(0.3)
    assert len(found) == len(ids), f"{len(ids) - len(found)} items never got their shadow fields"
    return found


def _serving(state: dict, endpoint: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{state['model_port']}/ping", timeout=5) as resp:  # noqa: S310
            if endpoint in json.loads(resp.read())["endpoints"]:
                return
        time.sleep(0.5)
    raise AssertionError(f"{endpoint} never came up")


def test_shadow_beside_baseline_and_a_failing_candidate(
    trained_artifact: Path, trained_softpatch: Path, synthetic_root: Path, tmp_path: Path, capsys
) -> None:
    images = sorted((synthetic_root / "widget/test").rglob("*.png"))[:6]
    with local_stack(tmp_path / "stack", trained_artifact, None, ["ShadowCandidate=true"]) as state:
        # no candidate endpoint yet: every shadow call fails
        ids = [put(state, f"line1/widget/a-{i}.png", p.read_bytes()) for i, p in enumerate(images)]
        for item in wait_shadowed(state, ids).values():
            assert item["status"] == "INSPECTED" and item["model"] == "patchcore"
            assert item["anomaly_score"] > 0 and item["heatmap_key"]
            assert "error" in item["shadow"] and "shadow_agrees" not in item
        where = ["--state-dir", str(state["state_dir"])]
        for artifact, model in ((trained_softpatch, "softpatch"), (trained_artifact, "patchcore")):
            assert main(["register", "--artifact", str(artifact), "--model", model, *where]) == 0
            name = f"{model}-1"
            assert main(["approve", name, *where]) == 0
            assert main(["deploy", "--model", model, "--version", name, *where]) == 0
        _serving(state, CANDIDATE_ENDPOINT)  # the endpoint follower brought the candidate up
        ids = [put(state, f"line2/widget/b-{i}.png", p.read_bytes()) for i, p in enumerate(images)]
        items = wait_shadowed(state, ids)
        capsys.readouterr()
        assert main(["compare", "--class-name", "widget", "--json", *where]) == 0
        view = json.loads(capsys.readouterr().out)
        assert view["images"] == len(images)  # the failed shadow calls are not compared
        assert view["agreement"] == sum(i["shadow_agrees"] for i in items.values()) / len(images)
        assert len(view["disagreements"]) == sum(not i["shadow_agrees"] for i in items.values())
        assert main(["compare", "--class-name", "widget", "--data-root", str(synthetic_root), *where]) == 0
        out = capsys.readouterr().out
        assert (
            "patchcore-1" in out and "softpatch-1" in out and "image_auroc" in out and "stored s3://" in out
        )
        assert main(["stats", "--class-name", "widget", "--json", *where]) == 0
        stats = json.loads(capsys.readouterr().out)
        by_line = {g["line"]: g for g in stats["groups"]}
        assert by_line["line1"]["inspected"] == len(images) and by_line["line1"]["candidate_errors"] == len(
            images
        )
        assert by_line["line2"]["candidate_answers"] == len(images)
        assert stats["total"]["anomalies"] == sum(i["is_anomaly"] for i in items.values()) * 2
        assert stats["dlq_depth"] == 0
    for item in items.values():
        shadow = item["shadow"]
        assert item["model"] == "patchcore" and shadow["model"] == "softpatch"
        assert shadow["model_version"].startswith("softpatch-") and shadow["anomaly_score"] > 0
        assert item["shadow_agrees"] == (shadow["is_anomaly"] == item["is_anomaly"])
    assert any(i["is_anomaly"] for i in items.values()) and not all(i["is_anomaly"] for i in items.values())
