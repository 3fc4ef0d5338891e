"""The Results API at factory scale, on in-process moto: every filter served by an index newest first in full
pages (no scan), the review queue, review counters and the CSV export."""

from __future__ import annotations

import csv
import importlib
import io
import itertools
import json
from decimal import Decimal

import boto3
import pytest

from ivadas_contract import export, results_table
from tests.unit.test_handlers import INBOX, RESULTS, STATS, TABLE, Context, api_event, aws, claims_of  # noqa: F401

CLASSES, LINES = ("bottle", "cell"), ("line1", "line2")


def _record(i: int, day: str, class_name: str, line: str | None, anomalous: bool, score: float) -> dict:
    return {
        "inspection_id": f"id{i:03d}",
        "status": "INSPECTED",
        "class_name": class_name,
        "line": line,
        "created_at": f"{day}T{i // 60 % 24:02d}:{i % 60:02d}:00.000Z",
        "bucket": INBOX,
        "key": f"{line}/{class_name}/{i}.png",
        "is_anomaly": anomalous,
        "normalized_score": score,
        "threshold": 2.0,
        "model": "patchcore",
        "model_version": "patchcore-1",
        "endpoint_latency_ms": 40.0,
        "regions": [{"x": 1, "y": 2, "width": 3, "height": 4, "max_score": 0.9}] if anomalous else [],
    }


