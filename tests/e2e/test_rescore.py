"""`ivadas rescore` through the local stack: a few hundred stored results of inspected inbox images are scored
again by a registered version as a Batch Transform job (moto keeps it, the local transform runner drives a
model server on that version as SageMaker would), and compared with the stored answers; `compare --rescored`
shows the comparison the command kept."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import boto3
import numpy as np
import pytest
from PIL import Image

from infra.cli import main
from model_server.engine.predictor import Predictor
from tests.conftest import _part, _scratch, local_stack
from tests.e2e.test_pipeline import put, wait_items

N_IMAGES = 300


def _png(rng: np.random.Generator, defect: bool) -> bytes:
    img = _part(rng)
    if defect:
        img, _ = _scratch(img, rng)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_a_backlog_rescored_by_a_new_version_is_compared_with_the_stored_results(
    trained_artifact: Path,
    retrained_artifact: Path,
    trained_softpatch: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    state_dir = tmp_path / "stack"
    where = ["--state-dir", str(state_dir)]
    rng = np.random.default_rng(11)
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with local_stack(state_dir, trained_artifact, trained_softpatch, []) as state:
        images = {f"line1/widget/backlog-{i:03d}.png": _png(rng, defect=i % 5 == 0) for i in range(N_IMAGES)}
        ids = [put(state, key, body) for key, body in images.items()]
        stored = wait_items(state, ids, timeout=600)
        assert len(stored) == N_IMAGES
        again = put(state, "line1/widget/backlog-001.png", images["line1/widget/backlog-002.png"])
        stored.update(wait_items(state, [again]))
        boto3.client("s3").delete_object(
            Bucket=state["resources"]["InboxBucket"], Key="line1/widget/backlog-003.png"
        )
        assert main(["register", "--artifact", str(retrained_artifact), "--model", "patchcore", *where]) == 0
        capsys.readouterr()

        args = ["rescore", "--version", "patchcore-1", "--since", since, "--class-name", "widget", *where]
        assert main([*args, "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)["widget"]
        skipped = {s["key"]: s["why"] for s in doc["skipped"]}
        assert skipped["line1/widget/backlog-003.png"] == "the image is gone (inbox retention)"
        # the re-upload of 001 is inspected too: its new result is scored, its old one is skipped
        assert skipped["line1/widget/backlog-001.png"] == "the key holds another image now"
        assert doc["images"] == N_IMAGES - 1
        assert 0 <= doc["agreement"] <= 1 and doc["pearson"] is not None
        by_key = {i["key"]: i for i in sorted(stored.values(), key=lambda i: i["created_at"])}
        for row in doc["disagreements"]:
            assert row["baseline"]["is_anomaly"] != row["candidate"]["is_anomaly"]
            assert row["baseline"]["is_anomaly"] == by_key[row["key"]]["is_anomaly"]

        predictor = Predictor(retrained_artifact)  # the transform scored with the version asked for
        s3 = boto3.client("s3")
        bucket, prefix = state["resources"]["ModelBucket"], "local/rescore-output/"
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
        assert len(keys) == N_IMAGES - 1
        sample = sorted(keys)[:5]
        for key in sample:
            answer = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            image = s3.get_object(
                Bucket=state["resources"]["InboxBucket"], Key=key.split("/", 4)[-1].removesuffix(".out")
            )["Body"].read()
            (pred,) = predictor.score(predictor.artifact.get("widget"), [predictor.decode(image, name=key)])
            assert abs(answer["anomaly_score"] - pred.anomaly_score) <= 1e-6
            assert answer["model_version"] == predictor.artifact.model_version

        assert main(["compare", "--class-name", "widget", "--rescored", "patchcore-1", *where]) == 0
        shown = capsys.readouterr().out
        assert f"widget: {N_IMAGES - 1} stored results since {since} re-scored with patchcore-1" in shown
