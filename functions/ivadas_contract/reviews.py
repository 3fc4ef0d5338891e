"""Operator reviews of verdicts. A review never changes the model's fields of a result: it is an item of its
own in the reviews table (every review kept, so a correction or two reviewers at once lose nothing), and the
newest one is copied onto the result item as `review` (for filtering and display).

Who reviewed comes from the verified sign-in (ivadas_functions.identity), never from the body: `reviewer`
(the username), `reviewer_sub`, `reviewer_email` and `reviewer_verified: true`. A `reviewer` in the body is
ignored. Reviews stored before sign-in existed keep their `reviewer_verified: false`.
"""

from __future__ import annotations

import uuid
from typing import Any

from ivadas_contract.results_table import hash_range_schema

VERDICTS = ("good", "defect")
PARTITION_KEY = "inspection_id"
SORT_KEY = "review_id"  # "<reviewed_at>#<random>": newest last, unique even within one millisecond
SCHEMA: dict[str, Any] = hash_range_schema(PARTITION_KEY, SORT_KEY)
MAX_TEXT = {"defect_type": 64, "note": 1000}


def review_record(result: dict, body: Any, reviewer: dict[str, Any], reviewed_at: str) -> dict[str, Any]:
    """The review of `result` the request body asks for, made by `reviewer` (Identity.as_reviewer());
    ValueError (the caller's mistake) otherwise."""
    if not isinstance(body, dict):
        raise ValueError('the body must be {"verdict": "good" | "defect", "defect_type": ..., "note": ...}')
    verdict = body.get("verdict")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
    texts = {}
    for key, limit in MAX_TEXT.items():
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise ValueError(f"{key} must be text of at most {limit} characters")
        texts[key] = value.strip() if isinstance(value, str) else None
    model_defect = bool(result.get("is_anomaly"))
    return {
        PARTITION_KEY: result["inspection_id"],
        SORT_KEY: f"{reviewed_at}#{uuid.uuid4().hex[:8]}",
        "verdict": verdict,
        **{k: v for k, v in texts.items() if v},
        **reviewer,
        "reviewed_at": reviewed_at,
        "model_verdict": "defect" if model_defect else "good",
        "model_version": result.get("model_version"),
        "agrees": (verdict == "defect") == model_defect,
    }


def withdrawal(withdrawer: dict[str, Any], withdrawn_at: str) -> dict[str, Any]:
    """The fields a withdrawal adds to the review it takes back: the review stays in the history, marked, so
    who decided what, and who took it back, is never lost. `withdrawer` is Identity.as_reviewer()."""
    fields = {"withdrawn_at": withdrawn_at, "withdrawn_by": withdrawer.get("reviewer"),
              "withdrawn_by_sub": withdrawer.get("reviewer_sub")}  # fmt: skip
    return {k: v for k, v in fields.items() if v}


def standing(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest review of a result's history that is not withdrawn (what the result shows), or None."""
    live = [r for r in history if not r.get("withdrawn_at")]
    return max(live, key=lambda r: r[SORT_KEY]) if live else None


def made_by(review: dict[str, Any], caller: dict[str, Any]) -> bool:
    """Whether `caller` (Identity.as_reviewer()) made `review`: the same sign-in subject, or the same username
    for a review stored before subjects were kept."""
    if review.get("reviewer_sub") and caller.get("reviewer_sub"):
        return review["reviewer_sub"] == caller["reviewer_sub"]
    return bool(review.get("reviewer")) and review.get("reviewer") == caller.get("reviewer")
