"""Lambda handlers on hand-built SQS and API Gateway events, with in-process moto for S3 and DynamoDB.

The endpoint call is the one boundary replaced here (moto's invoke_endpoint returns canned bytes); the real
model server is exercised by the end-to-end tests.
"""

from __future__ import annotations

import base64
import importlib
import json
import sys
from decimal import Decimal

import boto3
import pytest
from moto import mock_aws

from ivadas_contract import results_table, reviews, stats
from ivadas_contract.models import deployment_parameter
from tests.unit.test_retries import FakeClock

UI_ORIGIN = "http://ui.local"
INBOX, RESULTS, TABLE, IDEM, STATS, REVIEWS = (
    "inbox-b",
    "results-b",
    "results-t",
    "idem-t",
    "stats-t",
    "rev-t",
)


class Context:
    function_name = "test"
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "RESULTS_TABLE": TABLE,
        "RESULTS_BUCKET": RESULTS,
        "INBOX_BUCKET": INBOX,
        "IDEMPOTENCY_TABLE": IDEM,
        "STATS_TABLE": STATS,
        "REVIEWS_TABLE": REVIEWS,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "MAX_IMAGE_BYTES": "1000",
        "PATCHCORE_ENDPOINT": "ivadas-local-patchcore",
        "SOFTPATCH_ENDPOINT": "ivadas-local-softpatch",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=INBOX)
        s3.create_bucket(Bucket=RESULTS)
        ddb = boto3.client("dynamodb")
        ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST", **results_table.SCHEMA)
        ddb.create_table(TableName=STATS, BillingMode="PAY_PER_REQUEST", **stats.SCHEMA)
        ddb.create_table(TableName=REVIEWS, BillingMode="PAY_PER_REQUEST", **reviews.SCHEMA)
        ddb.create_table(
            TableName=IDEM,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        )
        for name in [m for m in sys.modules if m.split(".")[0] == "ivadas_functions"]:
            sys.modules.pop(name)  # handlers read their settings when imported
        aws_plumbing = importlib.import_module("ivadas_functions.aws")
        aws_plumbing._client.cache_clear()
        yield aws_plumbing


def sqs_event(*bodies: dict) -> dict:
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"r{i}",
                "body": json.dumps(b),
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
                "awsRegion": "us-east-1",
            }
            for i, b in enumerate(bodies)
        ]
    }


def s3_body(key: str, etag: str) -> dict:
    return {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": INBOX}, "object": {"key": key, "eTag": etag}},
            }
        ]
    }


def put(key: str, body: bytes) -> str:
    return boto3.client("s3").put_object(Bucket=INBOX, Key=key, Body=body)["ETag"].strip('"')


def items() -> list[dict]:
    return boto3.resource("dynamodb").Table(TABLE).scan()["Items"]


def fake_answer(aws_plumbing, anomalous: bool = True):
    png = base64.b64encode(b"\x89PNG fake heatmap").decode()
    result = {
        "model": "patchcore",
        "model_version": "patchcore-x",
        "anomaly_score": 3.5,
        "normalized_score": 0.8,
        "threshold": 2.0,
        "is_anomaly": anomalous,
        "regions": [{"x": 1, "y": 2, "width": 3, "height": 4}],
        "heatmap_png_base64": png,
        "image_width": 10,
        "image_height": 10,
    }
    return aws_plumbing.EndpointAnswer(result, 12.5)


