"""Where an image lands on the network's input canvas.

A class trained with a `source_size` (the box, in source pixels, that holds every training image) is seen at
one scale: every image is resized by the same factor, keeps its aspect ratio, is placed at the canvas's top
left and the rest is padded with the normalisation mean (zero after normalising). A defect of 10 source pixels
is then the same size on the canvas in every image, and elongated parts are not squashed into a square. The
padded patches are left out of the memory bank and of every score; maps are cropped back to the image.

Without a `source_size` (artifacts from before this) every image is stretched to the square canvas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

#: Canvas sides are multiples of this (the deepest stride the backbones use).
CANVAS_MULTIPLE = 16


class Placement(Protocol):
    """What placing an image needs from a class's feature configuration (config.FeatureConfig has it; this
    module computes its canvas, so it cannot import that module)."""

    @property
    def input_size(self) -> int: ...

    @property
    def source_size(self) -> tuple[int, int] | None: ...

    @property
    def canvas(self) -> tuple[int, int]: ...

    @property
    def grid(self) -> tuple[int, int]: ...


def native_sizes(box: tuple[int, int], sizes: Sequence[int], max_upsample: float) -> tuple[int, ...]:
    """The input sizes at most `max_upsample` x the long side of `box` (enlarging adds cost, not detail);
    the smallest size stays when none fits."""
    allowed = tuple(s for s in sizes if s <= max_upsample * max(box))
    return allowed or (min(sizes),)


def _round_up(value: float) -> int:
    return max(CANVAS_MULTIPLE, int(-(-round(value, 6) // CANVAS_MULTIPLE)) * CANVAS_MULTIPLE)


def canvas_shape(input_size: int, source_size: tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) of the network input: the source box scaled so its long side is `input_size`."""
    if source_size is None:
        return input_size, input_size
    h, w = source_size
    scale = input_size / max(h, w)
    return min(input_size, _round_up(h * scale)), min(input_size, _round_up(w * scale))


def placed_shape(image_hw: tuple[int, int], config: Placement) -> tuple[int, int]:
    """(h, w) an image of `image_hw` covers on the canvas: the class's scale, shrunk further only when an
    image is larger than the training box."""
    canvas_h, canvas_w = config.canvas
    if config.source_size is None:
        return canvas_h, canvas_w
    scale = config.input_size / max(config.source_size)
    h, w = image_hw[0] * scale, image_hw[1] * scale
    shrink = min(1.0, canvas_h / h, canvas_w / w)
    return max(1, min(canvas_h, round(h * shrink))), max(1, min(canvas_w, round(w * shrink)))


def resize_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An HxWx3 uint8 image resized to (h, w), bilinear with antialiasing: torch's uint8 kernel gives PIL's
    result (within one grey level) in a sixth of the time (0.5 against 3.1 ms for 900 to 384 px here)."""
    if image.shape[:2] == tuple(shape):
        return image
    nchw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
    out = F.interpolate(nchw, size=tuple(shape), mode="bilinear", antialias=True, align_corners=False)
    return np.ascontiguousarray(out[0].permute(1, 2, 0).numpy())


def place(image: np.ndarray, config: Placement, fill: Sequence[int]) -> tuple[np.ndarray, tuple[int, int]]:
    """(canvas HxWx3 uint8 with the resized image at the top left, the (h, w) it covers)."""
    canvas_h, canvas_w = config.canvas
    h, w = placed_shape(image.shape[:2], config)
    resized = resize_to(image, (h, w))
    if (h, w) == (canvas_h, canvas_w):
        return resized, (h, w)
    canvas = np.empty((canvas_h, canvas_w, 3), dtype=np.uint8)
    canvas[:] = np.asarray(fill, dtype=np.uint8)
    canvas[:h, :w] = resized
    return canvas, (h, w)


def valid_cells(placed: Sequence[tuple[int, int]], config: Placement) -> np.ndarray:
    """bool [B, rows, cols]: patch cells that cover some of the image (not only padding)."""
    rows, cols = config.grid
    canvas_h, canvas_w = config.canvas
    out = np.zeros((len(placed), rows, cols), dtype=bool)
    for i, (h, w) in enumerate(placed):
        out[i, : -(-h * rows // canvas_h), : -(-w * cols // canvas_w)] = True
    return out


def crop(amap: np.ndarray, placed: tuple[int, int]) -> np.ndarray:
    """The part of a canvas-sized map that lies over the image."""
    return amap[: placed[0], : placed[1]]
