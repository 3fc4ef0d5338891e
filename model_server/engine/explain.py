"""Why the model says so: for each region above the threshold, the good training patch nearest to the
region's peak, the one whose distance is the peak patch's score, with a crop of the training image it came
from (provenance.py).

Only for flagged images and on request: the nearest bank patch of every test patch is found by the scoring
search anyway (ClassModel.patch_search), so an explanation costs a lookup, a thumbnail decode and a small PNG
per region, and nothing for images that are not flagged.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from model_server.engine.class_model import ClassModel
from model_server.engine.heatmap import components
from model_server.engine.provenance import UNKNOWN, decode_thumbnail

#: Regions explained per image, highest peak first (the rest are listed in `regions` only).
MAX_EXPLAINED_REGIONS = 5
#: Cells either side of the peak cell that a crop shows: a patch feature sees its 3x3 neighbourhood, one
#: more cell gives the eye some context (5x5 cells: 40 px of a 384 px canvas at stride 8).
CONTEXT_CELLS = 2
#: Why an explanation is missing, for the response's `explanations_note`.
NO_PROVENANCE = (
    "this model's artifact has no bank provenance (trained before it): retrain to get explanations"
)


def _box(y0: float, y1: float, x0: float, x1: float) -> dict:
    return {"x": int(x0), "y": int(y0), "width": max(1, round(x1 - x0)), "height": max(1, round(y1 - y0))}


def cell_window(
    row: int, col: int, grid: tuple[int, int], canvas: tuple[int, int], placed: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) in canvas pixels: CONTEXT_CELLS around a cell, within the placed image."""
    rows, cols = grid
    ch, cw = canvas[0] / rows, canvas[1] / cols
    r0, r1 = max(0, row - CONTEXT_CELLS), min(rows, row + CONTEXT_CELLS + 1)
    c0, c1 = max(0, col - CONTEXT_CELLS), min(cols, col + CONTEXT_CELLS + 1)
    y0, x0 = min(round(r0 * ch), placed[0] - 1), min(round(c0 * cw), placed[1] - 1)
    return y0, max(y0 + 1, min(round(r1 * ch), placed[0])), x0, max(x0 + 1, min(round(c1 * cw), placed[1]))


def png_base64(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def nearest_good(model: ClassModel, bank_index: int, distance: float) -> dict:
    """The bank patch `bank_index`: its training image, cell, box in that image and a crop of it."""
    cfg = model.config.features
    provenance = model.provenance
    if provenance is None:  # explain() asks only models that have it
        raise ValueError("the model keeps no bank provenance")
    image, row, col = (int(v) for v in provenance.patches[bank_index])
    out: dict = {"bank_index": bank_index, "distance": round(float(distance), 5), "row": row, "col": col}
    if image == UNKNOWN:
        return {**out, "image_id": None, "box": None, "crop_png_base64": None}
    source = provenance.images[image]
    y0, y1, x0, x1 = cell_window(row, col, cfg.grid, cfg.canvas, source.placed)
    sy, sx = source.height / source.placed[0], source.width / source.placed[1]
    out.update(image_id=source.id, box=_box(y0 * sy, y1 * sy, x0 * sx, x1 * sx), crop_png_base64=None)
    if source.thumbnail is not None:
        ty, tx = source.thumb_size[0] / source.placed[0], source.thumb_size[1] / source.placed[1]
        thumb = decode_thumbnail(source.thumbnail)
        crop = thumb[
            int(y0 * ty) : max(int(y0 * ty) + 1, round(y1 * ty)),
            int(x0 * tx) : max(int(x0 * tx) + 1, round(x1 * tx)),
        ]
        out.update(crop_png_base64=png_base64(crop), crop_width=crop.shape[1], crop_height=crop.shape[0])
    return out


def explain_regions(
    model: ClassModel,
    amap: np.ndarray,
    patch_scores: np.ndarray,
    nearest: np.ndarray,
    image_shape: tuple[int, int],
) -> list[dict]:
    """One explanation per region above the threshold (at most MAX_EXPLAINED_REGIONS, highest peak first):
    `amap` is the image's anomaly map over its placed part of the canvas, `patch_scores` and `nearest` its
    grid's scores and nearest bank patches. Empty when the model has no provenance."""
    if model.provenance is None:
        return []
    cfg = model.config.features
    (rows, cols), (canvas_h, canvas_w) = cfg.grid, cfg.canvas
    placed = amap.shape[:2]
    sy, sx = image_shape[0] / placed[0], image_shape[1] / placed[1]
    out = []
    found = components(amap, model.calibration.threshold)
    for i, (_, _, peak, (py, px)) in enumerate(found[:MAX_EXPLAINED_REGIONS]):
        row, col = py * rows // canvas_h, px * cols // canvas_w
        y0, y1, x0, x1 = cell_window(row, col, cfg.grid, cfg.canvas, placed)
        out.append(
            {
                "region": i,
                "peak": {"x": int(px * sx), "y": int(py * sy)},
                "peak_score": round(peak, 5),
                "row": int(row),
                "col": int(col),
                "patch_box": _box(y0 * sy, y1 * sy, x0 * sx, x1 * sx),
                "nearest_good": nearest_good(model, int(nearest[row, col]), float(patch_scores[row, col])),
            }
        )
    return out