def test_worker_skips_test_events_unquotes_keys_and_writes_results(aws, monkeypatch) -> None:
    worker = importlib.import_module("ivadas_functions.worker")
    calls = []

    def invoke(endpoint, class_name, image, return_heatmap=True, explain=False):
        calls.append((endpoint, class_name, image))
        return fake_answer(aws)

    monkeypatch.setattr(worker.inspector, "invoke_endpoint", invoke)
    etag = put("line 1/bottle/a b+c.png", b"png-bytes")
    event = sqs_event({"Event": "s3:TestEvent"}, s3_body("line+1/bottle/a+b%2Bc.png", etag))
    out = worker.handler(event, Context())
    assert out == {"batchItemFailures": []}
    assert calls == [("ivadas-local-patchcore", "bottle", b"png-bytes")]
    (item,) = items()
    assert (
        item["status"] == "INSPECTED"
        and item["key"] == "line 1/bottle/a b+c.png"
        and item["line"] == "line 1"
    )
    assert item["anomaly_class"] == "bottle" and item["is_anomaly"] is True
    heatmap = boto3.client("s3").get_object(Bucket=RESULTS, Key=item["heatmap_key"])["Body"].read()
    assert heatmap.startswith(b"\x89PNG")
    # the same message again: idempotent, no second endpoint call, no second item
    assert worker.handler(event, Context()) == {"batchItemFailures": []}
    assert len(calls) == 1 and len(items()) == 1


def test_worker_rejects_without_retry(aws, monkeypatch) -> None:
    worker = importlib.import_module("ivadas_functions.worker")

    def refuse(endpoint, class_name, image, return_heatmap=True, explain=False):
        raise aws.RejectedImage(f"class '{class_name}' is not in this patchcore model")

    monkeypatch.setattr(worker.inspector, "invoke_endpoint", refuse)
    bodies = [
        s3_body("l/bottle/empty.png", put("l/bottle/empty.png", b"")),
        s3_body("l/bottle/big.png", put("l/bottle/big.png", b"x" * 2000)),
        s3_body("noclass.png", put("noclass.png", b"abc")),
        s3_body("l/capsule/x.png", put("l/capsule/x.png", b"abc")),
    ]
    assert worker.handler(sqs_event(*bodies), Context()) == {"batchItemFailures": []}
    reasons = {i["key"]: i["reason"] for i in items()}
    assert all(i["status"] == "REJECTED" for i in items())
    assert (
        "empty" in reasons["l/bottle/empty.png"] and "over the 1000 byte limit" in reasons["l/bottle/big.png"]
    )
    assert "no class" in reasons["noclass.png"] and "capsule" in reasons["l/capsule/x.png"]


def test_worker_fails_only_the_transient_record(aws, monkeypatch) -> None:
    worker = importlib.import_module("ivadas_functions.worker")

    def flaky(endpoint, class_name, image, return_heatmap=True, explain=False):
        if image == b"down":
            raise aws.TransientFailure("endpoint unreachable")
        return fake_answer(aws, anomalous=False)

    monkeypatch.setattr(worker.inspector, "invoke_endpoint", flaky)
    monkeypatch.setattr(worker.retries, "clock", FakeClock())  # its retries within the invocation: no waiting
    ok, bad = (
        s3_body("l/bottle/ok.png", put("l/bottle/ok.png", b"fine")),
        s3_body("l/bottle/down.png", put("l/bottle/down.png", b"down")),
    )
    out = worker.handler(sqs_event(ok, bad), Context())
    assert out == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert [i["key"] for i in items()] == ["l/bottle/ok.png"]
    assert "anomaly_class" not in items()[0]


def claims_of(user: str, groups: str = "ml-engineers") -> dict:
    """requestContext.authorizer.claims as API Gateway's Cognito authorizer passes them (all strings)."""
    return {"sub": f"sub-of-{user}", "cognito:username": user, "cognito:groups": groups, "token_use": "id",
            "email": f"{user}@example.com", "exp": "Wed Dec 02 11:00:00 UTC 2026"}  # fmt: skip


