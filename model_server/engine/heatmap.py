"""What users see of an anomaly map: a colour PNG, an overlay on the image, and boxes around defects.

Colours are on the calibrated scale (normalised score: 0 typical good, 0.5 threshold, 1 clearly defective), so
the same colour means the same thing for every class and model.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage

from model_server.engine.calibration import Calibration

_LUT = (colormaps["jet"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
#: Connected regions smaller than this fraction of the image are ignored (speckle, not defects).
MIN_REGION_FRACTION = 0.0005


def colour_indices(amap: np.ndarray, calibration: Calibration) -> np.ndarray:
    """Anomaly map (raw scores) -> uint8 index into the 256-colour map (normalised scale)."""
    span = max(calibration.threshold - calibration.reference, 1e-12)  # Calibration.normalize, in float32
    scale = np.float32(127.5 / span)
    offset = np.float32(127.5 - 127.5 * calibration.threshold / span)
    return np.rint(np.clip(amap.astype(np.float32, copy=False) * scale + offset, 0.0, 255.0)).astype(np.uint8)


def colorize(amap: np.ndarray, calibration: Calibration) -> np.ndarray:
    """Anomaly map (raw scores) -> HxWx3 uint8 colours on the normalised scale."""
    return _LUT[colour_indices(amap, calibration)]


def heatmap_png(amap: np.ndarray, calibration: Calibration) -> bytes:
    """The map as a colour PNG. A palette image (the colour map is its palette): a third of the bytes to
    compress, so it encodes several times faster than RGB and renders identically."""
    img = Image.fromarray(colour_indices(amap, calibration), mode="L").convert("P")
    img.putpalette(_LUT.ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def overlay(image: np.ndarray, amap: np.ndarray, calibration: Calibration, alpha: float = 0.45) -> np.ndarray:
    """Blend the colour map over the RGB image (same HxW)."""
    colours = colorize(amap, calibration).astype(np.float32)
    return (image.astype(np.float32) * (1.0 - alpha) + colours * alpha).round().astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)  # fast: heatmaps are made per request
    return buf.getvalue()


def components(
    amap: np.ndarray, threshold: float, min_fraction: float = MIN_REGION_FRACTION
) -> list[tuple[tuple[slice, slice], int, float, tuple[int, int]]]:
    """Connected areas of the map above the threshold: (box, area in map pixels, peak value, peak (y, x) in
    map pixels) of each, highest peak first; areas under `min_fraction` of the map are left out."""
    above = amap > threshold
    if not above.any():
        return []
    labels, _ = ndimage.label(above)
    min_pixels = max(1, int(min_fraction * amap.size))
    found = []
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == i
        area = int(inside.sum())
        if area < min_pixels:
            continue
        values = np.where(inside, amap[box], -np.inf)
        py, px = np.unravel_index(int(np.argmax(values)), values.shape)
        found.append((box, area, float(values[py, px]), (int(box[0].start + py), int(box[1].start + px))))
    found.sort(key=lambda c: -c[2])
    return found


def regions(
    amap: np.ndarray,
    threshold: float,
    image_shape: tuple[int, int] | None = None,
    min_fraction: float = MIN_REGION_FRACTION,
) -> list[dict]:
    """Bounding boxes of connected areas above the threshold, highest peak first.

    Found on the (small) map, reported in pixels of an image of `image_shape` (H, W), default the map's own.
    """
    sy, sx = (
        (1.0, 1.0)
        if image_shape is None
        else (image_shape[0] / amap.shape[0], image_shape[1] / amap.shape[1])
    )
    return [
        {
            "x": int(xs.start * sx),
            "y": int(ys.start * sy),
            "width": max(1, round((xs.stop - xs.start) * sx)),
            "height": max(1, round((ys.stop - ys.start) * sy)),
            "area_fraction": round(area / amap.size, 6),
            "max_score": peak,
        }
        for (ys, xs), area, peak, _ in components(amap, threshold, min_fraction)
    ]
