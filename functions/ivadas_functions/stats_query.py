"""Reading the stats table (ivadas_contract.stats) for `GET /stats` and `ivadas stats`: the slots of a class
(or of every class) between two hours, optionally of one line, summed into the dashboard's figures."""

from __future__ import annotations

from boto3.dynamodb.conditions import Attr, Key

from ivadas_contract import stats
from ivadas_contract.results_table import from_dynamo
from ivadas_functions.aws import client, table


def read_slots(
    table_name: str, class_name: str | None, since: str | None, until: str | None, line: str | None = None
) -> list[dict]:
    """Stats items whose hour lies in [since, until] (ISO times, either open)."""
    low = stats.hour_of(since) if since else "0"
    high = (stats.hour_of(until) if until else "9") + "#~"  # '~' sorts after every line and model
    stats_table = table(table_name)
    if class_name:
        kwargs = {
            "KeyConditionExpression": Key(stats.PARTITION_KEY).eq(class_name)
            & Key(stats.SORT_KEY).between(low, high)
        }
        page_call = stats_table.query
    else:  # every class: the table has one item per class, hour, line and model, whatever the traffic
        kwargs = {"FilterExpression": Attr(stats.SORT_KEY).between(low, high)}
        page_call = stats_table.scan
    items: list[dict] = []
    while True:
        resp = page_call(**kwargs)
        items += [from_dynamo(i) for i in resp.get("Items", [])]
        if "LastEvaluatedKey" not in resp:
            break
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
    if line:
        items = [i for i in items if i[stats.SORT_KEY].split("#", 2)[1] == line]
    return items


def dlq_depth(queue_name: str) -> int:
    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def stats_view(
    table_name: str, dlq_name: str | None, class_name: str | None, line: str | None, since: str | None,
    until: str | None, interval: str = "hour",
) -> dict:  # fmt: skip
    """The figures of a filter: totals, per class/line/model and per class, a time series, the DLQ depth, the
    classes the models scored and the lines there are (over every slot: what the UI's filters offer), and the
    rejects by reason and class as sent. `by_class` has the scored classes only: a class sent that no model
    serves is in `rejected`, never a row of its own."""
    items = read_slots(table_name, class_name, since, until, line)
    view = stats.summarize(items)
    unfiltered = not (class_name or line or since or until)
    view["dimensions"] = stats.dimensions(items if unfiltered else read_slots(table_name, None, None, None))
    served = set(view["dimensions"]["classes"])
    per_class = stats.summarize(items, ("class_name",))["groups"]
    view["by_class"] = [g for g in per_class if g["class_name"] in served]
    view["rejected"] = stats.rejected(items)
    view["series"] = stats.series(items, interval)
    view["dlq_depth"] = dlq_depth(dlq_name) if dlq_name else None
    view["filters"] = {
        "class_name": class_name, "line": line, "since": since, "until": until, "interval": interval
    }  # fmt: skip
    return view
