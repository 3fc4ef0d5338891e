"""One inspection: its id, where its image comes from (the inbox key layout), where its outputs go, and the
result record that ends it.

Every object put into the inbox ends as exactly one record, INSPECTED or REJECTED with the reason, except
folder markers (keys ending in "/"), which are not images of anything.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from ivadas_contract.limits import MAX_NAME_CHARS

INSPECTED = "INSPECTED"
REJECTED = "REJECTED"
#: class_name of a rejected object whose class could not be told (it still needs a value: by-class index key).
UNASSIGNED_CLASS = "unassigned"
#: Object metadata that names the class (and line) when the key does not follow `<line>/<class_name>/<file>`.
CLASS_METADATA = ("class-name", "class_name")
#: What a product class may be called: it travels in the endpoint call's CustomAttributes header
#: (`class_name=<name>,return_heatmap=...`), so no comma, `=`, control character or non-ASCII text.
CLASS_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9 _.+-]{{0,{MAX_NAME_CHARS - 1}}}")
CLASS_NAME_RULE = f"1-{MAX_NAME_CHARS} letters, digits, spaces or _ . + -, starting with a letter or digit"


def is_class_name(name: object) -> bool:
    return isinstance(name, str) and CLASS_NAME.fullmatch(name) is not None


LINE_METADATA = "line"


def inspection_id(bucket: str, key: str, etag: str) -> str:
    """Stable id of one object version: a redelivered message maps onto the same result."""
    return hashlib.sha256(f"{bucket}\0{key}\0{etag.strip(chr(34))}".encode()).hexdigest()[:32]


def inbox_key(line: str, class_name: str, name: str) -> str:
    """Where a camera of `line` puts an image of `class_name`: `<line>/<class_name>/<name>`."""
    return f"{line}/{class_name}/{name}"


def class_from_key(key: str) -> tuple[str | None, str | None]:
    """(line, class_name) from `<line>/<class_name>/<file>`, or (None, None) for other layouts."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] and parts[1]:
        return parts[0], parts[1]
    return None, None


def class_from_metadata(metadata: dict[str, str]) -> tuple[str | None, str | None]:
    """(line, class_name) from S3 user metadata (keys compared case-insensitively)."""
    meta = {k.lower(): v for k, v in metadata.items()}
    class_name = next((meta[k] for k in CLASS_METADATA if meta.get(k)), None)
    return meta.get(LINE_METADATA), class_name


def is_folder_marker(key: str) -> bool:
    """A key ending in "/" is what consoles create as a folder: ignored, never an inspection."""
    return key.endswith("/")


def heatmap_key(class_name: str, iid: str) -> str:
    return f"heatmaps/{class_name}/{iid}.png"


#: Explanations a stored result keeps (the model server sends at most this many, strongest first), and the
#: largest nearest-good crop kept as an object (the model server's are a few KiB; a bigger one is left out).
MAX_STORED_EXPLANATIONS = 5
MAX_CROP_BYTES = 32 * 1024


def explanation_crop_key(class_name: str, iid: str, n: int) -> str:
    """Where the nearest good patch of a result's `n`th explanation is kept: beside its heatmap, under the
    same prefix, so it lives as long (RetentionDays) and the worker's one grant covers it."""
    return f"heatmaps/{class_name}/{iid}/nearest-{n}.png"


def reviewed_image_key(class_name: str, iid: str) -> str:
    """Where a reviewed image is copied: the inbox expires its images, the reviews that teach the model
    (update-model) and the escapes that test a new version need them longer."""
    return f"reviewed/{class_name}/{iid}"


def result_key(class_name: str, iid: str) -> str:
    return f"results/{class_name}/{iid}.json"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _base(obj: dict, status: str, class_name: str, size: int | None) -> dict[str, Any]:
    return {
        "inspection_id": obj["inspection_id"],
        "status": status,
        "class_name": class_name,
        "line": obj.get("line") or None,  # an empty line is no line (index keys cannot be empty)
        "created_at": now_iso(),
        "bucket": obj["bucket"],
        "key": obj["key"],
        "etag": obj["etag"],
        "size_bytes": size,
    }


def rejected_record(obj: dict, class_name: str | None, reason: str, model: str) -> dict[str, Any]:
    """The record of an object that can never be inspected; `reason` says why, for the operator."""
    record = _base(obj, REJECTED, class_name or UNASSIGNED_CLASS, obj.get("size"))
    record.update(reason=reason, model=model)
    return record


def inspected_record(
    obj: dict, class_name: str, model: str, endpoint: str, answer: tuple[dict, float], heatmap: str | None
) -> dict[str, Any]:
    """The record of an image `model` scored: `answer` is the endpoint's result (without the heatmap bytes)
    and its latency in ms."""
    result, latency_ms = answer
    record = _base(obj, INSPECTED, class_name, obj.get("size"))
    record.update(
        model=result.get("model", model),
        model_version=result.get("model_version"),
        endpoint=endpoint,
        anomaly_score=result.get("anomaly_score"),
        normalized_score=result.get("normalized_score"),
        threshold=result.get("threshold"),
        is_anomaly=bool(result.get("is_anomaly")),
        regions=result.get("regions", []),
        image_width=result.get("image_width"),
        image_height=result.get("image_height"),
        heatmap_key=heatmap,
        explanations=result.get("explanations"),  # crops as keys (ivadas_functions.inspector); [] when good
        explanations_note=result.get("explanations_note"),
        result_key=result_key(class_name, obj["inspection_id"]),
        endpoint_latency_ms=round(latency_ms, 3),
    )
    if record["is_anomaly"]:
        record["anomaly_class"] = class_name  # only anomalies enter the sparse anomalies-by-class index
    return record


def shadow_fields(model: str, answer: tuple[dict, float] | None, baseline: dict, error: str | None) -> dict:
    """What the shadow candidate said about an image, stored beside the baseline's fields in the same item:
    its score, verdict and version (and whether it agrees), or the error that kept it from answering."""
    if answer is None:
        return {"shadow": {"model": model, "error": (error or "no answer")[:500]}}
    result, latency_ms = answer
    shadow = {
        "model": result.get("model", model),
        "model_version": result.get("model_version"),
        "anomaly_score": result.get("anomaly_score"),
        "normalized_score": result.get("normalized_score"),
        "threshold": result.get("threshold"),
        "is_anomaly": bool(result.get("is_anomaly")),
        "endpoint_latency_ms": round(latency_ms, 3),
    }
    return {"shadow": shadow, "shadow_agrees": shadow["is_anomaly"] == baseline["is_anomaly"]}
