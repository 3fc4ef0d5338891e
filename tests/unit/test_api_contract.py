"""The published contract (openapi/) against what serves it: the template's API events, the routes the
powertools resolvers register, the model server's Starlette routes, errors.TYPES and the limits; and the one
error shape from each layer that answers on its own (Lambda resolvers, the local shim, the model server)."""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import math
import sys
from pathlib import Path

import pytest
import yaml

from infra.local.authorizer import API_KEY, COGNITO, route_auth
from infra.template import Stack, load_template
from ivadas_contract import errors, reviews
from ivadas_contract.limits import EVENT_ENVELOPE_BYTES, MAX_API_BODY_BYTES, MAX_PREDICT_IMAGE_BYTES
from ivadas_contract.models import MODELS
from ivadas_functions import request_checks

ROOT = Path(__file__).resolve().parents[2]
API = yaml.safe_load((ROOT / "openapi/api.yaml").read_text())
SERVER = yaml.safe_load((ROOT / "openapi/model_server.yaml").read_text())
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
CLAIMS = {"token_use": "id", "sub": "u-1", "cognito:username": "ana", "cognito:groups": "ml-engineers"}


def _documented(doc: dict) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item if m in METHODS}


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The four API modules, imported with the settings template.yaml gives them (no AWS call is made)."""
    for name in ("RESULTS_TABLE", "STATS_TABLE", "REVIEWS_TABLE", "RESULTS_BUCKET", "INBOX_BUCKET",
                 "IDEMPOTENCY_TABLE", "PATCHCORE_ENDPOINT", "SOFTPATCH_ENDPOINT"):  # fmt: skip
        monkeypatch.setenv(name, name.lower())
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    for name in [m for m in sys.modules if m.split(".")[0] == "ivadas_functions"]:
        sys.modules.pop(name)
    names = ("predict", "results", "models_api", "deployments_api")
    return {n: importlib.import_module(f"ivadas_functions.{n}") for n in names}


def _resolver_routes(module) -> set[tuple[str, str]]:  # noqa: ANN001
    app = module.app
    routes = [*app._static_routes, *app._dynamic_routes]  # noqa: SLF001 - no public route table
    return {(r.method, r.path.replace("<", "{").replace(">", "}")) for r in routes}


def test_api_document_lists_exactly_the_template_and_resolver_routes(handlers: dict) -> None:
    template = {(method, path) for method, path, _ in Stack(load_template()).api_routes()}
    served = set().union(*(_resolver_routes(m) for m in handlers.values()))
    assert _documented(API) == template
    assert served == template


def test_each_operation_documents_the_gate_the_template_puts_on_it() -> None:
    scheme = {COGNITO: [{"cognito": []}], API_KEY: [{"apiKey": []}]}
    for (method, path), kind in route_auth(Stack(load_template())).items():
        op = API["paths"][path][method.lower()]
        assert op.get("security", API["security"]) == scheme[kind], (method, path)
        assert "401" in op["responses"] or kind == API_KEY, (method, path)


def test_model_server_document_lists_exactly_its_starlette_routes() -> None:
    from model_server.server.app import CONTRACT_PATH, create_app
    from model_server.server.config import ServerConfig

    app = create_app(ServerConfig(endpoints={"e": "/nonexistent"}))  # no lifespan: nothing loads
    served = {(m, r.path) for r in app.routes for m in r.methods - {"HEAD"} if r.path != CONTRACT_PATH}
    assert _documented(SERVER) == served


def test_error_types_are_the_documented_enum() -> None:
    for doc in (API, SERVER):
        schema = doc["components"]["schemas"]["Error"]
        assert schema["properties"]["type"]["enum"] == list(errors.TYPES)
        assert schema["required"] == ["error", "type"]


def test_documented_limits_are_the_code_limits(handlers: dict) -> None:
    from model_server.server.protocol import MAX_CUSTOM_ATTRIBUTES

    schemas, params = API["components"]["schemas"], API["components"]["parameters"]
    assert schemas["PredictRequest"]["properties"]["image_base64"]["maxLength"] == 4 * math.ceil(
        MAX_PREDICT_IMAGE_BYTES / 3
    )
    description = API["components"]["responses"]["PayloadTooLarge"]["description"]
    assert f"{MAX_API_BODY_BYTES:,}" in description and f"{MAX_PREDICT_IMAGE_BYTES:,}" in description
    assert schemas["PredictRequest"]["properties"]["model"]["enum"] == [*MODELS, "both"]
    review = schemas["ReviewRequest"]["properties"]
    assert review["verdict"]["enum"] == list(reviews.VERDICTS)
    assert {k: review[k]["maxLength"] for k in reviews.MAX_TEXT} == reviews.MAX_TEXT
    limit = params["Limit"]["schema"]
    assert (limit["minimum"], limit["maximum"]) == (request_checks.MIN_PAGE, request_checks.MAX_PAGE)
    assert limit["default"] == request_checks.DEFAULT_PAGE
    custom = SERVER["components"]["parameters"]["CustomAttributes"]["schema"]
    assert custom["maxLength"] == MAX_CUSTOM_ATTRIBUTES


# ------------------------------------------------------------------------------------ the error shape


def _event(method: str, path: str, body: str | None, resource: str | None = None) -> dict:
    return {
        "resource": resource or path, "path": path, "httpMethod": method,
        "headers": {"content-type": "application/json"}, "multiValueHeaders": {},
        "queryStringParameters": None, "multiValueQueryStringParameters": None, "pathParameters": None,
        "stageVariables": None, "body": body, "isBase64Encoded": False,
        "requestContext": {"resourcePath": resource or path, "httpMethod": method, "stage": "test",
                           "requestId": "r", "authorizer": {"claims": CLAIMS}},
    }  # fmt: skip


class _Context:
    function_name, memory_limit_in_mb, aws_request_id = "test", 128, "req-1"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def _answer(module, event: dict) -> tuple[int, dict, dict]:  # noqa: ANN001
    resp = module.handler(event, _Context())
    return resp["statusCode"], json.loads(resp["body"]), resp.get("multiValueHeaders") or resp["headers"]


def _shape(status: int, body: dict, kind: str) -> None:
    assert set(body) == {"error", "type"} and body["type"] == kind and errors.TYPES[kind] == status, body


def test_a_body_that_is_not_json_is_400_bad_request(handlers: dict) -> None:
    status, body, _ = _answer(handlers["predict"], _event("POST", "/predict", "{not json"))
    _shape(status, body, "bad_request")
    status, body, _ = _answer(handlers["models_api"], _event("POST", "/models/patchcore-1/reject", "]["))
    _shape(status, body, "bad_request")


def test_unknown_routes_are_404_and_other_methods_405(handlers: dict) -> None:
    status, body, _ = _answer(handlers["results"], _event("GET", "/nope", None))
    _shape(status, body, "not_found")
    status, body, headers = _answer(handlers["results"], _event("DELETE", "/results", None))
    _shape(status, body, "method_not_allowed")
    assert "GET" in str(headers.get("Allow"))


def test_powertools_errors_keep_their_status_in_the_shape(handlers: dict) -> None:
    status, body, _ = _answer(handlers["results"], _event("GET", "/review-queue", None))  # BadRequestError
    _shape(status, body, "bad_request")
    unsigned = _event("GET", "/results", None)
    del unsigned["requestContext"]["authorizer"]
    status, body, _ = _answer(handlers["results"], unsigned)  # identity's ServiceError(401)
    _shape(status, body, "unauthorized")


def test_an_unexpected_exception_is_500_internal_logged_never_in_the_body(
    handlers: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(body):  # noqa: ANN001, ANN202
        raise RuntimeError("secret detail of a bug")

    monkeypatch.setattr(handlers["predict"], "_parse", broken)
    log = io.StringIO()
    monkeypatch.setattr(handlers["predict"].logger.registered_handler, "stream", log)
    body_text = json.dumps({"class_name": "w", "image_base64": "AAAA"})
    status, body, _ = _answer(handlers["predict"], _event("POST", "/predict", body_text))
    _shape(status, body, "internal")
    assert "secret" not in body["error"] and "Traceback" not in body["error"]
    logged = log.getvalue()
    assert "secret detail of a bug" in logged and "Traceback" in logged


def test_error_response_defaults_the_kind_to_the_status_and_takes_one(handlers: dict) -> None:
    from ivadas_functions.api_errors import error_response

    old_call = error_response(409, "busy")
    assert old_call.status_code == 409 and old_call.body == {"error": "busy", "type": "conflict"}
    assert error_response(400, "x", "invalid_image").body == {"error": "x", "type": "invalid_image"}


def _asgi(app, method: str, path: str, body: bytes = b"", headers: dict | None = None):  # noqa: ANN001, ANN201
    """(status, headers, body) of one request to an ASGI app; an exception the app re-raises after its
    answer (Starlette's error middleware does) is swallowed, as a server would log it."""
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http", "headers": raw,
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    try:
        asyncio.run(app(scope, receive, send))
    except RuntimeError as exc:
        if "broken on purpose" not in str(exc):
            raise
    start = next(m for m in sent if m["type"] == "http.response.start")
    out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, out


def _doc(raw: bytes) -> dict:
    return json.loads(raw)


def test_the_model_server_answers_every_error_in_the_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    from model_server.server import app as server_app
    from model_server.server.config import ServerConfig

    async def broken(self, request):  # noqa: ANN001, ANN202
        raise RuntimeError("broken on purpose: secret")

    monkeypatch.setattr(server_app.Server, "ping", broken)
    app = server_app.create_app(ServerConfig(endpoints={"e": "/nonexistent"}))
    status, _, body = _asgi(app, "GET", "/nope")
    _shape(status, {k: v for k, v in _doc(body).items() if k != "message"}, "not_found")
    status, headers, body = _asgi(app, "GET", "/invocations")
    _shape(status, {k: v for k, v in _doc(body).items() if k != "message"}, "method_not_allowed")
    assert headers["allow"] == "POST"
    status, _, body = _asgi(app, "GET", "/ping")
    _shape(status, {k: v for k, v in _doc(body).items() if k != "message"}, "internal")
    assert "secret" not in body.decode()
    status, _, body = _asgi(app, "POST", "/invocations", b"{}", {"content-type": "application/json"})
    assert status == 503 and _doc(body)["type"] == "unavailable"  # nothing loaded (no lifespan)
    status, _, body = _asgi(app, "GET", "/openapi.json")
    assert status == 200 and _doc(body) == SERVER


def test_the_shim_answers_its_own_errors_in_the_shape() -> None:
    from infra.local.api_shim import create_shim

    app = create_shim(Stack(load_template(), {"UiOrigin": "http://127.0.0.1:8000"}), "the-key", {})
    status, _, body = _asgi(app, "GET", "/openapi.json")  # no key, no token
    assert status == 200 and _doc(body) == API
    status, _, body = _asgi(app, "GET", "/openapi.yaml")
    assert status == 200 and yaml.safe_load(body) == API
    status, _, body = _asgi(app, "POST", "/machine/predict", b"{}", {"x-api-key": "wrong"})
    _shape(status, _doc(body), "forbidden")
    huge = b"x" * (MAX_API_BODY_BYTES + 1)
    status, _, body = _asgi(app, "POST", "/machine/predict", huge, {"x-api-key": "the-key"})
    _shape(status, _doc(body), "payload_too_large")
    status, _, body = _asgi(app, "GET", "/results")  # a people route without a token
    _shape(status, _doc(body), "unauthorized")
    status, _, body = _asgi(app, "GET", "/no-such-file.png")
    _shape(status, _doc(body), "not_found")
    for method, path in (("DELETE", "/results"), ("GET", "/predict"), ("PUT", "/models/patchcore-1/approve")):
        status, headers, body = _asgi(app, method, path)
        _shape(status, _doc(body), "method_not_allowed")
        assert headers["allow"], (method, path)


def test_the_local_stack_allows_only_its_own_origin_on_every_answer() -> None:
    """The shim serves the UI and the API, so the UI's origin is the shim's own: the preflight, the gateway's
    refusals (401, 403, 413) and the functions (the stage variable in their events) all name it, never `*`."""
    from infra.local.api_shim import ApiFunction, _api_route, create_shim
    from infra.local.authorizer import Gate
    from infra.local.supervisor import Supervisor, main_parser

    supervisor = Supervisor(main_parser().parse_args(["--api-port", "8123"]))
    origin = "http://127.0.0.1:8123"
    assert supervisor.origin == origin and supervisor.stack.stage_variables() == {"uiOrigin": origin}
    app = create_shim(supervisor.stack, "the-key", {})
    asked = {"origin": origin}
    answers = [
        _asgi(app, "OPTIONS", "/results", headers={**asked, "access-control-request-method": "GET"}),
        _asgi(app, "GET", "/results", headers=asked),  # no token: 401
        _asgi(app, "POST", "/machine/predict", b"{}", {**asked, "x-api-key": "wrong"}),  # 403
        _asgi(
            app,
            "POST",
            "/machine/predict",
            b"x" * (MAX_API_BODY_BYTES + 1),
            {**asked, "x-api-key": "the-key"},
        ),
    ]
    assert [status for status, _, _ in answers] == [200, 401, 403, 413]
    assert [headers.get("access-control-allow-origin") for _, headers, _ in answers] == [origin] * 4
    seen: list[dict] = []  # what the function is invoked with: the stage's variables, as API Gateway passes
    function = ApiFunction(supervisor.stack, "PredictFunction")
    function._handler = lambda event, context: seen.append(event) or {"statusCode": 200, "body": "{}"}
    route = _api_route("POST", "/machine/predict", function, Gate(supervisor.stack, "the-key", None))
    _asgi(route.app, "POST", "/machine/predict", b"{}", {**asked, "x-api-key": "the-key"})
    assert seen[0]["stageVariables"] == {"uiOrigin": origin}


def test_the_local_preflight_allows_withdrawing_a_review() -> None:
    """DELETE /results/{id}/review from the UI's origin: the preflight (the template's Cors) allows DELETE."""
    from infra.local.api_shim import create_shim
    from infra.local.supervisor import Supervisor, main_parser

    supervisor = Supervisor(main_parser().parse_args(["--api-port", "8124"]))
    app = create_shim(supervisor.stack, "the-key", {})
    asked = {"origin": supervisor.origin, "access-control-request-method": "DELETE"}
    status, headers, _ = _asgi(app, "OPTIONS", "/results/i1/review", headers=asked)
    assert status == 200 and "DELETE" in headers.get("access-control-allow-methods", "")


def test_the_largest_predict_image_fits_in_lambdas_request() -> None:
    """/predict's limit is what arrives: its base64 in a signed-in browser's event (both header maps, a
    Cognito id token, CloudFront's headers, the authorizer's claims) stays under Lambda's 6 MB."""
    import base64

    from starlette.requests import Request

    from infra.local.api_shim import proxy_event
    from infra.local.authorizer import stamp

    image = b"\xff" * MAX_PREDICT_IMAGE_BYTES
    body = json.dumps({"class_name": "x" * 256, "image_base64": base64.b64encode(image).decode(),
                       "model": "patchcore", "return_heatmap": True}).encode()  # fmt: skip
    assert len(body) <= MAX_API_BODY_BYTES
    token = "eyJ" + "a" * 1400  # a Cognito id token with its groups and email is 1-1.4 KB
    viewers = ("is-desktop-viewer", "is-mobile-viewer", "is-tablet-viewer")
    browser = {"authorization": token, "content-type": "application/json", "origin": "https://d1.cloudfront.net",
               "referer": "https://d1.cloudfront.net/", "user-agent": "Mozilla/5.0 " + "x" * 150,
               "accept": "*/*", "accept-encoding": "gzip, deflate, br", "accept-language": "en-GB,en;q=0.9",
               **{f"cloudfront-{k}": "true" for k in viewers},
               "via": "2.0 " + "0" * 32 + ".cloudfront.net (CloudFront)", "x-amz-cf-id": "x" * 56,
               "x-amzn-trace-id": "Root=1-" + "0" * 33, "x-forwarded-for": "203.0.113.7, 198.51.100.1",
               "x-forwarded-port": "443", "x-forwarded-proto": "https"}  # fmt: skip
    headers = [(k.encode(), v.encode()) for k, v in browser.items()]
    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"",
             "client": ("203.0.113.7", 1), "headers": headers, "path_params": {}}  # fmt: skip
    claims = {
        **CLAIMS,
        "email": "someone@example.com",
        "aud": "x" * 26,
        "iss": "https://cognito-idp/" + "x" * 60,
    }
    event = stamp(proxy_event(Request(scope), body, "/predict", None, {"uiOrigin": browser["origin"]}),
                  {"authorizer": {"claims": claims}})  # fmt: skip
    envelope = len(json.dumps(event)) - len(body)
    assert envelope < 8 * 1024, envelope  # about 5 KB: EVENT_ENVELOPE_BYTES leaves 8x that
    assert len(json.dumps(event)) + EVENT_ENVELOPE_BYTES - 8 * 1024 < 6 * 1024 * 1024


