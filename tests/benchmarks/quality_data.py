"""Data sets bench-quality makes from the data it has, each marked for what it is.

- bottle_crops (real defects): every MVTec bottle image cut to a random crop with sides 35-100 % of the image
  (defects kept whole, masks cut alike): the one set here whose images differ in size and aspect ratio.
- bottle_tiny (SYNTHETIC defects on real parts): the good bottle test images, each also with three tiny
  defects drawn in, specks of 3-8 px and scratches 1-2 px wide, on the bottle itself: defects far smaller
  than the real ones, for what an image score does with a defect of one or two patches. The defects are drawn
  by this module alone, never by training/synthetic.py (which the configuration search and the image head
  learn from), so nothing here rewards a method for recognising its own synthetic kinds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

#: Tiny defects per good test image in bottle_tiny.
TINY_PER_IMAGE = 3


def _crop_box(rng: np.random.Generator, side: int, need: tuple[int, int, int, int] | None) -> tuple:
    """(y, x, h, w) of a random crop with sides 35-100 % of the image holding `need` (y0, x0, y1, x1)."""
    lo = int(0.35 * side)
    y0, x0, y1, x1 = need if need else (side, side, 0, 0)
    h = int(rng.integers(max(lo, y1 - y0 if need else lo), side + 1))
    w = int(rng.integers(max(lo, x1 - x0 if need else lo), side + 1))
    y = int(rng.integers(max(0, y1 - h) if need else 0, min(side - h, y0) + 1 if need else side - h + 1))
    x = int(rng.integers(max(0, x1 - w) if need else 0, min(side - w, x0) + 1 if need else side - w + 1))
    return y, x, h, w


def make_bottle_crops(bottle: Path, root: Path) -> Path | None:
    """bottle_crops under `root` in the MVTec layout; returns `root` (None without the bottle data)."""
    out = root / "bottle_crops"
    if not bottle.is_dir():
        return None
    if (out / "done").exists():
        return root
    rng = np.random.default_rng(0)
    for img_path in sorted(bottle.glob("*/*/*.png")):
        part, kind = img_path.parts[-3], img_path.parts[-2]
        if part == "ground_truth":
            continue
        img = np.asarray(Image.open(img_path).convert("RGB"))
        mask_path = bottle / "ground_truth" / kind / f"{img_path.stem}_mask.png"
        mask = np.asarray(Image.open(mask_path)) > 0 if mask_path.exists() else None
        need = None
        if mask is not None and mask.any():
            ys, xs = np.nonzero(mask)
            need = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
        y, x, h, w = _crop_box(rng, img.shape[0], need)
        dest = out / part / kind / img_path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[y : y + h, x : x + w]).save(dest)
        if mask is not None:
            mdest = out / "ground_truth" / kind / mask_path.name
            mdest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((mask[y : y + h, x : x + w] * 255).astype(np.uint8)).save(mdest)
    (out / "done").write_text("")
    return root


def _on_part(img: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A point on the bottle: MVTec's bottles are seen from above, centred, filling a disc of about 0.43 of
    the image side around its centre (the corners are background)."""
    h, w = img.shape[:2]
    r = np.sqrt(rng.uniform(0.0, 1.0)) * 0.4 * min(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    return int(h / 2 + r * np.sin(angle)), int(w / 2 + r * np.cos(angle))


def tiny_defect(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image with one speck or scratch drawn in, its mask): a few pixels wide, darker or brighter."""
    h, w = img.shape[:2]
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    y, x = _on_part(img, rng)
    if rng.random() < 0.5:  # speck
        r = float(rng.uniform(1.5, 4.0))
        draw.ellipse([x - r, y - r * rng.uniform(0.6, 1.0), x + r, y + r], fill=255)
    else:  # scratch
        length, angle = float(rng.uniform(15, 40)), float(rng.uniform(0, np.pi))
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        draw.line([x - dx, y - dy, x + dx, y + dy], fill=255, width=int(rng.integers(1, 3)))
    mask = np.asarray(canvas) > 0
    soft = gaussian_filter(mask.astype(np.float32), 0.7)[:, :, None]
    shade = rng.uniform(0.25, 0.55) if rng.random() < 0.7 else rng.uniform(1.5, 2.0)
    out = img.astype(np.float32) * (1 - soft + soft * shade)
    return np.clip(out, 0, 255).astype(np.uint8), mask


def make_bottle_tiny(bottle: Path, root: Path) -> Path | None:
    """bottle_tiny under `root` in the MVTec layout (train: bottle's own; test: its good images and
    TINY_PER_IMAGE copies of each with one tiny synthetic defect); returns `root`."""
    out = root / "bottle_tiny"
    if not bottle.is_dir():
        return None
    if (out / "done").exists():
        return root
    shutil.rmtree(out, ignore_errors=True)  # a run stopped half way
    rng = np.random.default_rng(0)
    train = out / "train/good"
    train.mkdir(parents=True, exist_ok=True)
    for src in sorted((bottle / "train/good").glob("*.png")):
        (train / src.name).symlink_to(src.resolve())
    for sub in ("test/good", "test/tiny", "ground_truth/tiny"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for src in sorted((bottle / "test/good").glob("*.png")):
        (out / "test/good" / src.name).symlink_to(src.resolve())
        img = np.asarray(Image.open(src).convert("RGB"))
        for k in range(TINY_PER_IMAGE):
            bad, mask = tiny_defect(img, rng)
            stem = f"{src.stem}_{k}"
            Image.fromarray(bad).save(out / "test/tiny" / f"{stem}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(out / "ground_truth/tiny" / f"{stem}_mask.png")
    (out / "done").write_text("")
    return root