@pytest.fixture
def seeded(aws):  # noqa: ANN001, ANN201, F811
    """60 results over two days, two classes and two lines (and a few with no line), a third anomalous."""
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=1)).isoformat(), today.isoformat()]
    table = boto3.resource("dynamodb").Table(TABLE)
    records = []
    combos = itertools.cycle(itertools.product(CLASSES, (*LINES, None)))
    for i in range(60):
        class_name, line = next(combos)
        rec = _record(i, days[i // 30], class_name, line, i % 3 == 0, round((i * 37 % 100) / 100, 2))
        table.put_item(Item=results_table.to_item(rec))
        records.append(rec)
    results = importlib.import_module("ivadas_functions.results")
    # the handler's own table object: a scan would mean an unindexed query
    tbl = importlib.import_module("ivadas_functions.aws").table(TABLE)
    tbl.scan = lambda **kw: pytest.fail(f"a scan served a results query: {kw}")
    return results, records, days


def _get(results, path: str, query: dict) -> tuple[int, dict]:  # noqa: ANN001
    resp = results.handler(api_event("GET", path, query={k: v for k, v in query.items() if v}), Context())
    return resp["statusCode"], json.loads(resp["body"])


def _all_pages(results, query: dict, limit: int = 4) -> list[list[str]]:  # noqa: ANN001
    pages, token = [], None
    while True:
        status, body = _get(results, "/results", {**query, "limit": str(limit), "next_token": token})
        assert status == 200, body
        pages.append([i["inspection_id"] for i in body["items"]])
        token = body["next_token"]
        if not token:
            return pages


@pytest.mark.parametrize("class_name", [None, "bottle"])
@pytest.mark.parametrize("line", [None, "line2"])
@pytest.mark.parametrize("anomalous", [False, True])
def test_every_filter_pages_newest_first_in_full_pages(seeded, class_name, line, anomalous) -> None:  # noqa: ANN001
    results, records, days = seeded
    since = f"{days[0]}T00:20:00Z"
    for window in ({}, {"since": since}, {"since": since, "until": f"{days[1]}T00:10:00Z"}):
        query = {"class_name": class_name, "line": line, "anomalous": "true" if anomalous else None, **window}
        expected = [
            r
            for r in records
            if (not class_name or r["class_name"] == class_name)
            and (not line or r["line"] == line)
            and (not anomalous or r["is_anomaly"])
            and (not window.get("since") or r["created_at"] >= results_query_time(window["since"]))
            and (not window.get("until") or r["created_at"] <= results_query_time(window["until"]))
        ]
        expected.sort(key=lambda r: r["created_at"], reverse=True)
        pages = _all_pages(results, query)
        assert [i for p in pages for i in p] == [r["inspection_id"] for r in expected], query
        assert all(len(p) == 4 for p in pages[:-1]), (query, [len(p) for p in pages])


def results_query_time(text: str) -> str:
    from ivadas_functions.results_query import parse_time

    return parse_time(text, "t")


def test_bad_filters_and_tokens_get_the_one_error_shape(seeded) -> None:  # noqa: ANN001
    results, _, _ = seeded
    for query in (
        {"since": "yesterday"},
        {"until": "2026-13-40"},
        {"since": "2026-12-02T10:00:00Z", "until": "2026-12-01T00:00:00Z"},
        {"anomalous": "maybe"},
        {"next_token": "not-a-token"},
        {"class_name": "bottle", "next_token": _token_of_other_query(results)},
        {"next_token": _forged({"inspection_id": "x", "month": "1999-01", "created_at": "t"})},  # other month
        {"next_token": _forged({"inspection_id": "x", "month": None, "created_at": "t", "extra": 1})},
        {"next_token": _forged({"inspection_id": True, "month": None, "created_at": "t"})},
    ):
        status, body = _get(results, "/results", query)
        assert status == 400 and body == {"error": body["error"], "type": "bad_request"}, (query, body)


@pytest.mark.parametrize("limit", ["0", "-1", "201", "1e23", "2.5", "", " ", "x", "1" * 30, "٥"])
@pytest.mark.parametrize("path", ["/results", "/review-queue"])
def test_a_page_size_out_of_range_is_refused_not_clamped(seeded, path, limit) -> None:  # noqa: ANN001
    results, _, _ = seeded
    resp = results.handler(api_event("GET", path, query={"class_name": "bottle", "limit": limit}), Context())
    body = json.loads(resp["body"])
    assert resp["statusCode"] == 400 and body["type"] == "bad_request", (limit, body)
    assert "from 1 to 200" in body["error"]


def test_a_page_size_in_range_is_served(seeded) -> None:  # noqa: ANN001
    results, _, _ = seeded
    for limit, expected in (("1", 1), (" 7 ", 7), ("200", 30)):
        status, body = _get(results, "/results", {"class_name": "bottle", "limit": limit})
        assert status == 200 and len(body["items"]) == expected, (limit, body)


def _forged(key: dict) -> str:
    """A token for this month's all-classes partition carrying `key` (None: this month)."""
    import base64
    from datetime import UTC, datetime

    month = datetime.now(UTC).strftime("%Y-%m")
    key = {k: (month if v is None else v) for k, v in key.items()}
    return base64.urlsafe_b64encode(json.dumps({"p": month, "k": key}).encode()).decode()


def _token_of_other_query(results) -> str:  # noqa: ANN001
    _, body = _get(results, "/results", {"class_name": "cell", "limit": "2"})
    return body["next_token"]


def test_a_filtered_page_says_when_it_came_back_short_and_goes_on(seeded, monkeypatch) -> None:  # noqa: ANN001
    results, records, _ = seeded
    monkeypatch.setattr(importlib.import_module("ivadas_functions.results_query"), "MAX_READS", 1)
    reviews = {"id059", "id003"}  # the newest and one of the oldest: the pages between hold none
    tbl = boto3.resource("dynamodb").Table(TABLE)
    for iid in reviews:
        tbl.update_item(
            Key={"inspection_id": iid},
            UpdateExpression="SET review = :r",
            ExpressionAttributeValues={":r": {"agrees": False}},
        )
    seen, shorts, token = [], 0, None
    while True:
        status, body = _get(results, "/results", {"reviewed": "true", "limit": "5", "next_token": token})
        assert status == 200
        seen += [i["inspection_id"] for i in body["items"]]
        shorts += body["short"]
        token = body["next_token"]
        if not token:
            break
    assert set(seen) == reviews and shorts >= 1


def test_review_queue_is_nearest_the_threshold_first_and_a_review_takes_an_item_out(seeded) -> None:  # noqa: ANN001
    results, records, _ = seeded
    mine = [r for r in records if r["class_name"] == "bottle" and r["line"] == "line1"]
    expected = sorted(abs(r["normalized_score"] - 0.5) for r in mine)
    status, body = _get(results, "/review-queue", {"class_name": "bottle", "line": "line1", "limit": "50"})
    assert status == 200
    assert [round(abs(i["normalized_score"] - 0.5), 6) for i in body["items"]] == pytest.approx(expected)
    first = body["items"][0]["inspection_id"]
    resp = results.handler(
        api_event("POST", f"/results/{first}/review", {"verdict": "good"},
                  params={"inspection_id": first}), Context(),
    )  # fmt: skip
    assert resp["statusCode"] == 200
    _, after = _get(results, "/review-queue", {"class_name": "bottle", "line": "line1", "limit": "50"})
    assert first not in [i["inspection_id"] for i in after["items"]] and len(after["items"]) == len(mine) - 1
    assert _get(results, "/review-queue", {})[0] == 400


def test_review_counts_follow_corrections_into_agreement_figures(seeded) -> None:  # noqa: ANN001
    results, records, _ = seeded
    flagged = next(r for r in records if r["is_anomaly"] and r["class_name"] == "cell")
    good = next(r for r in records if not r["is_anomaly"] and r["class_name"] == "cell")

    def review(rec: dict, verdict: str) -> None:
        iid = rec["inspection_id"]
        resp = results.handler(
            api_event("POST", f"/results/{iid}/review", {"verdict": verdict},
                      params={"inspection_id": iid}), Context(),
        )  # fmt: skip
        assert resp["statusCode"] == 200

    review(flagged, "good")  # a false alarm
    review(good, "defect")  # an escape
    review(good, "good")  # corrected: the model was right after all
    _, view = _get(results, "/stats", {"class_name": "cell"})
    total = view["total"]
    assert (total["reviewed"], total["false_alarms"], total["escapes"]) == (2, 1, 0)
    assert total["review_agreement"] == 0.5
    assert view["by_class"][0]["class_name"] == "cell"


def test_stats_offer_classes_lines_and_a_series(aws) -> None:  # noqa: ANN001, F811
    from ivadas_functions import counters
    from ivadas_functions.aws import Settings

    results = importlib.import_module("ivadas_functions.results")
    settings = Settings.from_env()
    for i, (class_name, line) in enumerate(itertools.product(CLASSES, LINES)):
        rec = {"class_name": class_name, "line": line, "model": "patchcore",
               "created_at": f"2026-12-0{1 + i % 2}T1{i}:00:00.000Z"}  # fmt: skip
        counters.add(settings, rec, {"inspected": 10, "anomalies": i})
    status, view = _get(results, "/stats", {"interval": "day"})
    assert status == 200
    assert view["dimensions"] == {"classes": list(CLASSES), "lines": list(LINES)}
    assert [(s["at"], s["inspected"], s["anomalies"]) for s in view["series"]] == [
        ("2026-12-01", 20, 2),
        ("2026-12-02", 20, 4),
    ]
    assert _get(results, "/stats", {"interval": "week"})[0] == 400
    assert _get(results, "/stats", {"since": "last tuesday"})[0] == 400


def test_a_class_no_model_serves_is_counted_as_rejected_not_offered_as_a_class(aws, monkeypatch) -> None:  # noqa: ANN001, F811
    from ivadas_functions import counters
    from ivadas_functions.aws import Settings

    settings = Settings.from_env()
    at = {"line": "line1", "model": "patchcore", "created_at": f"{_today()}T10:00:00.000Z"}
    counters.add(settings, {"class_name": "elpv_mono", **at}, {"inspected": 5, "anomalies": 1, "rejected": 1,
                                                             "rejected_not_an_image": 1})  # fmt: skip
    for class_name, reason in (
        ("bottle", "unknown_class"),
        ("bottle", "unknown_class"),
        ("unassigned", "no_class"),
    ):
        counters.add(settings, {"class_name": class_name, **at}, {"rejected": 1, f"rejected_{reason}": 1})
    results = importlib.import_module("ivadas_functions.results")
    for query in ({}, {"since": f"{_today()}T00:00:00Z"}):
        status, view = _get(results, "/stats", query)
        assert status == 200 and view["dimensions"]["classes"] == ["elpv_mono"], view["dimensions"]
        assert [c["class_name"] for c in view["by_class"]] == ["elpv_mono"]
        assert view["rejected"] == {
            "no_class": {"unassigned": 1}, "not_an_image": {"elpv_mono": 1}, "unknown_class": {"bottle": 2}
        }  # fmt: skip
        assert view["total"]["rejected"] == 4 and view["total"]["inspected"] == 5
    monkeypatch.setenv("STAGE", "test")
    models_api = importlib.import_module("ivadas_functions.models_api")
    listed = json.loads(models_api.handler(api_event("GET", "/models"), Context())["body"])
    assert [a["class_name"] for a in listed["agreement"]] == ["elpv_mono"]


def _today() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).date().isoformat()


def test_export_writes_every_filtered_row_as_csv_to_the_results_bucket(seeded, monkeypatch) -> None:  # noqa: ANN001
    results, records, _ = seeded
    exports = importlib.import_module("ivadas_functions.exports")
    monkeypatch.setattr(exports, "PAGE_ITEMS", 7)  # many pages
    monkeypatch.setattr(exports, "PART_BYTES", 1)  # a part per page: the multipart path
    monkeypatch.setattr("moto.s3.models.S3_UPLOAD_PART_MIN_SIZE", 1)  # real S3 wants 5 MiB parts
    parts = []
    real = exports.Upload.put_part
    monkeypatch.setattr(
        exports.Upload, "put_part", lambda self, data: (parts.append(len(data)), real(self, data))
    )
    resp = results.handler(api_event("POST", "/results/export", query={"line": "line1"}), Context())
    body = json.loads(resp["body"])
    assert resp["statusCode"] == 200 and body["complete"] is True
    mine = [r for r in records if r["line"] == "line1"]
    assert body["rows"] == len(mine) and len(parts) > 1
    text = boto3.client("s3").get_object(Bucket=RESULTS, Key=body["key"])["Body"].read().decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == export.HEADER and len(rows) == len(mine) + 1
    by_id = {r[0]: dict(zip(export.HEADER, r, strict=True)) for r in rows[1:]}
    sample = mine[0]
    got = by_id[sample["inspection_id"]]
    assert (
        got["image_key"] == sample["key"]
        and got["line"] == "line1"
        and got["class_name"] == sample["class_name"]
    )
    assert body["url"].startswith("http") and RESULTS in body["url"]


def _export(results, body: str | None, query: dict | None = None) -> tuple[int, dict]:  # noqa: ANN001
    event = api_event("POST", "/results/export", query=query or {})
    event["body"] = body
    resp = results.handler(event, Context())
    return resp["statusCode"], json.loads(resp["body"])


def test_an_export_honours_the_filters_of_its_json_body(seeded) -> None:  # noqa: ANN001
    results, records, _ = seeded
    body = {"class_name": "cell", "anomalous": True, "line": "line1", "reviewed": None}
    status, done = _export(results, json.dumps(body))
    mine = [r for r in records if r["class_name"] == "cell" and r["is_anomaly"] and r["line"] == "line1"]
    assert status == 200 and 0 < done["rows"] == len(mine) < len(records), done
    assert done["filters"] == {"class_name": "cell", "anomalous": True, "line": "line1"}
    status, done = _export(results, json.dumps({"anomalous": "true", "since": records[57]["created_at"]}))
    assert status == 200 and done["rows"] == 1, done  # the query's forms of them, too
    assert _export(results, "{}", {"line": "line1"})[1]["rows"] == 20  # an empty body: the query's filters


@pytest.mark.parametrize(
    "body",
    [
        "xx", "null", "[]", '"line1"', "{", '{"class": "cell"}', '{"anomalous": "yes"}', '{"anomalous": 1}',
        '{"class_name": 7}', '{"since": "yesterday"}', '{"class_name": "' + "c" * 300 + '"}',
        '{"next_token": "not-a-token"}',
    ],
)  # fmt: skip
def test_an_export_refuses_a_body_that_is_not_its_filters(seeded, body) -> None:  # noqa: ANN001
    results, _, _ = seeded
    status, answer = _export(results, body)
    assert status == 400 and answer == {"error": answer["error"], "type": "bad_request"}, (body, answer)


def test_an_export_takes_its_filters_from_the_query_or_the_body_not_both(seeded) -> None:  # noqa: ANN001
    results, _, _ = seeded
    status, answer = _export(results, '{"class_name": "cell"}', {"line": "line1"})
    assert status == 400 and "not in both" in answer["error"]


def test_an_export_out_of_time_ends_its_file_and_says_where_to_go_on(seeded, monkeypatch) -> None:  # noqa: ANN001
    results, records, _ = seeded
    exports = importlib.import_module("ivadas_functions.exports")
    monkeypatch.setattr(exports, "PAGE_ITEMS", 10)
    monkeypatch.setattr(Context, "get_remaining_time_in_millis", lambda self: 1000)
    body = json.loads(results.handler(api_event("POST", "/results/export", query={}), Context())["body"])
    assert body["complete"] is False and body["rows"] == 10 and body["next_token"]


def test_index_keys_put_an_item_only_where_it_belongs() -> None:
    rec = _record(1, "2026-12-02", "bottle", None, False, 0.45)
    keys = results_table.index_keys(rec)
    assert keys == {"month": "2026-12", "class_name": "bottle", "queue_rank": 0.05, "queue_class": "bottle"}
    rec = _record(2, "2026-12-02", "bottle", "l1", True, 0.9)
    keys = results_table.index_keys({**rec, "review": {"verdict": "good"}})
    assert keys["anomaly_class_line"] == "bottle#l1" and "queue_class" not in keys
    assert isinstance(results_table.to_item(rec)["queue_rank"], Decimal)


def test_a_range_from_long_ago_walks_only_the_months_a_result_can_be_in() -> None:
    from ivadas_functions.results_query import FIRST_MONTH, ResultFilter, plan

    p = plan(ResultFilter(since="0368-02-26T15:03:52.400000+00:00"), retention_days=90)
    assert p.partitions[-1] == FIRST_MONTH
    assert len(p.partitions) < 12 * 10


def _call(results, method: str, iid: str, body: dict | None = None, user: str = "ana",
          groups: str = "ml-engineers") -> tuple[int, dict]:  # fmt: skip  # noqa: ANN001
    event = api_event(method, f"/results/{iid}/review", body, params={"inspection_id": iid},
                      claims=claims_of(user, groups))  # fmt: skip
    event["resource"] = "/results/{inspection_id}/review"
    resp = results.handler(event, Context())
    return resp["statusCode"], json.loads(resp["body"])


def _queued(results, rec: dict) -> list[str]:  # noqa: ANN001
    _, page = _get(
        results, "/review-queue", {"class_name": rec["class_name"], "line": rec["line"], "limit": "200"}
    )
    return [i["inspection_id"] for i in page["items"]]


def test_a_withdrawn_review_puts_the_result_back_in_the_queue_and_takes_its_counts_back(seeded) -> None:  # noqa: ANN001
    results, records, _ = seeded
    rec = next(r for r in records if r["is_anomaly"] and r["class_name"] == "bottle" and r["line"] == "line1")
    iid = rec["inspection_id"]
    body = {"verdict": "defect", "defect_type": "crack", "note": "at the neck"}
    status, _ = _call(results, "POST", iid, body, user="oli", groups="operators")
    assert status == 200 and iid not in _queued(results, rec)
    assert _get(results, "/stats", {"class_name": "bottle"})[1]["total"]["reviewed"] == 1
    _, queue = _get(results, "/review-queue", {"class_name": "bottle"})
    assert queue["defect_types"] == ["crack"]  # offered to the class's next reviewer

    status, body = _call(results, "DELETE", iid, user="pia", groups="operators")
    assert (status, body["type"]) == (403, "forbidden")  # another operator's review is not theirs
    status, body = _call(results, "DELETE", iid, user="oli", groups="operators")
    assert status == 200, body
    assert body["queued"] is True and body["review"] is None and body["withdrawn"]["withdrawn_by"] == "oli"
    assert iid in _queued(results, rec)  # back in the queue, at its place
    assert _get(results, "/stats", {"class_name": "bottle"})[1]["total"]["reviewed"] == 0
    _, shown = _get(results, f"/results/{iid}", {})
    assert "review" not in shown
    (kept,) = shown["reviews"]  # the history keeps the review, marked
    assert (kept["defect_type"], kept["withdrawn_by"]) == ("crack", "oli") and kept["withdrawn_at"]
    status, body = _call(results, "DELETE", iid, user="oli", groups="operators")
    assert (status, body["type"]) == (409, "conflict")  # nothing left to withdraw


def test_withdrawing_a_correction_shows_the_review_before_it(seeded) -> None:  # noqa: ANN001
    results, records, _ = seeded
    rec = next(r for r in records if r["is_anomaly"] and r["class_name"] == "cell")
    iid = rec["inspection_id"]
    assert _call(results, "POST", iid, {"verdict": "good"}, user="oli", groups="operators")[0] == 200
    assert _call(results, "POST", iid, {"verdict": "defect"}, user="oli", groups="operators")[0] == 200
    status, body = _call(results, "DELETE", iid)  # an ML engineer may withdraw anyone's review
    assert status == 200, body
    assert body["review"]["verdict"] == "good" and body["queued"] is False
    assert iid not in _queued(results, rec)
    total = _get(results, "/stats", {"class_name": "cell"})[1]["total"]
    assert (total["reviewed"], total["false_alarms"]) == (1, 1)  # the good review counts again


def test_a_review_cannot_be_withdrawn_from_what_has_none(seeded) -> None:  # noqa: ANN001
    results, records, _ = seeded
    assert _call(results, "DELETE", records[0]["inspection_id"])[0] == 409
    assert _call(results, "DELETE", "nope")[0] == 404
