"""Synthetic anomalies pasted into good images, so a configuration can be judged without a single real defect.

A configuration that ranks these images above the clean ones, and marks the pasted pixels, tends to rank real
defects well too: the idea of CutPaste (Li et al., CVPR 2021) and DRAEM (Zavrtanik et al., ICCV 2021). The
kinds cover what inspection finds: misplaced part content (cutpaste, scar), foreign texture and surface damage
(texture, noise), discoloration (stain) and cracks or scratches (line). Sizes run from a few pixels wide to a
few per cent of the image, as thin and small defects are the hard ones. Every draw is seeded.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image
from scipy.ndimage import binary_dilation, gaussian_filter

KINDS = ("cutpaste", "scar", "texture", "noise", "stain", "line")
#: Fraction of the image a blob-shaped anomaly covers, drawn log-uniformly in this range.
AREA_RANGE = (0.001, 0.02)


@cache
def _textures() -> tuple[np.ndarray, ...]:
    """Grey texture photographs shipped inside scikit-image (no download): foreign surface for `texture`."""
    from skimage import data

    return tuple(np.asarray(getattr(data, name)(), dtype=np.uint8) for name in ("brick", "grass", "gravel"))


def _area(rng: np.random.Generator) -> float:
    lo, hi = np.log(AREA_RANGE[0]), np.log(AREA_RANGE[1])
    return float(np.exp(rng.uniform(lo, hi)))


def blob_mask(shape: tuple[int, int], rng: np.random.Generator, area: float) -> np.ndarray:
    """An irregular connected-looking region of about `area` of the image, away from the border."""
    h, w = shape
    field = gaussian_filter(rng.standard_normal((h, w)), sigma=max(h, w) / 24)
    field /= field.std() + 1e-8
    cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
    yy, xx = np.mgrid[:h, :w]
    falloff = np.sqrt(((yy - cy) / h) ** 2 + ((xx - cx) / w) ** 2) * 12.0
    score = field - falloff
    return score > np.quantile(score, 1.0 - area)


def _rect(shape: tuple[int, int], rng: np.random.Generator, area: float) -> tuple[int, int, int, int]:
    """(y, x, height, width) of a random rectangle of about `area` of the image."""
    h, w = shape
    aspect = float(np.exp(rng.uniform(np.log(0.3), np.log(3.3))))
    ph = int(np.clip(round(np.sqrt(area * h * w / aspect)), 2, h - 2))
    pw = int(np.clip(round(np.sqrt(area * h * w * aspect)), 2, w - 2))
    return int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw)), ph, pw


def _jitter(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness/contrast change, a flip and a quarter turn: pasted content that does not fit in place."""
    p = patch.astype(np.float32)
    p = (p - p.mean()) * rng.uniform(0.7, 1.3) + p.mean() + rng.uniform(-40, 40)
    if rng.random() < 0.5:
        p = p[:, ::-1]
    return np.clip(p, 0, 255)


def _cutpaste(img: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y, x, ph, pw = _rect(img.shape[:2], rng, _area(rng))
    sy, sx = int(rng.integers(0, img.shape[0] - ph)), int(rng.integers(0, img.shape[1] - pw))
    out = img.astype(np.float32)
    out[y : y + ph, x : x + pw] = _jitter(donor[sy : sy + ph, sx : sx + pw], rng)
    mask = np.zeros(img.shape[:2], bool)
    mask[y : y + ph, x : x + pw] = True
    return out, mask


def _scar(img: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin, long, rotated strip of other content (CutPaste-scar)."""
    h, w = img.shape[:2]
    side = min(h, w)
    width = int(rng.integers(2, max(3, side // 40) + 1))
    length = int(rng.uniform(0.08, 0.3) * side)
    strip = np.zeros((h, w), np.uint8)
    cy, cx = int(rng.integers(length // 2, h - length // 2)), int(rng.integers(length // 2, w - length // 2))
    strip[cy - width // 2 : cy - width // 2 + width, cx - length // 2 : cx + length // 2] = 255
    angle = float(rng.uniform(0, 180))
    mask = np.asarray(Image.fromarray(strip).rotate(angle, resample=Image.NEAREST, center=(cx, cy))) > 0
    shifted = np.roll(donor, (int(rng.integers(h)), int(rng.integers(w))), axis=(0, 1))
    out = img.astype(np.float32)
    out[mask] = _jitter(shifted, rng)[mask]
    return out, mask


def _texture(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A foreign texture blended into a blob (DRAEM's anomaly source, from textures shipped offline)."""
    h, w = img.shape[:2]
    tex = _textures()[int(rng.integers(len(_textures())))]
    scale = rng.uniform(0.5, 1.5)
    tex = np.asarray(Image.fromarray(tex).resize((max(8, int(512 * scale)),) * 2, Image.BILINEAR))
    reps = (-(-h // tex.shape[0]), -(-w // tex.shape[1]))
    tex = np.tile(tex, reps)[:h, :w].astype(np.float32)
    mask = blob_mask((h, w), rng, _area(rng))
    beta = rng.uniform(0.25, 0.7)
    out = img.astype(np.float32)
    out[mask] = (1 - beta) * out[mask] + beta * tex[mask][:, None]
    return out, mask


def _noise(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = blob_mask(img.shape[:2], rng, _area(rng))
    out = img.astype(np.float32)
    out[mask] += rng.normal(0, rng.uniform(12, 35), size=(int(mask.sum()), 1))
    return out, mask


def _stain(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A darker or brighter area with soft edges (discoloration, a dark cell region)."""
    mask = blob_mask(img.shape[:2], rng, _area(rng))
    soft = gaussian_filter(mask.astype(np.float32), sigma=1.5)[:, :, None]
    factor = rng.uniform(0.6, 0.85) if rng.random() < 0.7 else rng.uniform(1.15, 1.4)
    out = img.astype(np.float32) * (1 - soft + soft * factor)
    return out, soft[:, :, 0] > 0.5


def _line(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin crack or scratch: a wandering line one to a few pixels wide, dark or bright."""
    h, w = img.shape[:2]
    steps = int(rng.uniform(0.1, 0.4) * max(h, w))
    y, x = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    heading = rng.uniform(0, 2 * np.pi)
    mask = np.zeros((h, w), bool)
    for _ in range(steps):
        heading += rng.normal(0, 0.15)
        y, x = y + np.sin(heading), x + np.cos(heading)
        if not (0 <= y < h and 0 <= x < w):
            break
        mask[int(y), int(x)] = True
    width = int(rng.integers(1, max(2, min(h, w) // 200) + 1))
    if width > 1:
        mask = binary_dilation(mask, iterations=width - 1)
    out = img.astype(np.float32)
    out[mask] *= rng.uniform(0.3, 0.7) if rng.random() < 0.7 else rng.uniform(1.3, 1.8)
    return out, mask


def synthesize(
    image: np.ndarray, kind: str, rng: np.random.Generator, donor: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(anomalous copy of `image` as HxWx3 uint8, bool mask of the changed pixels). `donor` (another good
    image, same size) supplies the pasted content of cutpaste and scar; the image itself when absent."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic anomaly '{kind}' (choose from {', '.join(KINDS)})")
    donor = image if donor is None else donor
    if kind == "cutpaste":
        out, mask = _cutpaste(image, donor, rng)
    elif kind == "scar":
        out, mask = _scar(image, donor, rng)
    else:
        out, mask = {"texture": _texture, "noise": _noise, "stain": _stain, "line": _line}[kind](image, rng)
    return np.clip(out, 0, 255).astype(np.uint8), mask