def api_event(
    method: str, path: str, body: dict | None = None, query: dict | None = None, params=None,
    claims: dict | None = None, signed_in: bool = True,
) -> dict:  # fmt: skip
    """A REST proxy event; signed in as ML engineer "ana" unless `claims` says who or `signed_in` is False."""
    headers = {"content-type": "application/json", "origin": UI_ORIGIN}
    context = {"resourcePath": path, "httpMethod": method, "stage": "test", "requestId": "r"}
    if signed_in:
        context["authorizer"] = {"claims": claims or claims_of("ana")}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": None,
        "pathParameters": params,
        "stageVariables": {
            "uiOrigin": UI_ORIGIN
        },  # the stage names the UI's origin (template: Api.Variables)
        "requestContext": context,
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def test_predict_validates_and_compares_both_models(aws, monkeypatch) -> None:
    predict = importlib.import_module("ivadas_functions.predict")
    seen = []

    def invoke(endpoint, class_name, image, return_heatmap=True, explain=False):
        seen.append(endpoint)
        if class_name == "nope":
            raise aws.RejectedImage("class 'nope' is not in this model")
        return fake_answer(aws)

    monkeypatch.setattr(predict, "invoke_endpoint", invoke)
    image = base64.b64encode(b"img").decode()
    ok = predict.handler(
        api_event("POST", "/predict", {"class_name": "bottle", "image_base64": image, "model": "both"}),
        Context(),
    )
    body = json.loads(ok["body"])
    assert ok["statusCode"] == 200 and set(body) >= {"patchcore", "softpatch", "latency_ms"}
    assert sorted(seen) == ["ivadas-local-patchcore", "ivadas-local-softpatch"]
    headers = {k.lower(): v for k, v in (ok.get("multiValueHeaders") or ok.get("headers") or {}).items()}
    assert headers["access-control-allow-origin"] in (UI_ORIGIN, [UI_ORIGIN])
    cases = [
        ({"image_base64": image}, 400),
        ({"class_name": "b", "image_base64": "%%%"}, 400),
        ({"class_name": "b", "image_base64": image, "model": "resnet"}, 400),
        ({"class_name": "b", "image_base64": base64.b64encode(b"x" * 2000).decode()}, 413),
        ({"class_name": "nope", "image_base64": image}, 422),
    ]
    for payload, status in cases:
        resp = predict.handler(api_event("POST", "/predict", payload), Context())
        assert resp["statusCode"] == status, (payload, resp)
        assert "error" in json.loads(resp["body"]) or "message" in json.loads(resp["body"])


def test_predict_passes_explanations_through_bounded(aws, monkeypatch) -> None:
    predict = importlib.import_module("ivadas_functions.predict")
    asked = []
    crop = base64.b64encode(b"p" * 3000).decode()
    explained = {"region": 0, "nearest_good": {"image_id": "train/good/001.png", "crop_png_base64": crop}}

    def invoke(endpoint, class_name, image, return_heatmap=True, explain=False):
        asked.append(explain)
        answer = fake_answer(aws)
        count = 1 if class_name == "bottle" else 30  # 30 crops of 4 KB: over the bound
        answer.result["explanations"] = [explained] * count
        return answer

    monkeypatch.setattr(predict, "invoke_endpoint", invoke)
    image = base64.b64encode(b"img").decode()

    def ask(**extra) -> dict:
        event = api_event("POST", "/predict", {"class_name": "bottle", "image_base64": image, **extra})
        return json.loads(predict.handler(event, Context())["body"])

    assert ask()["explanations"] == [explained] and asked == [True]  # on by default
    ask(explain=False)
    assert asked[-1] is False
    big = ask(class_name="capsule")
    assert len(big["explanations"]) == 30 and "size limit" in big["explanations_note"]
    assert {e["nearest_good"]["crop_png_base64"] for e in big["explanations"]} == {None}
    assert big["explanations"][0]["nearest_good"]["image_id"] == "train/good/001.png"


def test_predict_retries_a_blip_for_a_few_seconds_then_answers_503(aws, monkeypatch) -> None:
    predict = importlib.import_module("ivadas_functions.predict")
    clock = FakeClock()
    monkeypatch.setattr(predict.retries, "clock", clock)
    calls = []

    def invoke(endpoint, class_name, image, return_heatmap=True, explain=False):
        calls.append(clock.now)
        if class_name == "down" or len(calls) == 1:
            raise aws.TransientFailure("endpoint answered 503 ServiceUnavailable")
        return fake_answer(aws)

    monkeypatch.setattr(predict, "invoke_endpoint", invoke)
    image = base64.b64encode(b"img").decode()
    ok = predict.handler(
        api_event("POST", "/predict", {"class_name": "bottle", "image_base64": image}), Context()
    )
    assert ok["statusCode"] == 200 and len(calls) == 2  # the blip: one more try, a quarter second later
    calls.clear()
    down = predict.handler(
        api_event("POST", "/predict", {"class_name": "down", "image_base64": image}), Context()
    )
    assert down["statusCode"] == 503 and json.loads(down["body"])["type"] == "unavailable"
    assert len(calls) > 1 and calls[-1] - calls[0] <= predict.RETRY_S  # retried, for a few seconds at most


