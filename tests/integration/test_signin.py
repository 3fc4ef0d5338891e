"""Sign-in end to end without a model: moto's cognito-idp (the user pool, client and groups created from
template.yaml) issues the tokens, the API shim's authorizer checks them as API Gateway does, and the real
results and models handlers enforce the groups and record who acted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from moto.utilities.utils import load_resource

from infra.local.api_shim import create_shim
from infra.local.authorizer import UserPool
from infra.local.provision import provision
from infra.local.state import aws_environment
from infra.local.users import create_user, sign_in
from infra.publish_ui import ui_config
from infra.template import REGION, Stack, load_template
from ivadas_contract.models import package_group

ROOT = Path(__file__).resolve().parents[2]
STAGE = "authtest"
PASSWORD = "Correct-Horse-Battery-9"
API_KEY = "machine-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str) -> None:
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310 - local
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


@pytest.fixture(scope="module")
def api() -> Iterator[dict]:
    """moto, the stack's resources (user pool included), users ana (operators) and max (ml-engineers), and
    the shim serving the real handlers."""
    moto_port, api_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.local.moto_server", "--port", str(moto_port)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    saved = dict(os.environ)
    try:
        _wait(f"http://127.0.0.1:{moto_port}/moto-api/")
        stack = Stack(load_template(), {"Stage": STAGE, "UiOrigin": f"http://127.0.0.1:{api_port}"})
        env = {**aws_environment(moto_port, _free_port()), **stack.functions_environment(), "STAGE": STAGE}
        os.environ.update(env)
        names = provision(stack)
        state = {"resources": names, "environment": env}
        create_user(state, "ana", PASSWORD, ["operators"])
        create_user(state, "max", PASSWORD, ["ml-engineers"])
        create_user(state, "nobody", PASSWORD, [])
        pool = UserPool(names["UserPool"], names["UserPoolClient"], REGION, env["AWS_ENDPOINT_URL"])
        config = ui_config("http://127.0.0.1", REGION, pool.pool_id, pool.client_id, pool.endpoint, STAGE)
        app = create_shim(stack, API_KEY, config, pool=pool)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=api_port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        _wait(f"http://127.0.0.1:{api_port}/config.json")
        yield {"url": f"http://127.0.0.1:{api_port}", "state": state, "pool": pool, "names": names}
        server.should_exit = True
        thread.join(timeout=10)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        proc.terminate()
        proc.wait(timeout=20)


def call(api: dict, method: str, path: str, headers: dict | None = None, body: dict | None = None):  # noqa: ANN201
    req = urllib.request.Request(
        api["url"] + path, method=method, headers={"Content-Type": "application/json", **(headers or {})},
        data=json.dumps(body).encode() if body is not None else None,
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - the local shim
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def token(api: dict, name: str) -> str:
    return sign_in(api["state"], name, PASSWORD)["IdToken"]


def as_user(api: dict, name: str) -> dict:
    return {"Authorization": token(api, name)}


# ------------------------------------------------------------------------------------------ sign-in


def test_sign_in_through_moto_gives_an_id_token_of_the_pool(api: dict) -> None:
    claims = jwt.decode(token(api, "ana"), options={"verify_signature": False})
    assert claims["iss"] == api["pool"].issuer and claims["aud"] == api["pool"].client_id
    assert claims["token_use"] == "id" and claims["cognito:username"] == "ana"
    assert claims["cognito:groups"] == ["operators"]
    with pytest.raises(Exception, match="NotAuthorized"):
        sign_in(api["state"], "ana", "Wrong-Password-123")


def test_config_json_names_the_pool_and_no_key(api: dict) -> None:
    with urllib.request.urlopen(api["url"] + "/config.json", timeout=10) as resp:  # noqa: S310
        text = resp.read().decode()
    config = json.loads(text)
    assert config["auth"]["userPoolId"] == api["pool"].pool_id
    assert config["auth"]["clientId"] == api["pool"].client_id
    assert API_KEY not in text and "apiKey" not in config


WEAK_PASSWORD_ERROR = "the password is too weak for the user pool: it needs at least 14 characters"


def test_a_weak_password_makes_no_user_and_a_retry_works(
    api: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from infra.cli import main
    from infra.local import users
    from infra.local.state import write_state
    from model_server.errors import IvadasError

    with pytest.raises(IvadasError, match=WEAK_PASSWORD_ERROR):
        create_user(api["state"], "weak", "short1A!", ["operators"])
    write_state(tmp_path, {**api["state"], "ui_url": api["url"]})
    add = ["local", "add-user", "weak", "--group", "operators", "--state-dir", str(tmp_path)]
    assert main([*add, "--password", "short1A!"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "ivadas local add-user: error: " + WEAK_PASSWORD_ERROR
    monkeypatch.setattr(users, "password_problems", lambda password, policy: [])  # past the check: moto's own
    with pytest.raises(Exception, match="InvalidPassword"):  # the template's policy holds in moto too
        create_user(api["state"], "weak", "short1A!", ["operators"])
    monkeypatch.undo()
    assert main([*add, "--password", PASSWORD]) == 0  # no half-made user stands in the way
    assert sign_in(api["state"], "weak", PASSWORD)["IdToken"]


# ------------------------------------------------------------------------------------------ the gate


def test_people_routes_need_a_token_and_the_key_reads_nothing(api: dict) -> None:
    status, body = call(api, "GET", "/results")
    assert status == 401 and body["type"] == "unauthorized"
    status, body = call(api, "GET", "/results", {"X-Api-Key": API_KEY})
    assert status == 401 and body["type"] == "unauthorized"
    status, body = call(api, "GET", "/results", as_user(api, "ana"))
    assert status == 200 and body["items"] == []


def test_a_user_in_no_group_is_forbidden(api: dict) -> None:
    status, body = call(api, "GET", "/results", as_user(api, "nobody"))
    assert status == 403 and body["type"] == "forbidden"


def test_machine_route_takes_the_key_and_not_a_token(api: dict) -> None:
    status, body = call(api, "POST", "/machine/predict", as_user(api, "max"), {})
    assert status == 403 and body["type"] == "forbidden"
    status, body = call(api, "POST", "/machine/predict", {"X-Api-Key": API_KEY}, {})
    assert status == 400 and body["type"] == "bad_request"  # admitted: the handler read the body
    status, body = call(api, "POST", "/predict", {"X-Api-Key": API_KEY}, {})
    assert status == 401


def _b64(doc: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def _claims(api: dict, **changes) -> dict:  # noqa: ANN003
    now = int(time.time())
    base = {"sub": "00000000-0000-0000-0000-000000000001", "cognito:username": "eve",
            "cognito:groups": ["ml-engineers"], "iss": api["pool"].issuer, "aud": api["pool"].client_id,
            "token_use": "id", "iat": now, "auth_time": now, "exp": now + 3600}  # fmt: skip
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def _pool_key() -> jwt.PyJWK:
    """moto's own signing key (it signs every pool's tokens): forging with it isolates each check."""
    return jwt.PyJWK(load_resource("cognitoidp/resources/jwks-private.json"))


def _forged(api: dict, case: str) -> str:
    key = _pool_key()
    signed = lambda claims: jwt.encode(claims, key.key, "RS256", headers={"kid": key.key_id})  # noqa: E731
    if case == "expired":
        return signed(_claims(api, iat=int(time.time()) - 7200, exp=int(time.time()) - 60))
    if case == "wrong issuer":
        return signed(_claims(api, iss="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_other"))
    if case == "wrong audience":
        return signed(_claims(api, aud="another-client"))
    if case == "access token":
        return signed(_claims(api, token_use="access"))
    if case == "no expiry":
        return signed(_claims(api, exp=None))
    if case == "wrong key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return jwt.encode(_claims(api), other, "RS256", headers={"kid": key.key_id})
    if case == "unknown key id":
        return jwt.encode(_claims(api), key.key, "RS256", headers={"kid": "not-in-the-jwks"})
    if case == "alg none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': key.key_id})}.{_b64(_claims(api))}."
    if case == "tampered claims":  # ana's real token, her groups rewritten: the signature no longer matches
        head, _, sig = token(api, "ana").split(".")
        payload = jwt.decode(token(api, "ana"), options={"verify_signature": False})
        return f"{head}.{_b64({**payload, 'cognito:groups': ['ml-engineers']})}.{sig}"
    if case == "hs256 with the public key":  # key confusion: HMAC keyed with the public key's PEM
        pem = key.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': key.key_id})}.{_b64(_claims(api))}"
        mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    if case == "not a token":
        return "Bearer nonsense"
    raise AssertionError(case)


FORGERIES = ("expired", "wrong issuer", "wrong audience", "access token", "no expiry", "wrong key",
             "unknown key id", "alg none", "tampered claims", "hs256 with the public key",
             "not a token")  # fmt: skip


def test_a_token_signed_with_the_pool_key_is_the_control(api: dict) -> None:
    """The forgeries below differ from this one in one thing each; this one must pass."""
    key = _pool_key()
    good = jwt.encode(_claims(api), key.key, "RS256", headers={"kid": key.key_id})
    assert call(api, "GET", "/results", {"Authorization": good})[0] == 200


@pytest.mark.parametrize("case", FORGERIES)
def test_forged_and_expired_tokens_are_refused_401(api: dict, case: str) -> None:
    status, body = call(api, "GET", "/results", {"Authorization": _forged(api, case)})
    assert status == 401 and body["type"] == "unauthorized", (case, body)
    approve = call(api, "POST", "/models/patchcore-1/approve", {"Authorization": _forged(api, case)}, {})
    assert approve[0] == 401


# ------------------------------------------------------------------------------------------ roles, records


def _register_version(api: dict) -> str:
    sm = boto3.client("sagemaker")
    group = package_group(STAGE, "patchcore")
    sm.create_model_package_group(ModelPackageGroupName=group)
    sm.create_model_package(
        ModelPackageGroupName=group, ModelPackageDescription="v1",
        InferenceSpecification={
            "Containers": [{"Image": "img", "ModelDataUrl": "s3://b/model.tar.gz"}],
            "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"],
        },
        CustomerMetadataProperties={"classes": "bottle"}, ModelApprovalStatus="PendingManualApproval",
    )  # fmt: skip
    return "patchcore-1"


def test_operator_cannot_approve_or_reject_an_ml_engineer_can_and_is_recorded(api: dict) -> None:
    version = _register_version(api)
    status, listed = call(api, "GET", "/models", as_user(api, "ana"))
    assert status == 200 and listed["can_decide"] is False
    status, body = call(api, "POST", f"/models/{version}/approve", as_user(api, "ana"), {"note": "looks ok"})
    assert status == 403 and body["type"] == "forbidden" and "ml-engineers" in body["error"]
    status, body = call(api, "POST", f"/models/{version}/reject", as_user(api, "ana"), {"why": "no"})
    assert status == 403 and body["type"] == "forbidden"
    max_token = token(api, "max")
    assert call(api, "GET", "/models", {"Authorization": max_token})[1]["can_decide"] is True
    status, body = call(
        api, "POST", f"/models/{version}/approve", {"Authorization": max_token}, {"note": "ok"}
    )
    assert status == 200 and body["status"] == "Approved"
    assert body["decided_by"] == "cognito:max" and body["decided_by_verified"] is True
    sub = jwt.decode(max_token, options={"verify_signature": False})["sub"]
    group = package_group(STAGE, "patchcore")
    (summary,) = boto3.client("sagemaker").list_model_packages(ModelPackageGroupName=group)[
        "ModelPackageSummaryList"
    ]
    meta = boto3.client("sagemaker").describe_model_package(ModelPackageName=summary["ModelPackageArn"])[
        "CustomerMetadataProperties"
    ]
    assert meta["decided_by"] == "cognito:max" and meta["decided_by_sub"] == sub


def test_a_review_records_the_signed_in_reviewer_not_the_body(api: dict) -> None:
    results = boto3.resource("dynamodb").Table(api["names"]["ResultsTable"])
    item = {"inspection_id": "i-review", "class_name": "widget", "status": "INSPECTED", "is_anomaly": True,
            "bucket": api["names"]["InboxBucket"], "key": "line1/widget/a.png",
            "model_version": "patchcore-1", "created_at": "2026-12-02T10:00:00.000Z"}  # fmt: skip
    results.put_item(Item=item)
    ana_token = token(api, "ana")
    body = {"verdict": "good", "reviewer": "mallory", "note": "reflection"}
    status, answer = call(api, "POST", "/results/i-review/review", {"Authorization": ana_token}, body)
    assert status == 200, answer
    review = answer["review"]
    sub = jwt.decode(ana_token, options={"verify_signature": False})["sub"]
    assert (
        review["reviewer"] == "ana" and review["reviewer_sub"] == sub and review["reviewer_verified"] is True
    )
    status, shown = call(api, "GET", "/results/i-review", {"Authorization": ana_token})
    assert [r["reviewer"] for r in shown["reviews"]] == ["ana"]
    assert "mallory" not in json.dumps(shown)