def test_predict_refuses_an_image_over_what_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    """One byte over MAX_PREDICT_IMAGE_BYTES is a 413 from the function, before any endpoint is called."""
    import base64

    for key, value in {"RESULTS_TABLE": "t", "STATS_TABLE": "t", "REVIEWS_TABLE": "t", "RESULTS_BUCKET": "b",
                       "INBOX_BUCKET": "b", "IDEMPOTENCY_TABLE": "t", "PATCHCORE_ENDPOINT": "e",
                       "SOFTPATCH_ENDPOINT": "e", "AWS_DEFAULT_REGION": "us-east-1",
                       "POWERTOOLS_TRACE_DISABLED": "true"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    monkeypatch.delitem(sys.modules, "ivadas_functions.predict", raising=False)
    predict = importlib.import_module("ivadas_functions.predict")
    called = []
    monkeypatch.setattr(predict, "_score", lambda *a: called.append(a) or {"endpoint_latency_ms": 1.0})
    for size, status in ((MAX_PREDICT_IMAGE_BYTES, 200), (MAX_PREDICT_IMAGE_BYTES + 1, 413)):
        body = {"class_name": "bottle", "image_base64": base64.b64encode(b"\0" * size).decode()}
        assert _answer(predict, _event("POST", "/predict", json.dumps(body)))[0] == status, size
    assert len(called) == 1


def test_class_names_are_what_the_endpoint_call_can_carry() -> None:
    """A class name travels in CustomAttributes: a comma, `=` or non-ASCII text would break the call (the
    fuzzer found a lone surrogate answered 503); the document states the same rule as the contract."""
    from ivadas_contract.inspection import CLASS_NAME, is_class_name

    pattern = API["components"]["schemas"]["PredictRequest"]["properties"]["class_name"]["pattern"]
    assert pattern == f"^{CLASS_NAME.pattern}$"
    assert all(is_class_name(n) for n in ("bottle", "elpv_mono", "metal nut", "PCB-4.v2+"))
    assert not any(is_class_name(n) for n in ("", "a,b", "a=b", "\ud922x", "ünï", " lead", "x\n", None, 3))


def test_a_class_name_the_endpoint_cannot_carry_is_rejected_not_retried() -> None:
    from ivadas_functions import inspector

    reason = inspector._problem("a,b", 10, 100)
    assert reason and "not a class name" in reason
    assert inspector._problem("bottle", 10, 100) is None