def test_results_lists_newest_first_and_pages(aws) -> None:
    results = importlib.import_module("ivadas_functions.results")
    table = boto3.resource("dynamodb").Table(TABLE)
    for i in range(5):
        table.put_item(
            Item={
                "inspection_id": f"id{i}",
                "class_name": "bottle",
                "status": "INSPECTED",
                "created_at": f"2026-11-27T10:00:0{i}.000Z",
                "bucket": INBOX,
                "key": f"k{i}.png",
            }
        )
    first = json.loads(
        results.handler(
            api_event("GET", "/results", query={"class_name": "bottle", "limit": "3"}), Context()
        )["body"]
    )
    assert [i["inspection_id"] for i in first["items"]] == ["id4", "id3", "id2"] and first["next_token"]
    query = {"class_name": "bottle", "limit": "3", "next_token": first["next_token"]}
    second = json.loads(results.handler(api_event("GET", "/results", query=query), Context())["body"])
    assert [i["inspection_id"] for i in second["items"]] == ["id1", "id0"]
    one = results.handler(api_event("GET", "/results/id2", params={"inspection_id": "id2"}), Context())
    assert one["statusCode"] == 200 and "image_url" in json.loads(one["body"])
    missing = results.handler(api_event("GET", "/results/zzz", params={"inspection_id": "zzz"}), Context())
    assert missing["statusCode"] == 404
    assert json.loads(missing["body"]) == {"error": "no inspection zzz", "type": "not_found"}


