"""Pages of results, newest first, from the index that serves the filter (ivadas_contract.results_table): the
Results view, the CSV export and the review queue read through here.

A page is filled from as many queries as it takes (a query may stop at 1 MB, the all-classes index goes
month by month), up to a read budget; the rarer filters (reviewed, disagrees) are a filter expression on
top, so a page can come back short, and says so, with a token that goes on where it stopped.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from boto3.dynamodb.conditions import Attr, Key

from ivadas_contract.results_table import (
    PARTITION_KEY,
    QUEUE_INDEXES,
    RESULT_INDEXES,
    SORT_KEY,
    Index,
    from_dynamo,
    month_of,
    partition_value,
    scope_of,
    to_dynamo,
)

#: Queries one request may make before it returns what it has (a short page, with a token to go on).
MAX_READS = 25


def parse_time(text: str, name: str) -> str:
    """An ISO 8601 time (a date, or a time with or without a zone; no zone means UTC) in the form items store:
    `2026-12-02T07:12:40.000Z`, so it compares as text. ValueError otherwise."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 time such as 2026-12-02T07:00:00Z: {text!r}") from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _flag(q: dict, name: str) -> bool | None:
    """A documented flag (openapi/api.yaml `Flag`): absent, or exactly "true" / "false"."""
    value = q.get(name)
    if value is None:
        return None
    if value in ("true", "false"):
        return value == "true"
    raise ValueError(f"{name} must be true or false")


@dataclass(frozen=True)
class ResultFilter:
    class_name: str | None = None
    line: str | None = None
    anomalous: bool = False
    since: str | None = None
    until: str | None = None
    reviewed: bool | None = None
    disagrees: bool = False

    @classmethod
    def from_query(cls, q: dict[str, str]) -> ResultFilter:
        """The filter of `GET /results` query parameters; ValueError names a bad one."""
        since = parse_time(q["since"], "since") if "since" in q else None  # an empty one is no time either
        until = parse_time(q["until"], "until") if "until" in q else None
        if since and until and since > until:
            raise ValueError("since must not be after until")
        return cls(
            class_name=q.get("class_name") or None,
            line=q.get("line") or None,
            anomalous=bool(_flag(q, "anomalous")),
            since=since,
            until=until,
            reviewed=_flag(q, "reviewed"),
            disagrees=bool(_flag(q, "disagrees")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, False)}


@dataclass
class Plan:
    """Which index, which partitions in order, and what else a query of a filter carries."""

    index: Index
    partitions: list[str]
    key_range: Any = None
    filter: Any = None
    forward: bool = False


@dataclass
class Page:
    items: list[dict]
    next_token: str | None
    #: fewer items than asked although more may follow (the read budget ran out on filtered-out items)
    short: bool = False
    reads: int = 0
    extra: dict = field(default_factory=dict)


#: No result predates this month: a range that starts earlier walks no empty months before it (a start in
#: year 368 was 20,000 queries, and the request ran out of time on them).
FIRST_MONTH = "2020-01"


def _months(since: str | None, until: str | None, retention_days: int) -> list[str]:
    """The months a time range covers, newest first (no start: as far back as results are kept)."""
    now = datetime.now(UTC)
    last = min(month_of(until), month_of(now.isoformat())) if until else month_of(now.isoformat())
    first = month_of(since) if since else month_of((now - timedelta(days=retention_days)).isoformat())
    first = max(first, FIRST_MONTH)
    months = []
    year, month = int(last[:4]), int(last[5:7])
    while f"{year:04d}-{month:02d}" >= first:
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months


def _key_range(since: str | None, until: str | None) -> Any:
    if since and until:
        return Key(SORT_KEY).between(since, until)
    if since:
        return Key(SORT_KEY).gte(since)
    if until:
        return Key(SORT_KEY).lte(until)
    return None


def _review_filter(flt: ResultFilter) -> Any:
    conditions = []
    if flt.reviewed is not None:
        conditions.append(Attr("review").exists() if flt.reviewed else Attr("review").not_exists())
    if flt.disagrees:
        conditions.append(Attr("review.agrees").eq(False))
    combined = None
    for condition in conditions:
        combined = condition if combined is None else combined & condition
    return combined


def plan(flt: ResultFilter, retention_days: int) -> Plan:
    scope = scope_of(flt.class_name, flt.line)
    index = RESULT_INDEXES[(scope, flt.anomalous)]
    if scope == "all":
        partitions = _months(flt.since, flt.until, retention_days)
    else:
        partitions = [partition_value(scope, flt.class_name, flt.line)]
    return Plan(index, partitions, _key_range(flt.since, flt.until), _review_filter(flt))


def queue_plan(class_name: str, line: str | None) -> Plan:
    """Unreviewed inspections of a class (and line), nearest the threshold first."""
    index = QUEUE_INDEXES[bool(line)]
    return Plan(index, [partition_value("class_line" if line else "class", class_name, line)], forward=True)


def encode_token(partition: str, key: dict | None) -> str:
    doc = {"p": partition, "k": from_dynamo(key) if key else None}
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()


def decode_token(text: str, p: Plan) -> tuple[int, dict | None]:
    """(position in the plan's partitions, start key) of a token this plan issued; ValueError otherwise."""
    try:
        doc = json.loads(base64.urlsafe_b64decode(text.encode()))
        position = p.partitions.index(doc["p"])
        key = doc["k"]
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ValueError("next_token is not valid for this query") from None
    expected = {PARTITION_KEY, p.index.partition, p.index.sort}
    if key is not None and not (
        isinstance(key, dict)
        and set(key) == expected
        and all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in key.values())
        and key[p.index.partition] == p.partitions[position]
    ):
        raise ValueError("next_token is not valid for this query")
    return position, to_dynamo(key) if key else None


def query_page(table: Any, p: Plan, limit: int, token: str | None, max_reads: int | None = None) -> Page:
    """Up to `limit` items in the plan's order, from as many queries as it takes (at most `max_reads`)."""
    max_reads = MAX_READS if max_reads is None else max_reads
    position, start_key = decode_token(token, p) if token else (0, None)
    items: list[dict] = []
    reads = 0
    while position < len(p.partitions) and len(items) < limit and reads < max_reads:
        condition = Key(p.index.partition).eq(p.partitions[position])
        if p.key_range is not None:
            condition &= p.key_range
        kwargs: dict = {
            "IndexName": p.index.name,
            "KeyConditionExpression": condition,
            "ScanIndexForward": p.forward,
            "Limit": limit - len(items),
        }
        if p.filter is not None:
            kwargs["FilterExpression"] = p.filter
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        resp = table.query(**kwargs)
        reads += 1
        items += [from_dynamo(i) for i in resp.get("Items", [])]
        start_key = resp.get("LastEvaluatedKey")
        if not start_key:
            position += 1
    more = position < len(p.partitions)
    next_token = encode_token(p.partitions[position], start_key) if more else None
    return Page(items, next_token, short=more and len(items) < limit, reads=reads)


def every_item(table: Any, p: Plan, page_size: int = 1000) -> Iterator[dict]:
    """Every item of a plan, page after page (the export): memory holds one page at a time."""
    token: str | None = None
    while True:
        page = query_page(table, p, page_size, token, max_reads=10**6)
        yield from page.items
        token = page.next_token
        if token is None:
            return
