"""The engine on the real MVTec AD bottle (skipped when the data is absent).

Trained at 256 px to keep the suite quick; the quality targets at the default 384 px are checked by
`make bench-model` (docs/benchmarks.md), not here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.cli import main
from model_server.training.samples import read_mask
from tests.paths import require_bottle

pytestmark = [pytest.mark.mvtec, pytest.mark.slow]


def test_bottle_train_evaluate_predict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = require_bottle()
    artifact = tmp_path / "bottle.tar.gz"
    common = ["--input-size", "256", "--quiet"]
    assert main(["train", "--data-root", str(root), "--classes", "bottle", "--no-evaluate", *common,
                 "--out", str(artifact)]) == 0  # fmt: skip
    assert main(["evaluate", "--artifact", str(artifact), "--data-root", str(root), "--report-dir",
                 str(tmp_path / "report"), "--quiet"]) == 0  # fmt: skip
    bottle = json.loads((tmp_path / "report/metrics.json").read_text())["classes"]["bottle"]
    assert bottle["n_test"] == 83
    assert bottle["image_auroc"] >= 0.99
    assert bottle["pixel_auroc"] >= 0.97 and bottle["aupro"] >= 0.88
    capsys.readouterr()

    defect = root / "bottle/test/broken_large/000.png"
    good = root / "bottle/test/good/000.png"
    assert (
        main(["predict", "--artifact", str(artifact), "--class-name", "bottle", str(good), str(defect)]) == 0
    )
    good_pred, bad_pred = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert not good_pred["is_anomaly"] and bad_pred["is_anomaly"]
    mask = read_mask(root / "bottle/ground_truth/broken_large/000_mask.png")
    box = bad_pred["regions"][0]  # the strongest region must sit on the broken part
    inside = mask[box["y"] : box["y"] + box["height"], box["x"] : box["x"] + box["width"]]
    assert inside.any() and (box["width"], box["height"]) != (900, 900)
    assert 0.5 < bad_pred["normalized_score"] <= 1.0 and good_pred["normalized_score"] < 0.5