def test_stats_counters_are_kept_as_results_are_written(aws, monkeypatch) -> None:
    """Every stored result adds to its class/hour/line/model slot; GET /stats sums the slots."""
    worker = importlib.import_module("ivadas_functions.worker")
    verdicts = iter([True, False, False])
    monkeypatch.setattr(
        worker.inspector, "invoke_endpoint", lambda *a, **k: fake_answer(aws, anomalous=next(verdicts))
    )
    bodies = [s3_body(k, put(k, b"img")) for k in ("l1/bottle/a.png", "l1/bottle/b.png", "l2/bottle/c.png")]
    bodies += [s3_body("l1/bottle/e.png", put("l1/bottle/e.png", b"")), s3_body("x.png", put("x.png", b"a"))]
    assert worker.handler(sqs_event(*bodies), Context()) == {"batchItemFailures": []}
    slots = boto3.resource("dynamodb").Table(STATS).scan()["Items"]
    lines = {s["slot"].split("#", 1)[1] for s in slots if s["class_name"] == "bottle"}
    assert lines == {"l1#patchcore", "l2#patchcore"}
    results = importlib.import_module("ivadas_functions.results")
    view = json.loads(
        results.handler(api_event("GET", "/stats", query={"class_name": "bottle"}), Context())["body"]
    )
    total = view["total"]
    assert total["inspected"] == 3 and total["anomalies"] == 1
    assert total["anomaly_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert total["rejected_by_reason"] == {"empty": 1} and total["latency_ms"]["p50"] == 25.0
    by_line = {g["line"]: g for g in view["groups"]}
    assert by_line["l1"]["inspected"] == 2 and by_line["l2"]["inspected"] == 1
    one_line = results.handler(
        api_event("GET", "/stats", query={"class_name": "bottle", "line": "l2"}), Context()
    )
    assert json.loads(one_line["body"])["total"]["inspected"] == 1
    everything = json.loads(results.handler(api_event("GET", "/stats"), Context())["body"])["total"]
    assert everything["rejected_by_reason"] == {"empty": 1, "no_class": 1}
    later = {"since": "2999-01-01T00:00:00Z"}
    assert json.loads(results.handler(api_event("GET", "/stats", query=later), Context())["body"])["total"][
        "inspected"] == 0  # fmt: skip


def test_drift_flags_a_class_whose_hour_leaves_its_recent_rate(aws) -> None:
    from datetime import UTC, datetime, timedelta

    slots = boto3.resource("dynamodb").Table(STATS)
    now = datetime.now(UTC)
    for h in range(1, 49):  # two days of 100 images an hour at a 2 % anomaly rate, both classes
        hour = (now - timedelta(hours=h)).strftime("%Y-%m-%dT%H")
        for class_name in ("steady", "moved"):
            anomalies = 40 if (class_name == "moved" and h == 1) else 2  # the last hour: a camera moved
            slot = stats.slot(hour, "l1", "patchcore")
            slots.put_item(
                Item={"class_name": class_name, "slot": slot, "inspected": 100, "anomalies": anomalies}
            )
        slots.put_item(
            Item={"class_name": "sparse", "slot": stats.slot(hour, "l1", "patchcore"), "inspected": 1}
        )
    drift = importlib.import_module("ivadas_functions.drift")
    found = drift.handler({}, Context())["classes"]
    assert found["moved"]["drifting"] and found["moved"]["z"] > 4 and found["moved"]["rate"] == 0.4
    assert not found["steady"]["drifting"] and abs(found["steady"]["z"]) < 1
    assert "sparse" not in found  # under DriftMinImages in the hour: not judged


def _models_api_with_one_version(monkeypatch):  # noqa: ANN001, ANN202
    """The Models API over a registry of one pending version, patchcore-1."""
    sm = boto3.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName="ivadas-test-patchcore")
    container = {"Image": "img", "ModelDataUrl": "s3://m/patchcore/model.tar.gz"}
    sm.create_model_package(
        ModelPackageGroupName="ivadas-test-patchcore",
        InferenceSpecification={
            "Containers": [container],
            "SupportedContentTypes": ["image/png"],
            "SupportedResponseMIMETypes": ["application/json"],
        },  # fmt: skip
        CustomerMetadataProperties={"classes": "bottle", "mean_image_auroc": "0.9950"},
        ModelApprovalStatus="PendingManualApproval",
    )
    monkeypatch.setenv("STAGE", "test")
    api = importlib.import_module("ivadas_functions.models_api")

    def post(path: str, body: dict, **who) -> tuple[int, dict]:  # noqa: ANN003
        params = {"version": path.split("/")[2]}
        resp = api.handler(api_event("POST", path, body, params=params, **who), Context())
        return resp["statusCode"], json.loads(resp["body"])

    return api, post


def test_models_api_decisions_need_an_ml_engineer_and_record_who(aws, monkeypatch) -> None:
    api, post = _models_api_with_one_version(monkeypatch)
    operator = claims_of("oli", "operators")
    listed = json.loads(api.handler(api_event("GET", "/models", claims=operator), Context())["body"])
    (version,) = listed["models"]["patchcore"]["versions"]
    assert version["version"] == "patchcore-1" and version["status"] == "PendingManualApproval"
    assert version["classes"] == ["bottle"] and version["metrics"]["image_auroc"] == 0.995
    assert listed["can_decide"] is False and listed["models"]["softpatch"]["versions"] == []

    status, body = post("/models/patchcore-1/approve", {"note": "ok"}, claims=operator)
    assert status == 403 and body["type"] == "forbidden" and "ml-engineers" in body["error"]
    assert post("/models/patchcore-1/reject", {"why": "no"}, claims=operator)[0] == 403
    assert post("/models/patchcore-1/approve", {}, signed_in=False)[0] == 401
    assert post("/models/patchcore-1/reject", {})[0] == 400
    assert post("/models/patchcore-9/approve", {})[0] == 404
    status, body = post("/models/patchcore-1/approve", {"note": "line trial passed"})
    assert status == 200 and body["status"] == "Approved" and body["decided_by"] == "cognito:ana"
    assert body["decided_by_verified"] is True and body["decision_note"] == "line trial passed"
    deployed = {"Name": deployment_parameter("test", "patchcore"), "Type": "String"}
    boto3.client("ssm").put_parameter(**deployed, Value=json.dumps({"version": "patchcore-1"}))
    status, body = post("/models/patchcore-1/reject", {"why": "recall dropped"})
    assert status == 409 and body["type"] == "conflict" and "is deployed" in body["error"]
    status, body = post("/models/patchcore-deployed/approve", {})  # the kind, not the words, sets the status
    assert status == 404 and body["type"] == "not_found"


