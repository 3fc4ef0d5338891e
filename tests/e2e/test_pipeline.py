"""End to end through the local stack: moto server + model server + SQS poller + real handlers + API shim."""

from __future__ import annotations

import hashlib
import io
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote_plus

import boto3
import pytest
from PIL import Image

from ivadas_contract.inspection import inbox_key, inspection_id
from ivadas_contract.results_table import from_dynamo
from tests.conftest import local_stack
from tests.e2e.people import ENGINEER, auth_headers

MAX_RECEIVE = 2


@pytest.fixture(scope="module")
def stack(
    trained_artifact: Path, trained_softpatch: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    params = [
        "WorkerTimeoutSeconds=20",  # a short retry window: the endpoint-down test reaches the DLQ sooner
        "QueueVisibilityTimeoutSeconds=30",  # above the Timeout, as AWS requires: no batch delivered twice
        f"MaxReceiveCount={MAX_RECEIVE}",
        "WorkerBatchingWindowSeconds=0",
    ]
    with local_stack(
        tmp_path_factory.mktemp("local-stack"), trained_artifact, trained_softpatch, params
    ) as state:
        yield state


def put(state: dict, key: str, body: bytes, **extra) -> str:
    inbox = state["resources"]["InboxBucket"]
    etag = boto3.client("s3").put_object(Bucket=inbox, Key=key, Body=body, **extra)["ETag"].strip('"')
    return inspection_id(inbox, key, etag)


def wait_items(state: dict, ids: list[str], timeout: float = 120) -> dict[str, dict]:
    table = boto3.resource("dynamodb").Table(state["resources"]["ResultsTable"])
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(set(ids)) and time.monotonic() < deadline:
        for i in set(ids) - set(found):
            item = table.get_item(Key={"inspection_id": i}, ConsistentRead=True).get("Item")
            if item:
                found[i] = from_dynamo(item)
        time.sleep(0.3)
    return found


def items_for_key(state: dict, key: str) -> list[dict]:
    table = boto3.resource("dynamodb").Table(state["resources"]["ResultsTable"])
    return [i for i in table.scan()["Items"] if i["key"] == key]


def queue_depth(state: dict, name: str) -> int:
    attrs = boto3.client("sqs").get_queue_attributes(
        QueueUrl=state["resources"][name],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def admin(stack: dict, path: str, body: dict | None = None) -> dict:
    """The local model server's admin routes (fault injection, invocation counts)."""
    url = f"http://127.0.0.1:{stack['model_port']}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="PUT" if data else "GET")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def api(state: dict, path: str, body: dict | None = None, user: str = ENGINEER) -> tuple[int, dict]:
    """A signed-in user's call (an ML engineer unless `user` names another); /machine/... takes the key."""
    machine = path.startswith("/machine/")
    who = {"X-Api-Key": state["api_key"]} if machine else auth_headers(state, user)
    req = urllib.request.Request(
        state["api_url"] + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={**who, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_every_image_gets_one_inspected_result(stack: dict, synthetic_root: Path) -> None:
    files = sorted((synthetic_root / "widget/test").rglob("*.png"))
    ids = {put(stack, f"line1/widget/{f.parent.name}-{f.name}", f.read_bytes()): f for f in files}
    items = wait_items(stack, list(ids))
    assert len(items) == len(files) == 8
    results_bucket = stack["resources"]["ResultsBucket"]
    s3 = boto3.client("s3")
    for iid, path in ids.items():
        item = items[iid]
        assert item["status"] == "INSPECTED" and item["class_name"] == "widget" and item["line"] == "line1"
        assert item["is_anomaly"] == ("scratch" in path.parent.name)
        assert item["model"] == "patchcore" and item["model_version"].startswith("patchcore-")
        assert 0.0 <= item["normalized_score"] <= 1.0 and item["threshold"] > 0
        heatmap = s3.get_object(Bucket=results_bucket, Key=item["heatmap_key"])["Body"].read()
        assert Image.open(io.BytesIO(heatmap)).size == (64, 64)  # the map's resolution (64 px model)
        doc = json.loads(s3.get_object(Bucket=results_bucket, Key=item["result_key"])["Body"].read())
        assert doc["inspection_id"] == iid
        assert ("anomaly_class" in item) == item["is_anomaly"]


def test_inspect_command_reports_every_image_of_a_folder(
    stack: dict, synthetic_root: Path, capsys: pytest.CaptureFixture
) -> None:
    from infra.cli import main as ivadas

    folder = synthetic_root / "widget/test"
    files = sorted(folder.rglob("*.png"))
    args = ["inspect", str(folder), "--class-name", "widget", "--state-dir", stack["state_dir"]]
    assert ivadas([*args, "--line", "cli", "--rate", "4"]) == 0  # a camera's pace: two seconds in all
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    summary = json.loads(out.strip().splitlines()[-1])
    scratched = sum(1 for f in files if "scratch" in f.parent.name)
    assert summary["uploaded"] == summary["inspected"] == len(files) == 8
    assert summary["anomalous"] == scratched and summary["not_uploaded"] == 0
    assert summary["in_flight"] == summary["dead_lettered"] == summary["lost"] == 0
    assert summary["latency_p50_ms"] > 0 and summary["wall_seconds"] >= (len(files) - 1) / 4
    assert out.count(" good ") + out.count(" DEFECT ") == len(files)
    # progress on stderr as it went, then the summary for people
    assert "results: " in err and "uploaded 8/8, pending 0, retrying 0, rejected 0" in err
    assert f"8 images: 8 uploaded, 8 inspected ({scratched} defects), 0 rejected; 0 still in flight" in err
    # a deadline that has passed once the uploads end: every image is still uploaded, and reported in flight
    assert ivadas([*args, "--line", "cli-late", "--timeout", "0"]) == 1
    late_out = capsys.readouterr().out
    late = json.loads(late_out.strip().splitlines()[-1])
    assert late["uploaded"] == len(files) and late["not_uploaded"] == late["lost"] == 0
    assert late["in_flight"] > 0 and late["in_flight"] + late["inspected"] == len(files)
    assert late_out.count("IN_FLIGHT") == late["in_flight"] and "NOT_UPLOADED" not in late_out
    inbox = stack["resources"]["InboxBucket"]  # and the ones in flight do arrive
    keys = {inbox_key("cli-late", "widget", f"{f.parent.name}_{f.name}"): f.read_bytes() for f in files}
    ids = [inspection_id(inbox, key, hashlib.md5(body).hexdigest()) for key, body in keys.items()]
    assert len(wait_items(stack, ids)) == len(files)


def results_written(state: dict, class_name: str, line: str) -> int:
    """Results the worker stored for a class and line, as the stats table counted them: every write of a
    result adds to its slot, so a re-inspection shows here though it overwrites the same item."""
    table = boto3.resource("dynamodb").Table(state["resources"]["StatsTable"])
    items = table.query(
        KeyConditionExpression="class_name = :c", ExpressionAttributeValues={":c": class_name}
    )["Items"]
    return sum(int(i.get("inspected", 0)) for i in items if i["slot"].split("#")[1] == line)


def wait_queue_empty(state: dict, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while queue_depth(state, "InspectionQueue") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert queue_depth(state, "InspectionQueue") == 0


def test_the_same_object_twice_gives_one_result(stack: dict, synthetic_root: Path) -> None:
    body = (synthetic_root / "widget/test/good/001.png").read_bytes()
    key = "line-twice/widget/twice.png"
    first = put(stack, key, body)
    stored = wait_items(stack, [first])[first]
    second = put(stack, key, body)  # same bytes, same ETag: the same inspection, notified again
    assert first == second
    # a redelivered notification (what SQS does after a lost delete) changes nothing either
    etag = (
        boto3.client("s3").head_object(Bucket=stack["resources"]["InboxBucket"], Key=key)["ETag"].strip('"')
    )
    s3_part = {"bucket": {"name": stack["resources"]["InboxBucket"]}, "object": {"key": key, "eTag": etag}}
    record = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": s3_part}
    message = {"Records": [record]}
    boto3.client("sqs").send_message(
        QueueUrl=stack["resources"]["InspectionQueue"], MessageBody=json.dumps(message)
    )
    wait_queue_empty(stack)  # both later deliveries handled and deleted
    assert len(items_for_key(stack, key)) == 1
    assert results_written(stack, "widget", "line-twice") == 1, "a redelivery inspected the object again"
    assert wait_items(stack, [first])[first]["created_at"] == stored["created_at"]


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (10_000, 5_000)).save(buf, format="PNG")  # 50 MP, a few KB
    return buf.getvalue()


def test_bad_inputs_become_rejected_items_not_dlq(stack: dict, synthetic_root: Path) -> None:
    good = (synthetic_root / "widget/test/good/000.png").read_bytes()
    cases = {
        "line1/widget/corrupt.png": (good[: len(good) // 2], "image"),
        "line1/widget/zero.png": (b"", "empty file"),
        "line1/widget/notes.png": (b"these are not pixels", "image"),
        "line1/capsule/part.png": (good, "capsule"),
        "line1/widget/bomb.png": (_bomb(), "pixels"),
        "loose-file.png": (good, "no class"),
    }
    ids = {put(stack, key, body): (key, reason) for key, (body, reason) in cases.items()}
    items = wait_items(stack, list(ids))
    assert len(items) == len(cases)
    for iid, (key, reason) in ids.items():
        item = items[iid]
        assert item["status"] == "REJECTED", item
        assert reason in item["reason"], (key, item["reason"])
    assert queue_depth(stack, "InspectionDeadLetterQueue") == 0


def test_keys_with_spaces_and_unicode(stack: dict, synthetic_root: Path) -> None:
    key = "line 3/widget/Prüfteil Nr 7 (ß).png"
    iid = put(stack, key, (synthetic_root / "widget/test/scratch/003.png").read_bytes())
    item = wait_items(stack, [iid])[iid]
    assert (
        item["status"] == "INSPECTED"
        and item["key"] == key
        and item["line"] == "line 3"
        and item["is_anomaly"]
    )


def test_class_from_object_metadata(stack: dict, synthetic_root: Path) -> None:
    iid = put(stack, "camera7.png", (synthetic_root / "widget/test/good/002.png").read_bytes(),
              Metadata={"class-name": "widget"})  # fmt: skip
    item = wait_items(stack, [iid])[iid]
    assert item["status"] == "INSPECTED" and item["class_name"] == "widget"


def test_api_predict_results_and_classes(stack: dict, synthetic_root: Path) -> None:
    import base64

    image = base64.b64encode((synthetic_root / "widget/test/scratch/000.png").read_bytes()).decode()
    status, both = api(stack, "/predict", {"class_name": "widget", "image_base64": image, "model": "both"})
    assert status == 200 and both["patchcore"]["is_anomaly"] and both["softpatch"]["is_anomaly"]
    assert both["patchcore"]["heatmap_png_base64"] and both["latency_ms"] > 0
    assert api(stack, "/predict", {"class_name": "widget", "image_base64": "***"})[0] == 400
    status, body = api(stack, "/predict", {"class_name": "nope", "image_base64": image})
    assert status == 422 and "nope" in body["error"]
    status, listing = api(stack, "/results?class_name=widget&limit=5")
    assert status == 200 and len(listing["items"]) == 5 and listing["next_token"]
    times = [i["created_at"] for i in listing["items"]]
    assert times == sorted(times, reverse=True)
    status, anomalies = api(stack, "/results?class_name=widget&anomalous=true&limit=50")
    assert status == 200 and anomalies["items"] and all(i["is_anomaly"] for i in anomalies["items"])
    one = listing["items"][0]["inspection_id"]
    status, item = api(stack, f"/results/{one}")
    assert status == 200 and item["image_url"].startswith("http")
    with urllib.request.urlopen(item["image_url"], timeout=10) as resp:
        assert resp.read()[:4] == b"\x89PNG"
    assert api(stack, "/results/does-not-exist")[0] == 404
    status, classes = api(stack, "/classes")
    assert status == 200 and classes["classes"] == ["widget"]
    assert set(classes["models"]) == {"patchcore", "softpatch"}
    req = urllib.request.Request(stack["api_url"] + "/classes")  # not signed in
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401 and json.loads(err.value.read())["type"] == "unauthorized"
    status, machine = api(stack, "/machine/predict", {"class_name": "widget", "image_base64": image})
    assert status == 200 and machine["is_anomaly"]  # cameras and scripts: the API key


def _encoded(path: Path, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


def test_reviews_through_the_api_keep_history(stack: dict, synthetic_root: Path) -> None:
    image = (synthetic_root / "widget/test/scratch/000.png").read_bytes()
    iid = put(stack, "line2/widget/reviewed.png", image)
    item = wait_items(stack, [iid])[iid]
    for verdict, who in (("good", "ana"), ("defect", "ben")):
        status, body = api(stack, f"/results/{iid}/review", {"verdict": verdict}, user=who)
        assert status == 200 and body["review"]["verdict"] == verdict
    status, shown = api(stack, f"/results/{iid}")
    assert status == 200 and [r["reviewer"] for r in shown["reviews"]] == ["ana", "ben"]
    assert shown["review"]["reviewer"] == "ben" and shown["is_anomaly"] == item["is_anomaly"]
    assert all(r["reviewer_verified"] and r["reviewer_sub"] for r in shown["reviews"])  # from the token
    status, body = api(stack, f"/results/{iid}/review", {"verdict": "perhaps"}, user="ana")
    assert status == 400 and "verdict" in body["error"]


def test_every_object_ends_as_one_result_whatever_its_name(stack: dict, synthetic_root: Path) -> None:
    """No suffix list decides: upper-case suffixes, other formats and no suffix at all are inspected, what is
    not an image is REJECTED with the reason, and a folder marker is ignored (no result, nothing retried).
    Runs after the API test, which reads the newest widget image back as a PNG."""
    scratch = synthetic_root / "widget/test/scratch/001.png"
    good = synthetic_root / "widget/test/good/001.png"
    inspected = {
        "names/widget/IMG_0001.PNG": (scratch.read_bytes(), True),
        "names/widget/IMG_0002.JPG": (_encoded(scratch, "JPEG"), True),
        "names/widget/part.bmp": (_encoded(scratch, "BMP"), True),
        "names/widget/part.tif": (_encoded(good, "TIFF"), False),
        "names/widget/no-suffix": (scratch.read_bytes(), True),
        "names 2/widget/Prüfteil Nr 8 (ß) ü.JPG": (_encoded(scratch, "JPEG"), True),
    }
    rejected = {
        "names/widget/empty.PNG": (b"", "empty file"),
        "names/widget/readme.txt": (b"line 2 camera notes", "not an image"),
    }
    ids = {put(stack, key, body): key for key, (body, _) in {**inspected, **rejected}.items()}
    marker = "names/widget/"
    put(stack, marker, b"")
    items = wait_items(stack, list(ids))
    assert len(items) == len(ids)
    for iid, key in ids.items():
        item = items[iid]
        if key in inspected:
            assert item["status"] == "INSPECTED" and item["key"] == key, item
            assert item["is_anomaly"] == inspected[key][1], (key, item["normalized_score"])
        else:
            assert item["status"] == "REJECTED" and rejected[key][1] in item["reason"], item
    time.sleep(2)  # the marker's notification has been handled by now
    assert items_for_key(stack, marker) == []
    assert queue_depth(stack, "InspectionQueue") == 0 and queue_depth(stack, "InspectionDeadLetterQueue") == 0


def test_endpoint_down_retries_then_dead_letters_the_rest_inspected(
    stack: dict, synthetic_root: Path
) -> None:
    """An endpoint down for longer than the retries last (within the invocation, then after each backoff
    step): after MaxReceiveCount deliveries each image waits in the DLQ for `ivadas redrive`."""
    before = put(stack, "line9/widget/before.png", (synthetic_root / "widget/test/good/003.png").read_bytes())
    assert wait_items(stack, [before])[before]["status"] == "INSPECTED"
    admin(stack, "/admin/faults", {"mode": "error", "status": 503, "for_seconds": 300})
    try:
        stranded = [
            put(
                stack,
                f"line9/widget/during-{i}.png",
                (synthetic_root / "widget/test/good/000.png").read_bytes() + bytes([i]),
            )
            for i in range(3)
        ]  # fmt: skip  (distinct bytes: distinct objects)
        deadline = time.monotonic() + 150
        while queue_depth(stack, "InspectionDeadLetterQueue") < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        admin(stack, "/admin/faults", {"mode": "off"})
    assert queue_depth(stack, "InspectionDeadLetterQueue") == 3
    assert not wait_items(stack, stranded, timeout=1)  # no result: they wait in the DLQ for a redrive
    messages = boto3.client("sqs").receive_message(
        QueueUrl=stack["resources"]["InspectionDeadLetterQueue"],
        MaxNumberOfMessages=10,
        AttributeNames=["All"],
    )["Messages"]
    # each was delivered MaxReceiveCount times before SQS moved it (moto keeps the count; this receive adds 1)
    assert [int(m["Attributes"]["ApproximateReceiveCount"]) for m in messages] == [MAX_RECEIVE + 1] * 3
    keys = {unquote_plus(json.loads(m["Body"])["Records"][0]["s3"]["object"]["key"]) for m in messages}
    assert keys == {f"line9/widget/during-{i}.png" for i in range(3)}
