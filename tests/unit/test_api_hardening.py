"""What the API functions answer a browser: CORS only for the UI's origin, presigned links that expire within
minutes, and no internal error text (the template side is in test_template.py)."""

from __future__ import annotations

import importlib
import json
from urllib.parse import parse_qs, urlparse

import boto3
import pytest

from tests.unit.test_handlers import INBOX, TABLE, Context, api_event, aws  # noqa: F401

UI = "https://ui.example"


def _signed_in(event: dict, origin: str) -> dict:
    """An event as API Gateway passes it after the Cognito authorizer, from a browser at `origin`."""
    event["headers"]["origin"] = origin
    claims = {"sub": "u-1", "token_use": "id", "cognito:username": "ann", "cognito:groups": "ml-engineers"}
    event["requestContext"]["authorizer"] = {"claims": claims}
    return event


@pytest.fixture
def ui_origin() -> str:
    return UI


def _at_stage(event: dict, ui: str | None) -> dict:
    """The event as the API stage passes it: its uiOrigin variable (template: Api.Variables), or none."""
    event["stageVariables"] = {"uiOrigin": ui} if ui else None
    return event


def test_answers_allow_only_the_ui_origin(aws, ui_origin) -> None:  # noqa: F811
    predict = importlib.import_module("ivadas_functions.predict")

    def answer(origin: str, stage_origin: str | None) -> dict:
        event = api_event("POST", "/predict", body={"class_name": "bottle"})  # a 400: no endpoint needed
        return predict.handler(_at_stage(_signed_in(event, origin), stage_origin), Context())

    mine = answer(ui_origin, UI)
    assert mine["statusCode"] == 400
    assert mine["multiValueHeaders"]["Access-Control-Allow-Origin"] == [UI]
    assert "Access-Control-Allow-Origin" not in answer("https://elsewhere.example", UI)["multiValueHeaders"]
    # the next stage's origin, in the same execution environment: never the first one's
    assert (
        answer(ui_origin, "https://other-ui.example")["multiValueHeaders"].get("Access-Control-Allow-Origin")
        is None
    )
    assert (
        "Access-Control-Allow-Origin" not in answer(ui_origin, None)["multiValueHeaders"]
    )  # no stage origin: none


def test_presigned_links_expire_within_minutes(aws, ui_origin) -> None:  # noqa: F811
    results = importlib.import_module("ivadas_functions.results")
    boto3.resource("dynamodb").Table(TABLE).put_item(
        Item={
            "inspection_id": "id1",
            "class_name": "bottle",
            "status": "INSPECTED",
            "created_at": "2026-11-27T10:00:00.000Z",
            "bucket": INBOX,
            "key": "k.png",
            "heatmap_key": "heatmaps/bottle/id1.png",
        }  # fmt: skip
    )
    event = _signed_in(api_event("GET", "/results/id1", params={"inspection_id": "id1"}), ui_origin)
    answer = results.handler(event, Context())
    assert answer["statusCode"] == 200, answer["body"]
    body = json.loads(answer["body"])
    for name in ("image_url", "heatmap_url"):
        query = parse_qs(urlparse(body[name]).query)
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"], name  # SigV4: S3's supported signature
        assert int(query["X-Amz-Expires"][0]) == results.URL_SECONDS <= 300, name


@pytest.mark.parametrize("failure", ["TransientFailure", "RejectedImage"])
def test_classes_never_shows_why_an_endpoint_failed(aws, ui_origin, monkeypatch, caplog, failure) -> None:  # noqa: F811
    """A model down (5xx) or not deployed at all (SageMaker's 400 "Endpoint ... not found") is shown as
    unavailable, never a 500 for the whole list and never the cause."""
    results = importlib.import_module("ivadas_functions.results")
    detail = "endpoint ivadas-dev-patchcore answered 500 InternalFailure: Traceback in /opt/program/serve"

    def fail(endpoint: str, payload: dict) -> dict:
        raise getattr(results, failure)(detail)

    monkeypatch.setattr(results, "invoke_endpoint_json", fail)
    answer = results.handler(_signed_in(api_event("GET", "/classes"), ui_origin), Context())
    assert answer["statusCode"] == 200
    body = json.loads(answer["body"])
    assert all(m == {"available": False, "error": "unavailable"} for m in body["models"].values())
    assert "Traceback" not in answer["body"] and "InternalFailure" not in answer["body"]
    assert any(getattr(r, "error", None) == detail for r in caplog.records)  # logged for the operators


HANDLERS = {
    "predict": "ivadas_functions.predict",
    "results": "ivadas_functions.results",
    "models": "ivadas_functions.models_api",
}


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/predict", "[" * 1500 + "]" * 1500),
        ("/predict", '{"class_name": "bottle", "a": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        ("/predict", '{"class_name": "bottle", "n": ' + "9" * 4301 + "}"),
        ("/predict", '{"class_name": "bottle", "image_base64": "\\ud800"'),
        ("/models/patchcore-1/reject", '{"why": ' + "[" * 2000),
        ("/models/patchcore-1/reject", '{"why": ' + "7" * 5000 + "}"),
        ("/results/export", '{"class_name": ' + "{" * 2000),
        ("/results/export", '{"class_name": ' + "7" * 5000 + "}"),
    ],
    ids=["nested", "deep", "huge-int", "truncated", "models-nested", "models-int", "export-nested", "e-int"],
)
def test_json_a_parser_refuses_is_a_400_not_a_500(aws, route, body) -> None:  # noqa: F811
    """JSON nested past the parser's recursion or a number past Python's 4,300 digits is the client's."""
    handler = importlib.import_module(HANDLERS[route.split("/")[1]]).handler
    event = api_event("POST", route, params={"version": "patchcore-1"} if "models" in route else None)
    event["body"] = body
    answer = handler(event, Context())
    assert answer["statusCode"] == 400, answer["body"][:300]
    assert json.loads(answer["body"])["type"] == "bad_request"


def test_a_body_over_what_lambda_passes_is_a_413(aws) -> None:  # noqa: F811
    from ivadas_contract.limits import MAX_API_BODY_BYTES

    predict = importlib.import_module("ivadas_functions.predict")
    event = api_event("POST", "/predict")
    event["body"] = (
        '{"class_name": "bottle", "image_base64": "AAAA", "pad": "' + "x" * MAX_API_BODY_BYTES + '"}'
    )
    answer = predict.handler(event, Context())
    assert answer["statusCode"] == 413 and json.loads(answer["body"])["type"] == "payload_too_large"
