"""The Results view's queries, the export, reviews and the review queue through the local stack: images of two
classes on two lines go in through the inbox, and every answer is checked against the table itself."""

from __future__ import annotations

import csv
import io
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from ivadas_contract import export
from ivadas_contract.results_table import from_dynamo
from tests.conftest import local_stack
from tests.e2e.people import ENGINEER, PASSWORD, auth_headers

CLASSES, LINES = ("widget", "gadget"), ("line1", "line2")
PAGE = 5


@pytest.fixture(scope="module")
def loaded(
    two_class_artifact: Path, two_class_root: Path, tmp_path_factory
) -> Iterator[tuple[dict, list[dict]]]:  # noqa: ANN001
    with local_stack(
        tmp_path_factory.mktemp("results-stack"), two_class_artifact, None, ["WorkerBatchingWindowSeconds=0"]
    ) as state:
        s3 = boto3.client("s3")
        keys = []
        for class_name in CLASSES:
            images = sorted((two_class_root / class_name / "test").glob("*/*.png"))
            for n, path in enumerate(images):
                key = f"{LINES[n % 2]}/{class_name}/{path.parent.name}-{path.name}"
                s3.put_object(Bucket=state["resources"]["InboxBucket"], Key=key, Body=path.read_bytes())
                keys.append(key)
        yield state, _wait_all(state, len(keys))


