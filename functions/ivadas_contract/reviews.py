"""Operator reviews of verdicts. A review never changes the model's fields of a result: it is an item of its
own in the reviews table (every review kept, so a correction or two reviewers at once lose nothing), and the
newest one is copied onto the result item as `review` (for filtering and display).

Until people sign in, the reviewer is the name the caller gives, stored with `reviewer_verified: false`.
"""

from __future__ import annotations

import uuid
from typing import Any

from ivadas_contract.results_table import hash_range_schema

VERDICTS = ("good", "defect")
PARTITION_KEY = "inspection_id"
SORT_KEY = "review_id"  # "<reviewed_at>#<random>": newest last, unique even within one millisecond
SCHEMA: dict[str, Any] = hash_range_schema(PARTITION_KEY, SORT_KEY)
MAX_TEXT = {"defect_type": 64, "note": 1000, "reviewer": 64}


def review_record(result: dict, body: Any, reviewer_verified: bool, reviewed_at: str) -> dict[str, Any]:
    """The review of `result` the request body asks for; ValueError (the caller's mistake) otherwise."""
    if not isinstance(body, dict):
        raise ValueError('the body must be {"verdict": "good" | "defect", "reviewer": "...", ...}')
    verdict = body.get("verdict")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
    texts = {}
    for key, limit in MAX_TEXT.items():
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise ValueError(f"{key} must be text of at most {limit} characters")
        texts[key] = value.strip() if isinstance(value, str) else None
    if not texts["reviewer"]:
        raise ValueError("reviewer (your name) is required until sign-in exists")
    model_defect = bool(result.get("is_anomaly"))
    return {
        PARTITION_KEY: result["inspection_id"],
        SORT_KEY: f"{reviewed_at}#{uuid.uuid4().hex[:8]}",
        "verdict": verdict,
        **{k: v for k, v in texts.items() if v},
        "reviewer_verified": reviewer_verified,
        "reviewed_at": reviewed_at,
        "model_verdict": "defect" if model_defect else "good",
        "model_version": result.get("model_version"),
        "agrees": (verdict == "defect") == model_defect,
    }
