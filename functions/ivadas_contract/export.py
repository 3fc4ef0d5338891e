"""The CSV export of results: its columns, one place for the API, the UI's link and the tests."""

from __future__ import annotations

import json
from typing import Any


def _verdict(item: dict) -> str:
    if item.get("status") != "INSPECTED":
        return ""
    return "defect" if item.get("is_anomaly") else "good"


#: (column, how to read it from a result item): everything an operator needs to find the part, the image and
#: heatmap, what the model said and what a reviewer said.
COLUMNS: tuple[tuple[str, Any], ...] = (
    ("inspection_id", "inspection_id"),
    ("created_at", "created_at"),
    ("class_name", "class_name"),
    ("line", "line"),
    ("status", "status"),
    ("verdict", _verdict),
    ("reason", "reason"),
    ("anomaly_score", "anomaly_score"),
    ("normalized_score", "normalized_score"),
    ("threshold", "threshold"),
    ("regions", lambda i: len(i.get("regions") or [])),
    ("regions_json", lambda i: json.dumps(i["regions"], separators=(",", ":")) if i.get("regions") else ""),
    ("model", "model"),
    ("model_version", "model_version"),
    ("endpoint_latency_ms", "endpoint_latency_ms"),
    ("image_bucket", "bucket"),
    ("image_key", "key"),
    ("heatmap_key", "heatmap_key"),
    ("result_key", "result_key"),
    ("size_bytes", "size_bytes"),
    ("image_width", "image_width"),
    ("image_height", "image_height"),
    ("candidate_model_version", lambda i: (i.get("shadow") or {}).get("model_version")),
    ("candidate_agrees", "shadow_agrees"),
    ("review_verdict", lambda i: (i.get("review") or {}).get("verdict")),
    ("review_defect_type", lambda i: (i.get("review") or {}).get("defect_type")),
    ("review_note", lambda i: (i.get("review") or {}).get("note")),
    ("reviewer", lambda i: (i.get("review") or {}).get("reviewer")),
    ("reviewer_verified", lambda i: (i.get("review") or {}).get("reviewer_verified")),
    ("reviewed_at", lambda i: (i.get("review") or {}).get("reviewed_at")),
    ("review_agrees", lambda i: (i.get("review") or {}).get("agrees")),
)
HEADER: tuple[str, ...] = tuple(name for name, _ in COLUMNS)
#: Where exports are written in the results bucket (a lifecycle rule expires them).
PREFIX = "exports/"
EXPIRE_DAYS = 7


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    # a cell a spreadsheet would run as a formula is quoted as text (CSV injection)
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def row(item: dict) -> list[str]:
    return [_text(get(item) if callable(get) else item.get(get)) for _, get in COLUMNS]