def _wait_all(state: dict, n: int, timeout: float = 240) -> list[dict]:
    table = boto3.resource("dynamodb").Table(state["resources"]["ResultsTable"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = [from_dynamo(i) for i in table.scan(ConsistentRead=True)["Items"]]
        if len(items) >= n:
            return items
        time.sleep(1)
    pytest.fail(f"{len(items)} of {n} results after {timeout} s")


def call(
    state: dict, method: str, path: str, query: dict | None = None, body: dict | None = None,
    user: str = ENGINEER, group: str = "ml-engineers",
) -> tuple[int, dict]:  # fmt: skip
    """A call as the signed-in `user` (made in `group` the first time: an ML engineer unless named)."""
    url = state["api_url"] + path + ("?" + urllib.parse.urlencode(query) if query else "")
    req = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={**auth_headers(state, user, group), "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def pages(state: dict, query: dict) -> list[list[str]]:
    out, token = [], None
    while True:
        status, body = call(
            state,
            "GET",
            "/results",
            {**query, "limit": str(PAGE), **({"next_token": token} if token else {})},
        )
        assert status == 200, body
        out.append([i["inspection_id"] for i in body["items"]])
        token = body["next_token"]
        if not token:
            return [p for p in out if p]


def _matches(item: dict, query: dict) -> bool:
    return (
        all(item[k] == v for k, v in query.items() if k in ("class_name", "line"))
        and (query.get("anomalous") != "true" or item["is_anomaly"])
        and query.get("since", "") <= item["created_at"] <= query.get("until", "~")
    )


def test_every_query_is_newest_first_in_full_pages(loaded) -> None:  # noqa: ANN001
    state, items = loaded
    assert {i["status"] for i in items} == {"INSPECTED"} and {i["line"] for i in items} == set(LINES)
    times = sorted(i["created_at"] for i in items)
    window = {"since": times[4], "until": times[-5]}
    for query in (
        {},
        {"class_name": "gadget"},
        {"line": "line2"},
        {"class_name": "widget", "line": "line1"},
        {"anomalous": "true"},
        {"line": "line1", "anomalous": "true"},
        window,
        {"class_name": "widget", **window},
    ):
        expected = sorted(
            (i for i in items if _matches(i, query)), key=lambda i: i["created_at"], reverse=True
        )
        got = pages(state, query)
        ids = [i for p in got for i in p]
        assert sorted(ids) == sorted(i["inspection_id"] for i in expected), query  # each once, none missing
        # newest first; results written in the same millisecond may come in either order
        created = {i["inspection_id"]: i["created_at"] for i in items}
        assert [created[i] for i in ids] == [i["created_at"] for i in expected], query
        assert all(len(p) == PAGE for p in got[:-1]), (query, [len(p) for p in got])
        assert expected, query


def test_export_holds_every_row_of_the_filter_with_its_columns(loaded) -> None:  # noqa: ANN001
    state, items = loaded
    status, done = call(state, "POST", "/results/export", {"line": "line1"})
    assert status == 200 and done["complete"], done
    with urllib.request.urlopen(
        done["url"], timeout=30
    ) as resp:  # the presigned link, as a browser follows it
        rows = list(csv.reader(io.StringIO(resp.read().decode())))
    assert tuple(rows[0]) == export.HEADER
    mine = {i["inspection_id"]: i for i in items if i["line"] == "line1"}
    assert done["rows"] == len(mine) == len(rows) - 1
    for row in rows[1:]:
        got = dict(zip(export.HEADER, row, strict=True))
        item = mine[got["inspection_id"]]
        assert got["image_key"] == item["key"] and got["heatmap_key"] == item["heatmap_key"]
        assert got["verdict"] == ("defect" if item["is_anomaly"] else "good")


def test_reviews_keep_history_and_the_queue_is_nearest_the_threshold_first(loaded, capsys) -> None:  # noqa: ANN001
    state, items = loaded
    widget = [i for i in items if i["class_name"] == "widget"]
    status, queue = call(state, "GET", "/review-queue", {"class_name": "widget", "limit": "50"})
    assert status == 200
    expected = sorted(widget, key=lambda i: abs(i["normalized_score"] - 0.5))
    distances = [abs(i["normalized_score"] - 0.5) for i in queue["items"]]
    assert distances == sorted(distances) and len(distances) == len(widget)
    assert {i["inspection_id"] for i in queue["items"]} == {i["inspection_id"] for i in expected}
    first = queue["items"][0]["inspection_id"]
    for verdict, who in (("good", "ana"), ("defect", "ben")):
        status, _ = call(state, "POST", f"/results/{first}/review", body={"verdict": verdict}, user=who)
        assert status == 200
    status, one = call(state, "GET", f"/results/{first}")
    assert [r["reviewer"] for r in one["reviews"]] == ["ana", "ben"] and one["review"]["verdict"] == "defect"
    assert one["review"]["image_copy"]  # kept past the inbox's retention
    _, after = call(state, "GET", "/review-queue", {"class_name": "widget", "limit": "50"})
    assert first not in {i["inspection_id"] for i in after["items"]}
    _, reviewed = call(state, "GET", "/results", {"reviewed": "true"})
    assert [i["inspection_id"] for i in reviewed["items"]] == [first]
    _, view = call(state, "GET", "/stats", {"class_name": "widget"})
    assert view["total"]["reviewed"] == 1 and view["dimensions"]["lines"] == list(LINES)

    from infra.cli import main

    capsys.readouterr()
    assert main(["stats", "--class-name", "widget", "--state-dir", state["state_dir"]]) == 0
    said = capsys.readouterr().out
    assert "model against reviewers" in said and "widget" in said.split("model against reviewers")[1]


def test_results_command_filters_by_line_and_refuses_a_bad_time(loaded, capsys, monkeypatch) -> None:  # noqa: ANN001, E501
    from infra.cli import main

    state, items = loaded
    auth_headers(state)  # the user exists; the command signs in as it
    monkeypatch.setenv("IVADAS_USER", ENGINEER)
    monkeypatch.setenv("IVADAS_PASSWORD", PASSWORD)
    where = ["--state-dir", state["state_dir"]]
    capsys.readouterr()
    assert main(["results", "--line", "line2", "--class-name", "gadget", "--limit", "50", *where]) == 0
    printed = [row for row in capsys.readouterr().out.splitlines()[1:] if row.strip()]
    expected = [i for i in items if i["line"] == "line2" and i["class_name"] == "gadget"]
    assert len(printed) == len(expected) and all("line2/gadget/" in row for row in printed)
    assert main(["results", "--since", "yesterday", *where]) == 2
    assert "since must be an ISO 8601 time" in capsys.readouterr().err


def test_a_review_is_withdrawn_through_the_local_stack_and_the_result_is_queued_again(loaded) -> None:  # noqa: ANN001
    state, _ = loaded
    queue = {"class_name": "gadget", "line": "line1", "limit": "50"}
    _, before = call(state, "GET", "/review-queue", queue)
    first = before["items"][0]["inspection_id"]
    path = f"/results/{first}/review"
    body = {"verdict": "defect", "defect_type": "dent", "note": "left side"}
    assert call(state, "POST", path, body=body, user="olga", group="operators")[0] == 200
    _, during = call(state, "GET", "/review-queue", queue)
    assert first not in {i["inspection_id"] for i in during["items"]} and "dent" in during["defect_types"]
    status, refused = call(state, "DELETE", path, user="oskar", group="operators")
    assert (status, refused["type"]) == (403, "forbidden")  # another operator's review
    status, done = call(state, "DELETE", path, user="olga", group="operators")
    assert status == 200 and done["queued"] is True and done["withdrawn"]["withdrawn_by"] == "olga"
    _, after = call(state, "GET", "/review-queue", queue)
    assert [i["inspection_id"] for i in after["items"]] == [i["inspection_id"] for i in before["items"]]
    _, one = call(state, "GET", f"/results/{first}")
    assert "review" not in one and one["reviews"][-1]["withdrawn_by"] == "olga"
    assert call(state, "DELETE", path)[0] == 409  # nothing left to withdraw
