"""`ivadas train / evaluate / predict` end to end on a synthetic class, and their bad-input behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infra.cli import main
from model_server import defaults
from model_server.engine.artifact import load_artifact
from model_server.engine.predictor import Predictor

ROOT = Path(__file__).resolve().parents[2]


def test_train_writes_a_complete_model_card(trained_artifact: Path) -> None:
    artifact = load_artifact(trained_artifact)
    card = artifact.get("widget").card
    assert card["data"]["n_train"] == card["data"]["n_threshold"] == 12  # all in the bank, all scored LOO
    assert len(card["threshold"]["good_scores"]) == 12
    assert card["threshold"]["quantile"] == pytest.approx(0.99)
    assert len(card["data"]["fingerprint"]) == 64
    assert card["hyperparameters"]["features"]["input_size"] == 64
    assert card["git_commit"] is None or len(card["git_commit"]) >= 40
    assert card["metrics"]["image_auroc"] == pytest.approx(1.0)  # drawn scratches are easy
    assert card["training"]["bank_bytes"] == artifact.get("widget").bank.nbytes


def test_evaluate_writes_the_contracted_metrics(
    trained_artifact: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report"
    code = main(["evaluate", "--artifact", str(trained_artifact), "--data-root", str(synthetic_root),
                 "--report-dir", str(report), "--quiet"])  # fmt: skip
    assert code == 0
    doc = json.loads((report / "metrics.json").read_text())
    assert doc["model"] == "patchcore"
    widget = doc["classes"]["widget"]
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1_max", "threshold", "n_test"):
        assert key in widget
    assert widget["n_test"] == 8
    assert 0.9 <= widget["image_auroc"] <= 1.0 and 0.5 < widget["pixel_auroc"] <= 1.0
    assert doc["mean"]["image_auroc"] == widget["image_auroc"]
    for name in ("report.md", "roc.png", "heatmaps_widget.png"):
        assert (report / name).stat().st_size > 0


def test_train_writes_the_report_of_its_own_evaluation(
    trained_artifact: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    """`train --report-dir` evaluates once and reports as `evaluate` does: make demo saves a second pass."""
    args = ["--data-root", str(synthetic_root), "--classes", "widget", "--input-size", "64",
            "--coreset-ratio", "0.25", "--quiet"]  # fmt: skip
    trained, evaluated = tmp_path / "trained", tmp_path / "evaluated"
    artifact = tmp_path / "model.tar.gz"
    assert main(["train", *args, "--out", str(artifact), "--report-dir", str(trained)]) == 0
    assert main(["evaluate", "--artifact", str(artifact), "--data-root", str(synthetic_root),
                 "--report-dir", str(evaluated), "--quiet"]) == 0  # fmt: skip
    once, twice = (json.loads((d / "metrics.json").read_text()) for d in (trained, evaluated))
    assert once["model_version"] == twice["model_version"] == load_artifact(artifact).model_version
    for key in ("image_auroc", "pixel_auroc", "aupro", "n_test"):  # torch in training, OpenVINO served: 1e-4
        assert once["classes"]["widget"][key] == pytest.approx(twice["classes"]["widget"][key], abs=1e-3)
    for name in ("report.md", "roc.png", "heatmaps_widget.png"):
        assert (trained / name).stat().st_size > 0
    assert main(["train", *args, "--out", str(artifact), "--report-dir", str(trained), "--no-evaluate"]) == 2


def test_predict_prints_one_json_line_per_image_and_matches_the_library(
    trained_artifact: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = [
        str(synthetic_root / "widget/test/good/000.png"),
        str(synthetic_root / "widget/test/scratch/000.png"),
    ]
    code = main(["predict", "--artifact", str(trained_artifact), "--class-name", "widget",
                 "--heatmap-dir", str(tmp_path / "maps"), *images])  # fmt: skip
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in lines] == images
    good, bad = lines
    assert not good["is_anomaly"] and bad["is_anomaly"]
    assert good["normalized_score"] < 0.5 < bad["normalized_score"]
    assert bad["regions"], "a drawn scratch should give a region"
    assert set(bad["timings_ms"]) >= {"decode", "preprocess", "backbone", "knn", "heatmap", "total"}
    heatmap = Image.open(bad["heatmap"])
    # at the map's resolution: the 64 px model's input over a 96 px image; a palette PNG (the colour map)
    assert heatmap.size == (64, 64) and heatmap.mode == "P"
    assert (tmp_path / "maps/000_overlay.png").exists()
    (direct,) = Predictor(trained_artifact).predict("widget", [Path(images[1])])
    assert direct.anomaly_score == pytest.approx(bad["anomaly_score"], abs=1e-5)


def test_unreadable_image_names_the_file_and_exits_nonzero(
    trained_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    code = main(["predict", "--artifact", str(trained_artifact), "--class-name", "widget", str(fake)])
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(fake) in err[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "--class-name", "capsule", "x.png"], "class 'capsule' is not in this patchcore model"),
        (["evaluate", "--classes", "capsule", "--data-root", "{root}", "--report-dir", "{tmp}/r"], "capsule"),
    ],
)
def test_unknown_class_is_one_line(trained_artifact, synthetic_root, tmp_path, capsys, args, message) -> None:
    args = [a.format(root=synthetic_root, tmp=tmp_path) for a in args]
    code = main([args[0], "--artifact", str(trained_artifact), *args[1:]])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_empty_and_missing_train_folders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty/train/good").mkdir(parents=True)
    (tmp_path / "empty/test/good").mkdir(parents=True)
    for cls in ("empty", "absent"):
        code = main(
            ["train", "--data-root", str(tmp_path), "--classes", cls, "--out", str(tmp_path / "m.tar.gz")]
        )
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and cls in err[0], err
    assert not (tmp_path / "m.tar.gz").exists()


def test_errors_reach_the_shell_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "model.tar.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "infra.cli", "predict", "--artifact", str(bad), "--class-name", "x", "a.png"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("ivadas predict: error:") and str(bad) in proc.stderr


def test_softpatch_noise_study_keeps_moved_images_out_of_test(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "soft.tar.gz"
    code = main(["train", "--data-root", str(synthetic_root), "--classes", "widget", "--model", "softpatch",
                 "--noise-ratio", "0.25", "--input-size", "64", "--quiet",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    model = load_artifact(out).get("widget")
    assert model.weights is not None and np.all(model.weights > 0)
    (moved,) = model.card["data"]["noise_in_train"]
    assert moved.startswith("test/scratch/")
    assert model.card["metrics"]["n_test"] == 7  # 8 test images, one moved into train


def test_inspect_reports_the_images_it_could_not_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on once the block ends: the stack is gone
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # use_state writes them too; monkeypatch puts the old ones back
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    resources = {"InboxBucket": "inbox", "ResultsTable": "results"}
    (state_dir / "state.json").write_text(json.dumps({"environment": env, "resources": resources}))
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), i * 60, np.uint8)).save(folder / f"{i}.png")
    args = ["inspect", str(folder), "--class-name", "widget", "--state-dir", str(state_dir)]
    assert main([*args, "--timeout", "60"]) == 1
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert (
        summary["not_uploaded"] == 3 and summary["uploaded"] == summary["in_flight"] == summary["lost"] == 0
    )
    assert out.count("NOT_UPLOADED") == 3 and out.count("upload failed") == 3


def test_train_at_its_defaults_grows_the_bank_and_searches_nothing(
    synthetic_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "default.tar.gz"
    code = main(["train", "--data-root", str(synthetic_root), "--classes", "widget", "--quiet",
                 "--no-evaluate", "--out", str(out)])  # fmt: skip
    assert code == 0
    model = load_artifact(out).get("widget")
    assert model.card["search"] is None and model.card["profile"] == "quality"
    features = model.config.features
    assert features.backbone == defaults.BACKBONE
    assert features.input_size == min(defaults.SIZES)  # 96 px parts: never enlarged past 1.25x
    growth = model.card["training"]["bank_growth"]
    assert growth["steps"][0]["coreset_ratio"] == defaults.CORESET_RATIO
    assert growth["chosen_ratio"] in [s["coreset_ratio"] for s in growth["steps"]]
    assert model.config.max_coreset_ratio == defaults.MAX_CORESET_RATIO


def test_inspect_of_a_missing_folder_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for folder in (tmp_path / "absent", tmp_path / "a-file.png"):
        folder.parent.mkdir(exist_ok=True)
        if folder.suffix:
            folder.write_bytes(b"not a folder")
        proc = subprocess.run(
            [sys.executable, "-m", "infra.cli", "inspect", str(folder), "--class-name", "widget",
             "--state-dir", str(tmp_path / "no-stack")],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == f"ivadas inspect: error: {folder} is not a folder"


def test_inspect_names_the_files_it_skips_as_not_images(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "images"
    (folder / "raw").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "0.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "1.JPG")
    others = ["labels.csv", "notes.txt", "raw/frame.dat", "raw/frame.raw", "README", "a.zip", "b.json"]
    for name in others:
        (folder / name).write_text("not an image")
    with pytest.raises(SystemExit, match="the local stack is not running"):  # found, then no stack to send to
        main(["inspect", str(folder), "--class-name", "widget", "--state-dir", str(tmp_path / "no-stack")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("ivadas inspect: skipped 7 file(s) that are not images (.png, .jpg")
    named = [name for name in others if name in line]
    assert len(named) == 5 and line.endswith(" and 2 more")


def test_train_searches_what_no_flag_fixes_and_records_it(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "searched.tar.gz"
    code = main(["train", "--data-root", str(synthetic_root), "--classes", "widget", "--input-size", "64",
                 "--backbone", "mobilenetv2_100", "--search", "--quiet", "--no-evaluate",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    model = load_artifact(out).get("widget")
    search = model.card["search"]
    tried = {(c["backbone"], c["input_size"]) for c in search["candidates"]}
    assert tried == {("mobilenetv2_100", 64)}  # the flags win; weighting and pooling were searched
    assert {c["layer_weighting"] for c in search["candidates"]} == {"channels", "equal"}
    features = model.card["hyperparameters"]["features"]
    assert features["layer_weighting"] == search["chosen"]["layer_weighting"]
    assert model.config.score_top_fraction == search["chosen"]["score_top_fraction"]
    assert features["source_size"] == [96, 96]
    report = tmp_path / "report"
    assert main(["evaluate", "--artifact", str(out), "--data-root", str(synthetic_root),
                 "--report-dir", str(report), "--quiet"]) == 0  # fmt: skip
    text = (report / "report.md").read_text()
    assert f"chose **{search['chosen']['label']}**" in text and "| candidate | proxy |" in text
    assert "for a target false-alarm rate of 0.010" in text and "false alarms 0/4" in text

    again = tmp_path / "softpatch.tar.gz"
    code = main(["train", "--data-root", str(synthetic_root), "--classes", "widget", "--model", "softpatch",
                 "--config-from", str(out), "--quiet", "--no-evaluate", "--out", str(again)])  # fmt: skip
    assert code == 0
    copied = load_artifact(again).get("widget")
    assert copied.config.features == model.config.features and copied.card["search"] is None
    assert copied.config.score_top_fraction == model.config.score_top_fraction


def test_train_takes_a_brought_backbone_and_its_weights(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any timm model by name, its weights from a file: the card names them by SHA-256, the artifact carries
    them, and the official embedding ('unfold') runs through `ivadas train` and `ivadas predict`."""
    import hashlib
    import shutil

    import timm
    import torch

    monkeypatch.setenv("IVADAS_WEIGHTS_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    weights = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), weights)
    out = tmp_path / "brought.tar.gz"
    code = main(["train", "--data-root", str(synthetic_root), "--classes", "widget", "--backbone",
                 "timm:test_resnet", "--weights", str(weights), "--aggregation", "unfold", "--feature-dim",
                 "64", "--input-size", "64", "--quiet", "--no-evaluate", "--out", str(out)])  # fmt: skip
    assert code == 0
    features = load_artifact(out).get("widget").config.features
    assert features.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (features.backbone, features.aggregation, features.dim) == ("timm:test_resnet", "unfold", 64)
    from model_server.engine import weights as brought

    weights.unlink()  # a fresh machine: no file, no cache, no registry; the artifact carries the weights
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    monkeypatch.setattr(brought, "_REGISTRY", {})
    good = next((synthetic_root / "widget/test/good").glob("*.png"))
    assert main(["predict", "--artifact", str(out), "--class-name", "widget", str(good)]) == 0
