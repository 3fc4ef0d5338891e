"""The DynamoDB results table: one item per inspection, and the global secondary indexes that serve every
query of the Results view newest first with no scan. template.yaml declares exactly these (tested).

A query names a scope (all classes, one class, one line, or one class on one line) and optionally anomalies
only; each of the eight combinations has an index of its own, keyed by an attribute the item carries only when
it belongs there (sparse: a good part is not in the anomaly indexes, an item without a line not in the line
ones). "All classes" is partitioned by UTC month, so a time range reads only its months (the partition written
now takes every result: about 1,000 a second at most, DynamoDB's limit per partition key). The review queue
has two more: unreviewed inspections of a class (and line), nearest the threshold first.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

PARTITION_KEY = "inspection_id"
SORT_KEY = "created_at"
#: The sort key of the review-queue indexes: |normalised score - 0.5|, the distance from the threshold.
QUEUE_RANK = "queue_rank"
#: Attributes that put an item in the review queue; removed when it is reviewed.
QUEUE_ATTRIBUTES = ("queue_class", "queue_class_line")


@dataclass(frozen=True)
class Index:
    name: str
    partition: str
    sort: str = SORT_KEY
    sort_type: str = "S"


#: (scope, anomalies only) -> the index serving it. Scope: "all", "class", "line", "class_line".
RESULT_INDEXES: dict[tuple[str, bool], Index] = {
    ("all", False): Index("by-month", "month"),
    ("class", False): Index("by-class", "class_name"),
    ("line", False): Index("by-line", "line"),
    ("class_line", False): Index("by-class-line", "class_line"),
    ("all", True): Index("anomalies-by-month", "anomaly_month"),
    ("class", True): Index("anomalies-by-class", "anomaly_class"),
    ("line", True): Index("anomalies-by-line", "anomaly_line"),
    ("class_line", True): Index("anomalies-by-class-line", "anomaly_class_line"),
}
#: line given or not -> the review-queue index of a class.
QUEUE_INDEXES: dict[bool, Index] = {
    False: Index("queue-by-class", "queue_class", QUEUE_RANK, "N"),
    True: Index("queue-by-class-line", "queue_class_line", QUEUE_RANK, "N"),
}
BY_CLASS_INDEX = RESULT_INDEXES[("class", False)].name
INDEXES: tuple[Index, ...] = (*RESULT_INDEXES.values(), *QUEUE_INDEXES.values())


def month_of(iso: str) -> str:
    return iso[:7]


def scope_of(class_name: str | None, line: str | None) -> str:
    return {(False, False): "all", (True, False): "class", (False, True): "line", (True, True): "class_line"}[
        (bool(class_name), bool(line))
    ]


def partition_value(scope: str, class_name: str | None, line: str | None, month: str | None = None) -> str:
    """The partition key value of a scope's index (`month` for the all-classes one)."""
    return {"all": month, "class": class_name, "line": line, "class_line": f"{class_name}#{line}"}[scope]


def index_keys(record: dict) -> dict[str, Any]:
    """The index attributes of a result record: the scopes it belongs to, the anomaly indexes when it is one,
    and the review queue while it is an unreviewed inspection."""
    class_name, line = record["class_name"], record.get("line")
    scopes = {"all": month_of(record[SORT_KEY]), "class": class_name}
    if line:
        scopes.update(line=line, class_line=f"{class_name}#{line}")
    keys = {RESULT_INDEXES[(s, False)].partition: v for s, v in scopes.items()}
    if record.get("is_anomaly"):
        keys.update({RESULT_INDEXES[(s, True)].partition: v for s, v in scopes.items()})
    score = record.get("normalized_score")
    if record.get("status") == "INSPECTED" and score is not None and not record.get("review"):
        keys[QUEUE_RANK] = round(abs(float(score) - 0.5), 6)
        keys[QUEUE_INDEXES[False].partition] = class_name
        if line:
            keys[QUEUE_INDEXES[True].partition] = f"{class_name}#{line}"
    return keys


def to_item(record: dict) -> dict[str, Any]:
    """The DynamoDB item of a result record: its fields and its index attributes."""
    return to_dynamo({**record, **index_keys(record)})


def _gsi(index: Index) -> dict:
    return {
        "IndexName": index.name,
        "KeySchema": [
            {"AttributeName": index.partition, "KeyType": "HASH"},
            {"AttributeName": index.sort, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    }


def _attributes() -> list[dict]:
    types = {PARTITION_KEY: "S"}
    for index in INDEXES:
        types.setdefault(index.partition, "S")
        types.setdefault(index.sort, index.sort_type)
    return [{"AttributeName": a, "AttributeType": t} for a, t in types.items()]


#: CreateTable arguments (besides the name and billing): what the template's ResultsTable holds.
SCHEMA: dict[str, Any] = {
    "AttributeDefinitions": _attributes(),
    "KeySchema": [{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
    "GlobalSecondaryIndexes": [_gsi(index) for index in INDEXES],
}


def hash_range_schema(partition: str, sort: str) -> dict[str, Any]:
    """CreateTable's key arguments of a table keyed by two string attributes (stats and reviews tables)."""
    return {
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in (partition, sort)],
        "KeySchema": [
            {"AttributeName": partition, "KeyType": "HASH"},
            {"AttributeName": sort, "KeyType": "RANGE"},
        ],
    }


def to_dynamo(value: Any) -> Any:
    """Floats become Decimal (DynamoDB rejects float); None values are dropped; containers recursively."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [to_dynamo(v) for v in value]
    return value


def from_dynamo(value: Any) -> Any:
    """Decimal back to int or float, recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo(v) for v in value]
    return value
