"""Learning from reviews through the local stack: drifted good parts the deployed model flags are reviewed
good in the API; `ivadas update-model` turns them into a pending version that no longer flags them (and
records which reviews went in); a reviewed escape becomes part of what `ivadas compare --reviewed` scores."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from infra.cli import main
from model_server.engine.artifact import read_cards
from model_server.engine.predictor import Predictor
from tests.conftest import local_stack
from tests.e2e.test_pipeline import put, wait_items
from tests.e2e.test_results_review import call


def _drifted(path: Path, factor: float) -> bytes:
    """A good part under other lighting and slightly turned: what a camera drift looks like."""
    img = ImageEnhance.Brightness(Image.open(path).convert("RGB")).enhance(factor).rotate(8)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_reviewed_false_alarms_become_a_pending_version_that_learned_them(
    trained_artifact: Path, synthetic_root: Path, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    where = ["--state-dir", str(tmp_path / "stack")]
    goods = sorted((synthetic_root / "widget/train/good").glob("*.png"))
    with local_stack(tmp_path / "stack", trained_artifact, None, ["WorkerBatchingWindowSeconds=0"]) as state:
        assert main(["register", "--artifact", str(trained_artifact), "--model", "patchcore", *where]) == 0
        assert main(["approve", "patchcore-1", *where]) == 0
        assert main(["deploy", "--model", "patchcore", "--version", "patchcore-1", *where]) == 0
        images = {f"line1/widget/drift-{i}.png": _drifted(p, 1.6) for i, p in enumerate(goods[:8])}
        ids = {put(state, key, body): key for key, body in images.items()}
        results = wait_items(state, list(ids))
        flagged = [iid for iid, item in results.items() if item["is_anomaly"]]
        assert len(flagged) >= 3, "the drift should fool the model on some parts"
        for iid in flagged:
            status, _ = call(state, "POST", f"/results/{iid}/review", body={"verdict": "good"})
            assert status == 200
        clean = {put(state, f"line1/widget/clean-{p.name}", p.read_bytes()): p
                 for p in sorted((synthetic_root / "widget/test/good").glob("*.png"))}  # fmt: skip
        passed = [iid for iid, item in wait_items(state, list(clean)).items() if not item["is_anomaly"]]
        assert passed, "the model passes clean good parts"
        # a part the model passed that a reviewer calls defective: an escape
        status, _ = call(state, "POST", f"/results/{passed[0]}/review", body={"verdict": "defect"})
        assert status == 200

        out = tmp_path / "updated.tar.gz"
        capsys.readouterr()
        code = main(
            ["update-model", "--model", "patchcore", "--class-name", "widget", "--out", str(out), *where]
        )
        doc = json.loads(capsys.readouterr().out)
        assert code == 0 and doc["version"] == "patchcore-2" and doc["status"] == "PendingManualApproval"
        assert doc["reviews"] == len(flagged) and doc["update"]["patches_added"] > 0
        update = read_cards(out)[1]["widget"]["updates"][-1]
        assert len(update["review_ids"]) == len(flagged)
        predictor = Predictor(out)
        still = [predictor.predict("widget", [images[ids[iid]]])[0].is_anomaly for iid in flagged]
        assert sum(still) < len(flagged) / 2, f"the update still flags {sum(still)} of {len(flagged)}"
        assert np.isfinite(doc["update"]["coverage_radius"])
        # once deployed, the same reviews are nothing new
        assert main(["approve", "patchcore-2", *where]) == 0
        assert main(["deploy", "--model", "patchcore", "--version", "patchcore-2", *where]) == 0
        again = ["update-model", "--model", "patchcore", "--class-name", "widget", "--no-register"]
        assert main([*again, "--out", str(tmp_path / "again.tar.gz"), *where]) == 2
        capsys.readouterr()
        assert (
            main(["compare", "--reviewed", "--class-name", "widget", "--version", "patchcore-1", *where]) == 0
        )
        said = capsys.readouterr().out
        assert "widget: 1 reviewed escapes" in said and "patchcore-1: catches 0 of 1" in said, said
