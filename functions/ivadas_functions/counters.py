"""Counters of the stats table, added as each result is stored (one atomic ADD per result): what
`GET /stats` and `ivadas stats` read instead of the results themselves."""

from __future__ import annotations

from aws_lambda_powertools import Logger

from ivadas_contract import stats
from ivadas_functions.aws import Settings, table

logger = Logger(child=True)


def add(settings: Settings, record: dict, counts: dict[str, int]) -> None:
    """Add `counts` to the record's slot. A failure is logged, never raised: the result itself is stored, and
    retrying the message for a counter would count the result twice."""
    if not counts:
        return
    names = {f"#c{i}": name for i, name in enumerate(counts)}
    values = {f":c{i}": value for i, value in enumerate(counts.values())}
    key: dict = {}
    try:
        hour = stats.hour_of(record["created_at"])
        where = stats.slot(hour, record.get("line"), record["model"])
        key = {stats.PARTITION_KEY: record["class_name"], stats.SORT_KEY: where}
        table(settings.stats_table).update_item(
            Key=key,
            UpdateExpression="ADD "
            + ", ".join(f"{n} :c{i}" for i, n in enumerate(names))
            + " SET #ttl = if_not_exists(#ttl, :ttl)",
            ExpressionAttributeNames={**names, "#ttl": stats.TTL_ATTRIBUTE},
            ExpressionAttributeValues={**values, ":ttl": stats.expires_at(hour, settings.retention_days)},
        )
    except Exception:  # noqa: BLE001 - see above
        logger.exception("stats counters not updated", extra={"slot": key})


def remember_defect_type(settings: Settings, class_name: str, defect_type: str) -> None:
    """Add a review's defect type to the class's list (the stats table's defect-types item), which the review
    queue offers the next reviewer: types stay consistent without a fixed catalogue. Logged, never raised."""
    try:
        table(settings.stats_table).update_item(
            Key={stats.PARTITION_KEY: class_name, stats.SORT_KEY: stats.DEFECT_TYPES_SLOT},
            UpdateExpression="ADD #t :t",
            ExpressionAttributeNames={"#t": stats.DEFECT_TYPES_ATTRIBUTE},
            ExpressionAttributeValues={":t": {defect_type}},
        )
    except Exception:  # noqa: BLE001 - the review itself is stored
        logger.exception("defect type not remembered", extra={"class_name": class_name})


def defect_types(settings: Settings, class_name: str, limit: int = 100) -> list[str]:
    """The defect types the class's reviews have used, sorted (at most `limit`)."""
    item = (
        table(settings.stats_table)
        .get_item(Key={stats.PARTITION_KEY: class_name, stats.SORT_KEY: stats.DEFECT_TYPES_SLOT})
        .get("Item")
        or {}
    )
    return sorted(item.get(stats.DEFECT_TYPES_ATTRIBUTE) or [])[:limit]
