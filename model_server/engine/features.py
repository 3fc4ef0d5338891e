"""Patch features, as the official PatchCore code makes them: mid-level feature maps of a frozen ImageNet CNN
(strides 8 and 16), each averaged over its 3x3 neighbourhood so a patch feature sees its surroundings, the
deeper map upsampled to the shallower grid, all concatenated into one vector per patch. Images reach the
network placed on the class's canvas (geometry.py); which patch cells hold image comes back with the features.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from model_server.engine.backbones import create_feature_extractor, get_spec
from model_server.engine.backends import Features, default_runtime, features_for
from model_server.engine.config import FeatureConfig
from model_server.engine.geometry import place, valid_cells
from model_server.engine.runtime import retain_freed_memory


@functools.lru_cache(maxsize=8)
def _network(backbone: str, layers: tuple[int, ...], weights_sha256: str | None = None) -> torch.nn.Module:
    """One network per backbone and layers, shared by every config that differs only in geometry."""
    # channels_last: measured 1.3-2x faster on this CPU's oneDNN convolutions at batch 1 (docs/decisions.md).
    network = create_feature_extractor(backbone, layers, weights_sha256)
    return network.to(memory_format=torch.channels_last)


class PatchFeatureNet(torch.nn.Module):
    """Normalised images [B, 3, H, W] -> patch features [B, rows, cols, dim]: the network and the patch
    aggregation as one module, so a runtime (backends.py) compiles the whole computation."""

    def __init__(self, network: torch.nn.Module, config: FeatureConfig) -> None:
        super().__init__()
        self.network = network
        self.patch_size, self.feature_dim = config.patch_size, config.feature_dim
        self.layer_weighting, self.edge = config.layer_weighting, config.edge
        self.aggregation = config.aggregation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = list(self.network(x))
        if self.aggregation == "unfold":
            return unfold_patches(maps, self.patch_size, int(self.feature_dim or 0))
        return aggregate_patches(maps, self.patch_size, self.feature_dim, self.layer_weighting, self.edge)


@functools.lru_cache(maxsize=16)
def _features(config: FeatureConfig, canvas: tuple[int, int], runtime: str) -> Features:
    """One compiled feature function per graph (everything in the config but the source box) and canvas."""
    network = _network(config.backbone, tuple(config.layers), config.weights_sha256)
    module = PatchFeatureNet(network, config).eval()
    return features_for(module, canvas, runtime)


class FeatureExtractor:
    """Image -> patch features [B, rows, cols, dim] for one `FeatureConfig`; the network is loaded once and
    runs on `runtime` (backends.py: OpenVINO by default where installed, torch the reference)."""

    def __init__(self, config: FeatureConfig, runtime: str | None = None) -> None:
        self.config = config
        self.runtime = runtime or default_runtime()
        retain_freed_memory()  # every process that runs a network: server, CLI, benchmarks
        spec = get_spec(config.backbone)
        graph = replace(config, source_size=None)  # the box only sets the canvas
        self.embed_function = _features(graph, config.canvas, self.runtime)
        self.fill = tuple(int(round(m * 255)) for m in spec.mean)  # padding: zero once normalised
        self._mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0

    def place(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """One RGB uint8 image of any size -> (canvas image, (h, w) it covers); thread-safe."""
        return place(image, self.config, self.fill)

    def normalise(self, canvases: Sequence[np.ndarray]) -> torch.Tensor:
        """Canvas images -> normalised [B, 3, H, W] tensor."""
        x = torch.from_numpy(np.stack(canvases)).permute(0, 3, 1, 2).float()
        return (x - self._mean) / self._std

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """RGB uint8 images of any size -> (normalised canvas batch, the (h, w) each image covers)."""
        placed = [self.place(img) for img in images]
        return self.normalise([c for c, _ in placed]), [hw for _, hw in placed]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> patch features [B, rows, cols, dim], float32."""
        return self.embed_function(x)

    def valid(self, placed: Sequence[tuple[int, int]]) -> np.ndarray:
        """bool [B, rows, cols]: the patch cells over image rather than padding."""
        return valid_cells(placed, self.config)

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return self.embed(self.preprocess(images)[0])


def aggregate_patches(
    maps: list[torch.Tensor],
    patch_size: int,
    feature_dim: int | None,
    layer_weighting: str = "channels",
    edge: str = "zeros",
) -> torch.Tensor:
    """Locally aware patch features: neighbourhood average, common grid, concatenated channels. `edge`:
    whether cells past the map's edge count as zeros in the average (FeatureConfig.edge)."""
    target = maps[0].shape[-2:]
    pad = patch_size // 2
    parts = []
    for m in maps:
        if patch_size > 1:
            m = F.avg_pool2d(m, patch_size, stride=1, padding=pad, count_include_pad=edge == "zeros")
        if m.shape[-2:] != target:
            m = F.interpolate(m, size=target, mode="bilinear", align_corners=False)
        if feature_dim is not None:
            b, c, h, w = m.shape
            per_layer = feature_dim // len(maps)
            flat = m.permute(0, 2, 3, 1).reshape(-1, 1, c)
            m = F.adaptive_avg_pool1d(flat, per_layer).reshape(b, h, w, per_layer).permute(0, 3, 1, 2)
        if layer_weighting == "equal":
            m = m / float(np.sqrt(m.shape[1]))
        parts.append(m)
    return torch.cat(parts, dim=1).permute(0, 2, 3, 1).contiguous()


def unfold_patches(maps: list[torch.Tensor], patch_size: int, feature_dim: int) -> torch.Tensor:
    """The official PatchCore embedding: each layer's zero-padded patch_size x patch_size patches flattened
    (channel-major) and average-pooled to `feature_dim` values, deeper layers' patches bilinearly resized to
    the first layer's grid first, then the layers' vectors concatenated and average-pooled to `feature_dim`.
    Upsampling each (channel, offset) map of the unfolded patches is what the official code does to its
    patch tensor; both operations are linear per map, so the order of the reshapes does not change a value
    beyond float rounding, which the per-map resize keeps bit for bit the official code's."""
    target = maps[0].shape[-2:]
    parts = []
    for m in maps:
        b, c, h, w = m.shape
        patches = F.unfold(m, kernel_size=patch_size, padding=patch_size // 2).reshape(b, -1, h, w)
        if (h, w) != target:  # each map resized as a one-channel image, as the official code does:
            # resized as channels of one image, torch's bilinear kernel rounds differently (1 ulp)
            single = patches.reshape(-1, 1, h, w)
            patches = F.interpolate(single, size=target, mode="bilinear", align_corners=False).reshape(
                b, -1, *target
            )
        flat = patches.permute(0, 2, 3, 1).reshape(-1, 1, c * patch_size * patch_size)
        parts.append(F.adaptive_avg_pool1d(flat, feature_dim))
    stacked = torch.cat(parts, dim=2)  # [B*H*W, 1, layers * feature_dim]
    out = F.adaptive_avg_pool1d(stacked, feature_dim)
    return out.reshape(maps[0].shape[0], target[0], target[1], feature_dim).contiguous()
