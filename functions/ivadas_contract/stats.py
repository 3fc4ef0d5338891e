"""The stats table: counters kept as results are written, one item per class, hour, line and model, so the
dashboard's figures (images inspected, anomaly rate, rejects by reason, endpoint latency percentiles,
candidate agreement) come from a few hundred small items whatever the number of results.

Latency is counted in fixed buckets; a percentile is the upper edge of the bucket where it falls.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from ivadas_contract.results_table import hash_range_schema

PARTITION_KEY = "class_name"
SORT_KEY = "slot"  # "<hour>#<line>#<model>", hour as "2026-12-02T04"
TTL_ATTRIBUTE = "expires_at"
#: CreateTable arguments besides the name and billing (template.yaml's StatsTable is held to them).
SCHEMA: dict[str, Any] = hash_range_schema(PARTITION_KEY, SORT_KEY)
#: Upper edges (ms) of the latency buckets; the last bucket is everything slower.
#: The slot of a class's item that lists the defect types its reviews have used (a string set, no TTL). It
#: sorts after every "<hour>#..." slot, so the readers of hour ranges never see it.
DEFECT_TYPES_SLOT = "defect-types"
DEFECT_TYPES_ATTRIBUTE = "defect_types"
LATENCY_EDGES_MS = (25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800)
NO_LINE = "-"
#: Reject reasons, by the words their messages carry (ivadas_functions.inspector and the model server).
REASONS = (
    ("no_class", ("no class",)),
    ("empty", ("empty file",)),
    ("too_large", ("byte limit", "too large", "pixels")),
    ("unknown_class", ("is not in this",)),
    ("gone", ("no longer exists",)),
    ("not_an_image", ("not an image", "cannot decode", "cannot be decoded", "image")),
)


def hour_of(iso: str) -> str:
    return iso[:13]


def slot(hour: str, line: str | None, model: str) -> str:
    return f"{hour}#{line or NO_LINE}#{model}"


def reason_code(reason: str) -> str:
    text = reason.lower()
    return next((code for code, words in REASONS if any(w in text for w in words)), "other")


def latency_bucket(ms: float) -> str:
    for edge in LATENCY_EDGES_MS:
        if ms <= edge:
            return f"lat_le_{edge}"
    return "lat_gt_max"


def expires_at(hour: str, retention_days: int) -> int:
    start = datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC)
    return int((start + timedelta(days=retention_days)).timestamp())


def counts_for(record: dict) -> dict[str, int]:
    """The counters one result record adds to its slot."""
    if record["status"] != "INSPECTED":
        return {"rejected": 1, f"rejected_{reason_code(record.get('reason', ''))}": 1}
    counts = {"inspected": 1, latency_bucket(record["endpoint_latency_ms"]): 1}
    if record["is_anomaly"]:
        counts["anomalies"] = 1
    return counts


def shadow_counts(fields: dict) -> dict[str, int]:
    """The counters a shadow answer (ivadas_contract.inspection.shadow_fields) adds."""
    if "shadow_agrees" not in fields:
        return {"shadow_errors": 1}
    return {"shadow_answers": 1, "shadow_agree": 1 if fields["shadow_agrees"] else 0}


def _review_tally(review: dict | None) -> dict[str, int]:
    if not review:
        return {}
    model_defect, reviewed_defect = review["model_verdict"] == "defect", review["verdict"] == "defect"
    return {
        "reviewed": 1,
        "review_agree": int(model_defect == reviewed_defect),
        "false_alarms": int(model_defect and not reviewed_defect),
        "escapes": int(reviewed_defect and not model_defect),
    }


def review_counts(new: dict | None, old: dict | None) -> dict[str, int]:
    """What a review shown on a result changes in the result's slot when it replaces `old` (None for the
    first): a corrected review moves the counts instead of adding a second one; a withdrawn one (`new` None,
    or the review before it) takes its counts back."""
    after, before = _review_tally(new), _review_tally(old)
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after.keys() | before.keys()}
    return {k: v for k, v in sorted(diff.items()) if v}


def _percentile(buckets: dict[str, int], q: float) -> float | None:
    total = sum(buckets.values())
    if not total:
        return None
    seen = 0
    for edge in LATENCY_EDGES_MS:
        seen += buckets.get(f"lat_le_{edge}", 0)
        if seen >= q * total:
            return float(edge)
    return float("inf")


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def summarize(items: list[dict], group_by: tuple[str, ...] = ("class_name", "line", "model")) -> dict:
    """Totals and per-group figures from stats items (numbers as int); groups by class, line and model."""
    groups: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    total: dict[str, int] = defaultdict(int)
    for item in items:
        hour, line, model = item[SORT_KEY].split("#", 2)
        key = {"class_name": item[PARTITION_KEY], "line": line, "model": model, "hour": hour}
        counters = {k: int(v) for k, v in item.items() if k not in (PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE)}
        for name, value in counters.items():
            groups[tuple(key[g] for g in group_by)][name] += value
            total[name] += value
    rows = [{**dict(zip(group_by, k, strict=True)), **_figures(v)} for k, v in sorted(groups.items())]
    return {"total": _figures(total), "groups": rows}


def _figures(c: dict[str, int]) -> dict:
    buckets = {k: v for k, v in c.items() if k.startswith("lat_")}
    return {
        "inspected": c.get("inspected", 0),
        "anomalies": c.get("anomalies", 0),
        "anomaly_rate": _rate(c.get("anomalies", 0), c.get("inspected", 0)),
        "rejected": c.get("rejected", 0),
        "rejected_by_reason": {
            k.removeprefix("rejected_"): v for k, v in sorted(c.items()) if k.startswith("rejected_") and v
        },
        "latency_ms": {f"p{int(q * 100)}": _percentile(buckets, q) for q in (0.5, 0.9, 0.99)},
        "candidate_answers": c.get("shadow_answers", 0),
        "candidate_agreement": _rate(c.get("shadow_agree", 0), c.get("shadow_answers", 0)),
        "candidate_errors": c.get("shadow_errors", 0),
        "reviewed": c.get("reviewed", 0),
        "review_agreement": _rate(c.get("review_agree", 0), c.get("reviewed", 0)),
        "false_alarms": c.get("false_alarms", 0),
        "escapes": c.get("escapes", 0),
    }


def series(items: list[dict], interval: str = "hour") -> list[dict]:
    """Inspected, anomalies, anomaly rate and rejects per hour (or day), oldest first: the Results chart."""
    width = {"hour": 13, "day": 10}[interval]
    buckets: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item in items:
        at = item[SORT_KEY].split("#", 1)[0][:width]
        for name in ("inspected", "anomalies", "rejected"):
            buckets[at][name] += int(item.get(name, 0))
    rows = [
        {"at": at, **c, "anomaly_rate": _rate(c["anomalies"], c["inspected"])}
        for at, c in sorted(buckets.items())
    ]
    return rows


def served_classes(items: list[dict]) -> set[str]:
    """The classes a model scored: those with any counter but a reject's (an inspection, a review of one). A
    reject makes no class: an image sent with a class no deployed model serves (`--class-name bottle` against
    the ELPV models) or with none at all (`unassigned`) is counted in its slot, but is not a class to filter,
    queue or compare by."""
    keys = (PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE)
    return {
        item[PARTITION_KEY] for item in items
        if any(int(v) for k, v in item.items() if k not in keys and not k.startswith("rejected"))
    }  # fmt: skip


def dimensions(items: list[dict]) -> dict[str, list[str]]:
    """The classes the models scored and the lines that have results: what the UI's filters offer."""
    lines = {item[SORT_KEY].split("#", 2)[1] for item in items} - {NO_LINE}
    return {"classes": sorted(served_classes(items)), "lines": sorted(lines)}


