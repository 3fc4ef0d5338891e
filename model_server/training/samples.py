"""Samples of a data set: one image (loaded lazily) with its label and defect mask, and a class's train/test
split. Every data set (MVTec layout folders, the ELPV demo) yields these."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ivadas_contract.limits import MAX_PIXELS
from model_server.engine.images import GREY_16BIT_MODES, open_image, read_image
from model_server.errors import DataError


def read_mask(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a ground-truth mask as a bool HxW array (any nonzero value is defect), at its stored size."""
    img = open_image(path, None, max_pixels)
    try:
        if img.mode in ("1", "L", "I", "F") or img.mode in GREY_16BIT_MODES:
            return np.asarray(img) != 0
        if img.mode in ("P", "PA"):
            img = img.convert("RGBA")
        return np.asarray(img.convert("RGB")).any(axis=2)
    finally:
        img.close()


def _display_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image as `read_image` returns it, from the header only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    with img:
        width, height = img.size
        if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientations that swap the axes
            width, height = height, width
    return height, width


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.resize((width, height), Image.Resampling.NEAREST)) > 0


@dataclass(frozen=True)
class Sample:
    """One image of a data set, loaded lazily so listing a data set stays cheap.

    `name` is unique within its class (for folders: the path relative to the class folder, e.g.
    "test/broken_large/000.png"); it survives moving a sample from test to train. `loader` serves images that
    have no file; it is left out of equality and repr.
    """

    name: str
    label: int  # 0 good, 1 anomalous
    defect_type: str  # "good" for good samples
    path: Path | None = None
    mask_path: Path | None = None
    loader: Callable[[], np.ndarray] | None = field(default=None, compare=False, repr=False)

    def load_rgb(self) -> np.ndarray:
        """The image as HxWx3 uint8 RGB."""
        if self.path is not None:
            return read_image(self.path)
        if self.loader is not None:
            return self.loader()
        raise DataError(f"sample {self.name} has neither a file nor a loader")

    def size(self) -> tuple[int, int]:
        """(height, width) as `load_rgb` returns it, from the file header when there is a file."""
        if self.path is not None:
            try:
                return _display_size(self.path)
            except Exception:  # let read_image produce the proper error message  # nosec B110
                pass
        return tuple(self.load_rgb().shape[:2])  # type: ignore[return-value]

    def load_mask(self, image_shape: tuple[int, int] | None = None) -> np.ndarray | None:
        """The defect mask as bool HxW at the image's size, or None when there is no mask file.

        None on a good sample means all zeros. A mask stored at another size than its image is resized
        (nearest neighbour) to the image size; pass `image_shape` (H, W) when the image is already loaded to
        save reading its header.
        """
        if self.mask_path is None:
            return None
        mask = read_mask(self.mask_path)
        if image_shape is None:
            image_shape = self.size()
        shape = (int(image_shape[0]), int(image_shape[1]))
        if mask.shape != shape:
            mask = _resize_mask(mask, shape)
        return mask


def source_box(samples: list[Sample]) -> tuple[int, int]:
    """(H, W) that holds every one of the samples; the class scale comes from it (engine/geometry.py)."""
    sizes = [s.size() for s in samples]
    return max(h for h, _ in sizes), max(w for _, w in sizes)


@dataclass
class ClassSplit:
    """Train and test samples of one product class. `source` says where they came from (for model cards)."""

    class_name: str
    train: list[Sample]
    test: list[Sample]
    source: str

    @property
    def has_masks(self) -> bool:
        """True when pixel-level metrics can be computed: some anomalous test sample has a mask."""
        return any(s.label == 1 and s.mask_path is not None for s in self.test)
