"""model.tar.gz round trip, and refusal of corrupt or incompatible artifacts."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from model_server.engine.artifact import load_artifact, save_artifact
from model_server.engine.calibration import Calibration
from model_server.engine.class_model import ClassModel
from model_server.engine.config import FeatureConfig, ModelConfig
from model_server.errors import ArtifactError, UnknownClassError


def _model(name: str, model: str = "softpatch", dim: int = 152) -> ClassModel:
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(50, dim)).astype(np.float32)
    weights = rng.uniform(0.8, 1.5, size=50).astype(np.float32) if model == "softpatch" else None
    config = ModelConfig(
        model=model, features=FeatureConfig(backbone="efficientnet_lite0", input_size=64), lof_k=4
    )
    card = {
        "class_name": name,
        "model": model,
        "data": {"fingerprint": "abc"},
        "metrics": {"image_auroc": 0.9},
    }
    return ClassModel(name, config, bank, weights, Calibration(2.0, 1.0, 0.99, 5), card)


def test_round_trip_multi_class(tmp_path: Path) -> None:
    models = {"bottle": _model("bottle"), "elpv_mono": _model("elpv_mono")}
    saved = save_artifact(tmp_path / "model.tar.gz", models)
    loaded = load_artifact(tmp_path / "model.tar.gz")
    assert loaded.model == "softpatch" and loaded.model_version == saved.model_version
    assert sorted(loaded.classes) == ["bottle", "elpv_mono"]
    for name, original in models.items():
        got = loaded.classes[name]
        np.testing.assert_array_equal(got.bank, original.bank)
        np.testing.assert_array_equal(got.weights, original.weights)
        assert got.config == original.config and got.calibration == original.calibration
        assert got.card == original.card
    with pytest.raises(UnknownClassError, match="capsule"):
        loaded.get("capsule")
    # SageMaker unpacks the tarball into /opt/ml/model: the folder loads the same
    folder = tmp_path / "opt_ml_model"
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        tar.extractall(folder, filter="data")
    assert load_artifact(folder).model_version == saved.model_version
    assert (folder / "classes/bottle/model_card.md").read_text().startswith("# Model card: bottle")


def _rewrite(src: Path, dst: Path, edit) -> None:
    with tarfile.open(src) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    edit(files)
    with tarfile.open(dst, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _flip_bank_byte(files: dict) -> None:
    data = bytearray(files["classes/bottle/bank.npy"])
    data[-1] ^= 0xFF
    files["classes/bottle/bank.npy"] = bytes(data)


def _future_format(files: dict) -> None:
    manifest = json.loads(files["manifest.json"])
    manifest["format_version"] = 99
    files["manifest.json"] = json.dumps(manifest).encode()


def _drop_calibration(files: dict) -> None:
    del files["classes/bottle/calibration.json"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [(_flip_bank_byte, "corrupt"), (_future_format, "format version 99"), (_drop_calibration, "missing")],
)
def test_tampered_artifacts_are_refused(tmp_path: Path, edit, message: str) -> None:
    save_artifact(tmp_path / "ok.tar.gz", {"bottle": _model("bottle")})
    _rewrite(tmp_path / "ok.tar.gz", tmp_path / "bad.tar.gz", edit)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(tmp_path / "bad.tar.gz")


def test_garbage_truncated_and_missing_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "garbage.tar.gz").write_bytes(b"this is not a tarball")
    with pytest.raises(ArtifactError, match="not a readable model artifact"):
        load_artifact(tmp_path / "garbage.tar.gz")
    save_artifact(tmp_path / "ok.tar.gz", {"bottle": _model("bottle")})
    data = (tmp_path / "ok.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError):
        load_artifact(tmp_path / "cut.tar.gz")
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nope.tar.gz")


def test_bank_that_does_not_fit_the_backbone_is_refused(tmp_path: Path) -> None:
    save_artifact(tmp_path / "m.tar.gz", {"bottle": _model("bottle", dim=100)})
    with pytest.raises(ArtifactError, match="does not fit"):
        load_artifact(tmp_path / "m.tar.gz")


def test_one_model_type_per_artifact(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one model type"):
        save_artifact(tmp_path / "m.tar.gz", {"a": _model("a"), "b": _model("b", model="patchcore")})
