"""Patch features, as the official PatchCore code makes them: mid-level feature maps of a frozen ImageNet CNN
(strides 8 and 16), each averaged over its 3x3 neighbourhood so a patch feature sees its surroundings, the
deeper map upsampled to the shallower grid, all concatenated into one vector per patch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from model_server.engine.backbones import create_feature_extractor, get_spec
from model_server.engine.config import FeatureConfig
from model_server.engine.runtime import retain_freed_memory


class FeatureExtractor:
    """Image -> patch features [B, rows, cols, dim] for one `FeatureConfig`; the network is loaded once."""

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        retain_freed_memory()  # every process that runs a network: server, CLI, benchmarks
        spec = get_spec(config.backbone)
        # channels_last: measured 1.3-2x faster on this CPU's oneDNN convolutions at batch 1 (README).
        self.network = create_feature_extractor(config.backbone, config.layers).to(
            memory_format=torch.channels_last
        )
        self._mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 images of any size -> normalised [B, 3, S, S] tensor (whole image, no crop)."""
        size = self.config.input_size
        batch = np.stack([resize_rgb(img, size) for img in images])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        return (x - self._mean) / self._std

    @torch.inference_mode()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> patch features [B, rows, cols, dim], float32."""
        maps = self.network(x.contiguous(memory_format=torch.channels_last))
        return aggregate_patches(list(maps), self.config.patch_size, self.config.feature_dim)

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return self.embed(self.preprocess(images))


def resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an HxWx3 uint8 image to size x size (bilinear with antialiasing, as PIL does)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def aggregate_patches(maps: list[torch.Tensor], patch_size: int, feature_dim: int | None) -> torch.Tensor:
    """Locally aware patch features: neighbourhood average, common grid, concatenated channels."""
    target = maps[0].shape[-2:]
    pad = patch_size // 2
    parts = []
    for m in maps:
        if patch_size > 1:
            m = F.avg_pool2d(m, patch_size, stride=1, padding=pad, count_include_pad=False)
        if m.shape[-2:] != target:
            m = F.interpolate(m, size=target, mode="bilinear", align_corners=False)
        if feature_dim is not None:
            b, c, h, w = m.shape
            per_layer = feature_dim // len(maps)
            flat = m.permute(0, 2, 3, 1).reshape(-1, 1, c)
            m = F.adaptive_avg_pool1d(flat, per_layer).reshape(b, h, w, per_layer).permute(0, 3, 1, 2)
        parts.append(m)
    return torch.cat(parts, dim=1).permute(0, 2, 3, 1).contiguous()
