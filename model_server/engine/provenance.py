"""Where each memory-bank patch came from, so a flagged region can be shown beside the good patch the model
compared it with (explain.py).

Per bank patch: the index of its training image and its cell (row, col) in the patch grid. Per training image:
its id (the file name relative to the class folder, or "review:<id>" for a reviewed-good image the feedback
path added), its size in source pixels and, when it contributes a bank patch, a thumbnail: a JPEG of the
image as the network saw it (placed on the canvas, geometry.py), so a crop can be shown without the training
data.

Thumbnails are bounded per class by MAX_THUMBNAIL_BYTES: when the JPEGs at canvas scale exceed it, every
thumbnail is halved (down to MIN_THUMBNAIL_SCALE); if they still exceed it, the images with the most bank
patches keep theirs, in that order, until the cap is reached, and the others have none (their patches still
name the image and the position, without a crop).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

#: Cap on one class's thumbnail bytes in the artifact (module docstring for the policy).
MAX_THUMBNAIL_BYTES = 8 * 1024 * 1024
#: The smallest thumbnail scale (of the canvas) the cap may shrink to before thumbnails are dropped.
MIN_THUMBNAIL_SCALE = 0.25
JPEG_QUALITY = 85
#: The image id of a bank patch whose source is not known (e.g. added to a bank that had no provenance).
UNKNOWN = -1


@dataclass
class SourceImage:
    """One training image a bank patch may come from."""

    id: str
    height: int  # source pixels
    width: int
    thumbnail: bytes | None = None  # JPEG of the placed image, `thumb_height` x `thumb_width`
    #: the (h, w) the image covers on the canvas: a thumbnail's scale is thumb / placed
    placed: tuple[int, int] = (0, 0)
    thumb_size: tuple[int, int] = (0, 0)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "height": self.height,
            "width": self.width,
            "placed": list(self.placed),
            "thumb_size": list(self.thumb_size) if self.thumbnail is not None else None,
        }


@dataclass
class Provenance:
    """patches [M, 3] int32: (image index into `images`, row, col) of every bank patch, in bank order."""

    patches: np.ndarray
    images: list[SourceImage] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.patches = np.asarray(self.patches, dtype=np.int32)
        if self.patches.ndim != 2 or self.patches.shape[1] != 3:
            raise ValueError(f"provenance must be [patches, 3], got {self.patches.shape}")
        index = self.patches[:, 0]
        if ((index < UNKNOWN) | (index >= len(self.images))).any():
            raise ValueError(f"provenance names images outside the {len(self.images)} it lists")

    def extended(self, patches: np.ndarray, images: list[SourceImage]) -> Provenance:
        """This provenance with more bank patches appended, from `images` (their indices local to it)."""
        added = np.asarray(patches, dtype=np.int32).reshape(-1, 3).copy()
        added[:, 0] += len(self.images)
        return Provenance(np.concatenate([self.patches, added]), [*self.images, *images])

    def thumbnail_bytes(self) -> int:
        return sum(len(i.thumbnail) for i in self.images if i.thumbnail is not None)


def jpeg(rgb: np.ndarray, scale: float = 1.0) -> tuple[bytes, tuple[int, int]]:
    """(JPEG bytes, (h, w)) of an HxWx3 uint8 image, scaled by `scale`."""
    img = Image.fromarray(rgb)
    if scale != 1.0:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), (img.height, img.width)


def decode_thumbnail(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def bounded(images: list[SourceImage], patches: np.ndarray, cap: int = MAX_THUMBNAIL_BYTES) -> None:
    """Fit the images' thumbnails within `cap` bytes, in place (the module docstring's policy)."""
    have = [i for i in images if i.thumbnail is not None]

    def total() -> int:
        return sum(len(i.thumbnail or b"") for i in have)

    def scale() -> float:  # of the canvas, as the thumbnails stand
        return min(i.thumb_size[0] / max(i.placed[0], 1) for i in have) if have else 1.0

    while total() > cap and scale() / 2 >= MIN_THUMBNAIL_SCALE * (1 - 1e-9):
        for img in have:
            img.thumbnail, img.thumb_size = jpeg(decode_thumbnail(img.thumbnail or b""), 0.5)
    if total() <= cap:
        return
    counts = np.bincount(patches[:, 0][patches[:, 0] >= 0], minlength=len(images))
    used = 0
    for k in np.argsort(-counts, kind="stable"):
        img = images[k]
        if img.thumbnail is None:
            continue
        if used + len(img.thumbnail) > cap:
            img.thumbnail, img.thumb_size = None, (0, 0)
        else:
            used += len(img.thumbnail)