def rejected(items: list[dict]) -> dict[str, dict[str, int]]:
    """{reason: {class as sent: rejects}}: what was refused, counted apart from the classes (`bottle` and
    `unassigned` show up here, under `unknown_class` and `no_class`, and nowhere as a class)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item in items:
        for name, value in item.items():
            if name.startswith("rejected_") and int(value):
                out[name.removeprefix("rejected_")][item[PARTITION_KEY]] += int(value)
    return {reason: dict(sorted(by_class.items())) for reason, by_class in sorted(out.items())}


def drift_z(anomalies: int, inspected: int, ref_anomalies: int, ref_inspected: int) -> float:
    """How far an hour's anomaly rate lies from the recent rate, in binomial standard errors of that hour
    (the recent rate kept off 0 and 1 by one pseudo-count each, so a class that never had an anomaly still
    has a finite error)."""
    p = (ref_anomalies + 1) / (ref_inspected + 2)
    return (anomalies / inspected - p) / (p * (1 - p) / inspected) ** 0.5


def per_class(items: list[dict], model: str) -> dict[str, dict[str, dict[str, int]]]:
    """{class: {hour: {"inspected": n, "anomalies": k}}} of one model, every line summed."""
    out: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for item in items:
        hour, _, slot_model = item[SORT_KEY].split("#", 2)
        if slot_model != model:
            continue
        counts = out[item[PARTITION_KEY]][hour]
        counts["inspected"] += int(item.get("inspected", 0))
        counts["anomalies"] += int(item.get("anomalies", 0))
    return out
