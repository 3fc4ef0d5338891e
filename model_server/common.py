"""Shared stages of PatchCore and SoftPatch: preprocessing, patch features, nearest-neighbour scoring, maps.

The recipe follows the official PatchCore code: mid-level feature maps of a frozen ImageNet CNN (strides 8
and 16), each averaged over its 3x3 neighbourhood so a patch feature sees its surroundings, the deeper map
upsampled to the shallower grid, all concatenated into one vector per patch. A test patch's score is its
distance to the nearest memory-bank patch (faiss, exact); the image score is the largest patch score, and the
anomaly map is the patch-score grid upsampled to the input size and smoothed with a Gaussian (sigma 4).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter

from model_server import defaults
from model_server.backbones import create_feature_extractor, feature_channels, feature_strides, get_spec

#: Gaussian smoothing of the upsampled anomaly map, in input-size pixels (official PatchCore value).
MAP_SIGMA = 4.0


def set_threads(n: int | None = None) -> int:
    """Use `n` threads (default: every core this process may run on) for torch and faiss; returns n."""
    n = n or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    return n


#: glibc mallopt parameters (malloc.h) and values that keep a forward pass's buffers in the heap.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's ceiling for this setting on 64-bit
_TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


def retain_freed_memory() -> bool:
    """Keep freed activation buffers in the process instead of handing them back to the kernel.

    A forward pass allocates and frees buffers of a few MB; by default glibc maps each with mmap and unmaps it
    on free, so the next pass page-faults them in again. Measured here: the backbone took 42 ms of CPU per
    image that way and 25 ms with the buffers kept. Idempotent; False where glibc's mallopt is absent.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
            and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
        )
    except (OSError, AttributeError):
        return False


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that decides what a patch feature is; a memory bank is only valid with the same config."""

    backbone: str = defaults.BACKBONE
    layers: tuple[int, ...] = defaults.LAYERS
    input_size: int = defaults.INPUT_SIZE
    patch_size: int = 3
    #: None keeps every channel (the backbones here are narrow); a number averages each layer's channels
    #: down to feature_dim // len(layers) as the official code's adaptive pooling does.
    feature_dim: int | None = None

    def __post_init__(self) -> None:
        get_spec(self.backbone)  # raises on an unknown backbone
        if not self.layers:
            raise ValueError("at least one backbone layer is needed")
        if self.input_size < 32 or self.input_size % 16:
            raise ValueError(f"input size must be a multiple of 16 and at least 32, got {self.input_size}")
        if self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch size must be odd and positive, got {self.patch_size}")
        if self.feature_dim is not None and self.feature_dim < len(self.layers):
            raise ValueError(
                f"feature dimension must be at least the number of layers, got {self.feature_dim}"
            )

    def to_dict(self) -> dict:
        return {**asdict(self), "layers": list(self.layers)}

    @classmethod
    def from_dict(cls, data: dict) -> FeatureConfig:
        return cls(**{**data, "layers": tuple(data["layers"])})

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch grid: the shallowest layer's resolution."""
        stride = min(feature_strides(self.backbone, self.layers))
        side = -(-self.input_size // stride)
        return side, side

    @property
    def dim(self) -> int:
        """Length of one patch feature vector."""
        if self.feature_dim is None:
            return sum(feature_channels(self.backbone, self.layers))
        return (self.feature_dim // len(self.layers)) * len(self.layers)


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


class NearestNeighbourScorer:
    """Exact L2 nearest-neighbour search over a memory bank (faiss), optionally with SoftPatch weights.

    A patch's score is the distance to its nearest bank patch; SoftPatch multiplies it by that bank patch's
    outlier weight, so a test patch that only resembles a doubtful training patch still scores high.
    """

    def __init__(self, bank: np.ndarray, weights: np.ndarray | None = None) -> None:
        bank = np.ascontiguousarray(bank, dtype=np.float32)
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"memory bank must be a non-empty 2-D array, got shape {bank.shape}")
        if weights is not None and weights.shape != (bank.shape[0],):
            raise ValueError(f"weights shape {weights.shape} does not match bank of {bank.shape[0]} patches")
        self.dim = bank.shape[1]
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)
        self.index = faiss.IndexFlatL2(self.dim)
        self.index.add(bank)

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, nearest bank index) for each row of `queries`."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        sq_dist, idx = self.index.search(queries, 1)
        dist = np.sqrt(np.maximum(sq_dist[:, 0], 0.0))
        nearest = idx[:, 0]
        if self.weights is not None:
            dist = dist * self.weights[nearest]
        return dist, nearest


def anomaly_maps(patch_scores: np.ndarray, size: int, sigma: float = MAP_SIGMA) -> np.ndarray:
    """Patch-score grids [B, rows, cols] -> smoothed maps [B, size, size] (float32)."""
    grid = torch.from_numpy(np.ascontiguousarray(patch_scores, dtype=np.float32)).unsqueeze(1)
    up = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()
    if sigma > 0:
        up = np.stack([gaussian_filter(m, sigma=sigma) for m in up])
    return up.astype(np.float32, copy=False)


def resize_map(amap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize one anomaly map to (H, W) with bilinear interpolation (for heatmaps at the image's own size)."""
    if amap.shape == tuple(shape):
        return amap
    t = torch.from_numpy(np.ascontiguousarray(amap, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0].numpy()
