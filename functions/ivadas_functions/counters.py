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
