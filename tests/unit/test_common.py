"""Patch features, nearest-neighbour scores and anomaly maps."""

import numpy as np
import pytest
import torch

from model_server.engine.config import FeatureConfig
from model_server.engine.features import FeatureExtractor, aggregate_patches
from model_server.engine.maps import MAP_SIGMA, anomaly_maps, resize_map
from model_server.engine.memory_bank import NearestNeighbourScorer
from model_server.engine.runtime import retain_freed_memory


def test_knn_scores_match_numpy() -> None:
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(500, 24)).astype(np.float32)
    queries = rng.normal(size=(300, 24)).astype(np.float32)
    dist, idx = NearestNeighbourScorer(bank).search(queries)
    full = np.sqrt(((queries[:, None, :] - bank[None, :, :]) ** 2).sum(-1))
    np.testing.assert_array_equal(idx, full.argmin(1))
    np.testing.assert_allclose(dist, full.min(1), rtol=1e-4, atol=1e-4)


def test_soft_weights_scale_the_nearest_distance() -> None:
    bank = np.array([[0.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    weights = np.array([1.0, 3.0], dtype=np.float32)
    dist, idx = NearestNeighbourScorer(bank, weights).search(np.array([[1.0, 0.0], [9.0, 0.0]]))
    assert idx.tolist() == [0, 1]
    np.testing.assert_allclose(dist, [1.0, 3.0], rtol=1e-6)


def test_scorer_rejects_mismatched_weights() -> None:
    with pytest.raises(ValueError, match="weights"):
        NearestNeighbourScorer(np.zeros((3, 2), np.float32), np.ones(2, np.float32))


def test_aggregation_averages_neighbourhood_and_upsamples_deeper_map() -> None:
    shallow = torch.zeros(1, 2, 8, 8)
    shallow[0, 0, 4, 4] = 9.0
    deep = torch.ones(1, 3, 4, 4)
    out = aggregate_patches([shallow, deep], patch_size=3, feature_dim=None)
    assert out.shape == (1, 8, 8, 5)
    assert out[0, 4, 4, 0] == pytest.approx(1.0)  # 9 spread over its 3x3 neighbourhood
    assert out[0, 3, 3, 0] == pytest.approx(1.0)
    assert out[0, 0, 0, 0] == 0.0
    torch.testing.assert_close(out[:, 3:5, 3:5, 2:], torch.ones(1, 2, 2, 3))  # away from the edge: ones
    # cells past the edge count as zeros, as the official zero-padded unfold has it: the all-ones deep map's
    # corner averages 4 cells of 9 and its edge 6 of 9 (the upsampled grid's corner and edge take those)
    assert float(out[0, 0, 0, 2]) == pytest.approx(4 / 9, abs=1e-5)
    assert float(out[0, 4, 0, 2]) == pytest.approx(6 / 9, abs=1e-5)
    inside = aggregate_patches([shallow, deep], patch_size=3, feature_dim=None, edge="inside")
    torch.testing.assert_close(inside[..., 2:], torch.ones(1, 8, 8, 3))  # older artifacts: inside cells only


def test_artifacts_from_before_the_edge_setting_keep_their_aggregation() -> None:
    """A bank is only valid with the features it was built from: configs without `edge` mean "inside"."""
    stored = FeatureConfig().to_dict()
    assert stored.pop("edge") == "zeros"  # what training writes now
    assert FeatureConfig.from_dict(stored).edge == "inside"
    with pytest.raises(ValueError, match="unknown edge"):
        FeatureConfig(edge="reflect")


def test_aggregation_reduces_to_feature_dim() -> None:
    maps = [torch.randn(2, 40, 8, 8), torch.randn(2, 112, 4, 4)]
    assert aggregate_patches(maps, 3, feature_dim=64).shape == (2, 8, 8, 64)


def test_equal_layer_weighting_gives_each_layer_the_same_say() -> None:
    """Scaled by 1/sqrt(channels), a layer's squared distances no longer grow with its width: what the
    official fixed-length averaging does by stretching every layer to one length."""
    maps = [torch.randn(1, 40, 8, 8), torch.randn(1, 112, 4, 4)]
    plain = aggregate_patches(maps, 3, None)
    equal = aggregate_patches(maps, 3, None, layer_weighting="equal")
    torch.testing.assert_close(equal[..., :40], plain[..., :40] / np.sqrt(40))
    torch.testing.assert_close(equal[..., 40:], plain[..., 40:] / np.sqrt(112))
    cfg = FeatureConfig(layer_weighting="equal", source_size=(300, 200))
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="layer weighting"):
        FeatureConfig(layer_weighting="loud")


def test_feature_extractor_on_odd_sized_grey_like_images() -> None:
    cfg = FeatureConfig(input_size=64)
    extractor = FeatureExtractor(cfg)
    images = [np.zeros((50, 90, 3), np.uint8), np.full((123, 77, 3), 200, np.uint8)]
    feats = extractor(images)
    assert feats.shape == (2, *cfg.grid, cfg.dim) == (2, 8, 8, 168)  # efficientnet_lite2: 48 + 120 channels
    assert torch.isfinite(feats).all()


def test_feature_config_validates() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        FeatureConfig(input_size=100)
    with pytest.raises(ValueError, match="unknown backbone|Unknown|backbone"):
        FeatureConfig(backbone="resnet9000")
    assert FeatureConfig.from_dict(FeatureConfig().to_dict()) == FeatureConfig()


def test_anomaly_map_is_upsampled_and_smoothed() -> None:
    grid = np.zeros((1, 8, 8), np.float32)
    grid[0, 4, 4] = 1.0
    amap = anomaly_maps(grid, (64, 64))
    assert amap.shape == (1, 64, 64)
    peak = np.unravel_index(amap[0].argmax(), amap[0].shape)
    assert abs(peak[0] - 36) <= 2 and abs(peak[1] - 36) <= 2
    assert amap[0].max() < 1.0  # blurred
    assert resize_map(amap[0], (30, 50)).shape == (30, 50)


@pytest.mark.parametrize(
    ("grid", "shape"), [((48, 48), (384, 384)), ((48, 32), (384, 256)), ((3, 5), (17, 33))]
)
def test_anomaly_map_equals_upsampling_then_filtering_the_image(grid, shape) -> None:
    """The two-matrix form is the official computation (bilinear upsampling, then a sigma-4 Gaussian over the
    full-size map), only cheaper: same maps to float precision, at any aspect, even a map smaller than the
    filter's radius."""
    import torch.nn.functional as F
    from scipy.ndimage import gaussian_filter

    scores = np.random.default_rng(0).random((2, *grid)).astype(np.float32) * 5
    up = F.interpolate(torch.from_numpy(scores)[:, None], size=shape, mode="bilinear", align_corners=False)
    reference = np.stack([gaussian_filter(m, sigma=MAP_SIGMA) for m in up[:, 0].numpy()])
    got = anomaly_maps(scores, shape)
    assert got.shape == (2, *shape) and got.dtype == np.float32
    assert float(np.abs(got - reference).max()) <= 1e-5 * float(np.abs(reference).max())


def test_cli_backbone_choices_are_the_loadable_backbones() -> None:
    from model_server import defaults
    from model_server.engine.backbones import BACKBONES

    assert set(defaults.BACKBONE_NAMES) == set(BACKBONES)
    assert defaults.BACKBONE in BACKBONES


def test_freed_buffers_stay_in_the_process() -> None:
    # glibc accepts both settings (a value over its ceiling would be refused and the backbone stay slow)
    assert retain_freed_memory() is True
    assert retain_freed_memory() is True  # idempotent: every FeatureExtractor calls it
