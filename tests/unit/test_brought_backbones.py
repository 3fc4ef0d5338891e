"""Backbones a user brings: any timm model by name, its weights from a file or S3, carried by the artifact,
and the official PatchCore embedding ("unfold" aggregation)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from model_server.engine import weights as brought
from model_server.engine.artifact import load_artifact, save_artifact
from model_server.engine.backbones import create_feature_extractor, get_spec
from model_server.engine.calibration import Calibration
from model_server.engine.class_model import ClassModel
from model_server.engine.config import FeatureConfig, ModelConfig
from model_server.engine.features import FeatureExtractor, unfold_patches
from model_server.errors import ArtifactError

TINY = "test_resnet"  # timm's own test model: a ResNet of 0.1 M parameters, strides 8 and 16 at stages 2, 3


@pytest.fixture(autouse=True)
def weights_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "weights-cache"
    monkeypatch.setenv("IVADAS_WEIGHTS_CACHE", str(cache))
    monkeypatch.setattr(brought, "_REGISTRY", {})
    return cache


def _random_weights(path: Path, name: str = TINY, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    for module in model.modules():  # running statistics away from 0/1, so a wrong load would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    torch.save(model.state_dict(), path)
    return path


def _config(sha: str, **kw: object) -> FeatureConfig:
    return FeatureConfig(backbone=f"timm:{TINY}", weights_sha256=sha, input_size=64, **kw)


def test_brought_weights_are_loaded_exactly(tmp_path: Path) -> None:
    sha, path = brought.fetch(str(_random_weights(tmp_path / "w.pth")), TINY)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    reference = timm.create_model(TINY, pretrained=False, features_only=True, out_indices=(2, 3))
    reference.load_state_dict(
        {k: v for k, v in torch.load(path).items() if not k.startswith("fc.")}, strict=False
    )
    reference.eval()
    ours = create_feature_extractor(f"timm:{TINY}", (2, 3), sha)
    x = torch.randn(2, 3, 64, 64)
    for got, want in zip(ours(x), reference(x), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    sha, _ = brought.fetch(str(_random_weights(tmp_path / "w.pth", "test_efficientnet")), "test_efficientnet")
    with pytest.raises(ArtifactError, match="do not fit"):
        create_feature_extractor(f"timm:{TINY}", (2, 3), sha)


def test_missing_or_unnamed_weights_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        brought.fetch(str(tmp_path / "nowhere.pth"), TINY)
    with pytest.raises(ArtifactError, match="not available here"):
        create_feature_extractor(f"timm:{TINY}", (2, 3), "0" * 64)
    with pytest.raises(ValueError, match="weights"):
        FeatureConfig(backbone=f"timm:{TINY}")  # a brought backbone names its weights
    with pytest.raises(ValueError, match="unknown timm model"):
        FeatureConfig(backbone="timm:no_such_model", weights_sha256="0" * 64)
    assert get_spec(f"timm:{TINY}").mean == timm.get_pretrained_cfg(TINY).mean


def test_weights_from_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    boto3 = pytest.importorskip("boto3")
    from moto import mock_aws

    local = _random_weights(tmp_path / "w.pth")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="weights")
        s3.upload_file(str(local), "weights", "backbones/resnet.pth")
        sha, path = brought.fetch("s3://weights/backbones/resnet.pth", TINY)
    assert sha == hashlib.sha256(local.read_bytes()).hexdigest()
    assert path.parent == brought.cache_dir() and path.read_bytes() == local.read_bytes()


def test_artifact_carries_brought_weights(tmp_path: Path, weights_cache: Path) -> None:
    sha, source = brought.fetch(str(_random_weights(tmp_path / "w.pth")), TINY)
    config = ModelConfig(features=_config(sha))
    extractor = FeatureExtractor(config.features, runtime="torch")
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    feats = extractor([image]).numpy()
    bank = feats.reshape(-1, feats.shape[-1])[::3].copy()
    model = ClassModel("widget", config, bank, None, Calibration(1.0, 0.5, 0.99, 10))
    save_artifact(tmp_path / "model.tar.gz", {"widget": model})
    # a fresh machine: the weights file, the registry and the cache are gone
    source.unlink()
    brought._REGISTRY.clear()
    assert not weights_cache.exists()
    loaded = load_artifact(tmp_path / "model.tar.gz").get("widget")
    assert loaded.config.features.weights_sha256 == sha
    again = FeatureExtractor(loaded.config.features, runtime="torch")
    np.testing.assert_allclose(again([image]).numpy(), feats, rtol=0, atol=1e-6)


def _official_embedding(maps: list[torch.Tensor], dim: int) -> torch.Tensor:
    """The official code's steps written out one by one (unfold, per-patch interpolation, flatten, two
    adaptive average pools), on small maps: what unfold_patches must equal bit for bit."""
    b = maps[0].shape[0]
    rows, cols = maps[0].shape[-2:]
    per_layer = []
    for m in maps:
        c, h, w = m.shape[1:]
        u = F.unfold(m, 3, padding=1).reshape(b, c, 3, 3, h * w).permute(0, 4, 1, 2, 3)  # [B, hw, C, 3, 3]
        if (h, w) != (rows, cols):
            u = u.reshape(b, h, w, c, 3, 3).permute(0, 3, 4, 5, 1, 2).reshape(-1, h, w)
            u = F.interpolate(u[:, None], size=(rows, cols), mode="bilinear", align_corners=False)[:, 0]
            u = u.reshape(b, c, 3, 3, rows, cols).permute(0, 4, 5, 1, 2, 3).reshape(b, rows * cols, c, 3, 3)
        flat = u.reshape(-1, 1, c * 9)
        per_layer.append(F.adaptive_avg_pool1d(flat, dim)[:, 0])
    stacked = torch.stack(per_layer, dim=1).reshape(-1, 1, len(maps) * dim)
    return F.adaptive_avg_pool1d(stacked, dim).reshape(b, rows, cols, dim)


def test_unfold_aggregation_is_the_official_embedding() -> None:
    torch.manual_seed(0)
    maps = [torch.randn(2, 24, 8, 8), torch.randn(2, 40, 4, 4)]
    torch.testing.assert_close(unfold_patches(maps, 3, 32), _official_embedding(maps, 32), rtol=0, atol=0)


def test_unfold_aggregation_end_to_end(tmp_path: Path) -> None:
    sha, _ = brought.fetch(str(_random_weights(tmp_path / "w.pth")), TINY)
    config = _config(sha, aggregation="unfold", feature_dim=64)
    assert config.dim == 64
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    feats = FeatureExtractor(config, runtime="torch")([image])
    assert tuple(feats.shape) == (1, *config.grid, 64)
    with pytest.raises(ValueError, match="feature dimension"):
        _config(sha, aggregation="unfold")