def test_a_decision_is_final_until_a_recorded_reopen(aws, monkeypatch) -> None:  # noqa: ANN001
    _, post = _models_api_with_one_version(monkeypatch)
    status, rejected = post("/models/patchcore-1/reject", {"why": "misses scratches"})
    assert status == 200 and rejected["status"] == "Rejected"
    status, body = post("/models/patchcore-1/approve", {"note": "looks fine"})
    assert status == 409 and body["type"] == "conflict" and "re-open" in body["error"]
    status, again = post("/models/patchcore-1/reject", {"why": "still misses them"})  # a retry: no change
    assert status == 200 and again == rejected
    assert post("/models/patchcore-1/reopen", {})[0] == 400  # a re-open needs its reason
    assert post("/models/patchcore-1/reopen", {"why": "x"}, claims=claims_of("oli", "operators"))[0] == 403
    status, reopened = post("/models/patchcore-1/reopen", {"why": "the scratch set was mislabelled"})
    assert status == 200 and reopened["status"] == "PendingManualApproval"
    assert reopened["decided_by"] is None and reopened["decision_note"] is None
    assert post("/models/patchcore-1/reopen", {"why": "again"})[0] == 409  # nothing to re-open
    status, approved = post("/models/patchcore-1/approve", {"note": "relabelled set passes"})
    assert status == 200 and approved["status"] == "Approved"
    history = [(h["decision"], h["by"], h.get("note")) for h in approved["history"]]
    assert history == [
        ("Rejected", "cognito:ana", "misses scratches"),
        ("Reopened", "cognito:ana", "the scratch set was mislabelled"),
        ("Approved", "cognito:ana", "relabelled set passes"),
    ]
    assert all(h["at"].endswith("Z") for h in approved["history"])
    for i in range(30):  # the history stays within a metadata value, the newest kept
        post("/models/patchcore-1/reopen", {"why": "w" * 200})
        post("/models/patchcore-1/approve", {"note": f"n{i}"})
    status, body = post("/models/patchcore-1/approve", {})
    assert status == 200 and body["history"][-1]["note"] == "n29" and len(body["history"]) < 20


def test_reviews_keep_history_and_never_touch_the_model_fields(aws) -> None:
    results = importlib.import_module("ivadas_functions.results")
    model_fields = {"inspection_id": "i1", "class_name": "bottle", "status": "INSPECTED", "is_anomaly": True}
    model_fields.update(normalized_score=Decimal("0.7"), model_version="patchcore-x", bucket=INBOX)
    model_fields.update(created_at="2026-12-02T10:00:00.000Z", key="l1/bottle/a.png")
    table = boto3.resource("dynamodb").Table(TABLE)
    table.put_item(Item=model_fields)
    table.put_item(Item={**model_fields, "inspection_id": "r1", "status": "REJECTED"})

    def post(iid: str, body, who: str = "ana", groups: str = "operators") -> tuple[int, dict]:  # noqa: ANN001
        event = api_event("POST", f"/results/{iid}/review", body, params={"inspection_id": iid},
                          claims=claims_of(who, groups))  # fmt: skip
        resp = results.handler(event, Context())
        return resp["statusCode"], json.loads(resp["body"])

    status, first = post("i1", {"verdict": "good", "reviewer": "mallory", "note": "reflection"})
    assert status == 200 and first["review"]["agrees"] is False
    assert first["review"]["reviewer_verified"] is True and "mallory" not in json.dumps(first)
    assert first["review"]["reviewer"] == "ana" and first["review"]["reviewer_sub"] == "sub-of-ana"
    status, second = post("i1", {"verdict": "defect", "defect_type": "crack"}, "ben", "ml-engineers")
    assert status == 200 and second["reviews"] == 2
    item = table.get_item(Key={"inspection_id": "i1"})["Item"]
    assert {k: item[k] for k in model_fields} == model_fields  # the model's verdict is untouched
    assert item["review"]["verdict"] == "defect" and item["review"]["reviewer"] == "ben"
    one = json.loads(
        results.handler(api_event("GET", "/results/i1", params={"inspection_id": "i1"}), Context())["body"]
    )
    assert [r["reviewer"] for r in one["reviews"]] == ["ana", "ben"] and one["reviews"][0][
        "note"
    ] == "reflection"
    assert post("i1", {"verdict": "maybe"})[0] == 400
    assert post("i1", {"verdict": "good"}, "eve", "visitors")[0] == 403  # a group that may not review
    assert post("nope", {"verdict": "good"})[0] == 404
    assert post("r1", {"verdict": "good"})[0] == 409


