"""The DynamoDB results table: one item per inspection, queried newest first by class (and anomalies only,
through a sparse index). template.yaml declares the table with exactly these keys and indexes (tested)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

PARTITION_KEY = "inspection_id"
BY_CLASS_INDEX = "by-class"
#: Sparse: only anomalous items carry `anomaly_class`.
ANOMALIES_INDEX = "anomalies-by-class"
#: (index, partition attribute) for a class query, all results or anomalies only.
CLASS_QUERY = {False: (BY_CLASS_INDEX, "class_name"), True: (ANOMALIES_INDEX, "anomaly_class")}
SORT_KEY = "created_at"


def _index(name: str, partition: str) -> dict:
    return {
        "IndexName": name,
        "KeySchema": [
            {"AttributeName": partition, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    }


#: CreateTable arguments (besides the name and billing): what the template's ResultsTable holds.
SCHEMA: dict[str, Any] = {
    "AttributeDefinitions": [
        {"AttributeName": name, "AttributeType": "S"}
        for name in (PARTITION_KEY, "class_name", SORT_KEY, "anomaly_class")
    ],
    "KeySchema": [{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
    "GlobalSecondaryIndexes": [_index(index, attr) for index, attr in CLASS_QUERY.values()],
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