def _explained(aws_plumbing, anomalous: bool, crops: list[str | None]):  # noqa: ANN001, ANN202
    """An endpoint answer with the model server's explanations (none for a good image)."""
    answer = fake_answer(aws_plumbing, anomalous)
    answer.result["explanations"] = [
        {"region": n, "peak": {"x": 5, "y": 5}, "peak_score": 3.0, "row": 1, "col": 1,
         "patch_box": {"x": 0, "y": 0, "width": 8, "height": 8},
         "nearest_good": {"bank_index": 7, "distance": 3.1, "image_id": f"train/good/00{n}.png", "row": 2,
                          "col": 2, "box": {"x": 1, "y": 1, "width": 8, "height": 8}, "crop_png_base64": crop,
                          "crop_width": 8, "crop_height": 8}}
        for n, crop in enumerate(crops if anomalous else [])
    ]  # fmt: skip
    return answer


def test_worker_stores_a_flagged_results_explanations_with_crops_as_objects(aws, monkeypatch) -> None:
    worker = importlib.import_module("ivadas_functions.worker")
    results = importlib.import_module("ivadas_functions.results")
    asked = []
    crop = base64.b64encode(b"\x89PNG nearest good patch").decode()
    too_big = base64.b64encode(b"x" * (64 * 1024)).decode()

    def invoke(endpoint, class_name, image, return_heatmap=True, explain=False):
        asked.append(explain)
        return _explained(aws, image == b"flagged", [crop, too_big, "not base64!"] * 3)

    monkeypatch.setattr(worker.inspector, "invoke_endpoint", invoke)
    bodies = [s3_body(f"l/bottle/{n}.png", put(f"l/bottle/{n}.png", n.encode())) for n in ("flagged", "fine")]
    assert worker.handler(sqs_event(*bodies), Context()) == {"batchItemFailures": []}
    assert asked == [True, True]  # a good image's answer is [] at no cost: asking is free
    stored = {i["key"]: i for i in items()}
    assert stored["l/bottle/fine.png"]["explanations"] == []
    kept = stored["l/bottle/flagged.png"]["explanations"]
    assert len(kept) == 5  # bounded, strongest first as sent
    keys = [e["nearest_good"].get("crop_key") for e in kept]  # no key where no crop was kept
    assert keys[0].startswith("heatmaps/bottle/") and keys[1:3] == [None, None] and keys[3]
    assert all("crop_png_base64" not in e["nearest_good"] for e in kept)
    s3 = boto3.client("s3")
    assert s3.get_object(Bucket=RESULTS, Key=keys[0])["Body"].read() == b"\x89PNG nearest good patch"
    doc = s3.get_object(Bucket=RESULTS, Key=stored["l/bottle/flagged.png"]["result_key"])["Body"].read()
    assert crop not in doc.decode()  # the result JSON keeps keys, not bytes
    iid = stored["l/bottle/flagged.png"]["inspection_id"]
    shown = json.loads(results.handler(api_event("GET", f"/results/{iid}"), Context())["body"])
    first = shown["explanations"][0]["nearest_good"]
    assert first["image_id"] == "train/good/000.png" and "X-Amz-Signature" in first["crop_url"]
    assert "crop_url" not in shown["explanations"][1]["nearest_good"]
