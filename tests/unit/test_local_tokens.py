"""The local stack's Cognito issues tokens that live as long as the app client says (IdTokenValidity,
AccessTokenValidity, TokenValidityUnits), as Cognito does; moto alone gives every token an hour."""

from __future__ import annotations

import base64
import json

import boto3
import pytest
from moto import mock_aws
from moto.cognitoidp.models import CognitoIdpUserPool

from infra.local.moto_extensions import _client_lifetime, token_lifetime

PASSWORD = "Local-Tokens-Passw0rd!"


def _lifetime(token: str) -> int:
    part = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return claims["exp"] - claims["iat"]


def _signed_in_lifetimes() -> tuple[int, int, int]:
    """(id token, access token, ExpiresIn) seconds of a sign-in to a client whose tokens live 40 s."""
    idp = boto3.client("cognito-idp", region_name="us-east-1")
    pool = idp.create_user_pool(PoolName="p")["UserPool"]["Id"]
    client = idp.create_user_pool_client(
        UserPoolId=pool, ClientName="ui", IdTokenValidity=40, AccessTokenValidity=40,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        TokenValidityUnits={"IdToken": "seconds", "AccessToken": "seconds", "RefreshToken": "hours"},
    )["UserPoolClient"]["ClientId"]  # fmt: skip
    idp.admin_create_user(UserPoolId=pool, Username="ana", MessageAction="SUPPRESS")
    idp.admin_set_user_password(UserPoolId=pool, Username="ana", Password=PASSWORD, Permanent=True)
    auth = idp.initiate_auth(
        ClientId=client,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "ana", "PASSWORD": PASSWORD},
    )["AuthenticationResult"]
    renewed = idp.initiate_auth(
        ClientId=client, AuthFlow="REFRESH_TOKEN_AUTH", AuthParameters={"REFRESH_TOKEN": auth["RefreshToken"]}
    )["AuthenticationResult"]
    assert _lifetime(renewed["IdToken"]) == _lifetime(auth["IdToken"])  # a renewed token lives as long
    return _lifetime(auth["IdToken"]), _lifetime(auth["AccessToken"]), auth["ExpiresIn"]


def test_moto_alone_gives_every_token_an_hour() -> None:
    with mock_aws():
        assert _signed_in_lifetimes() == (3600, 3600, 3600)


def test_the_local_stack_issues_tokens_of_the_clients_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CognitoIdpUserPool, "create_jwt", _client_lifetime(CognitoIdpUserPool.create_jwt))
    with mock_aws():
        assert _signed_in_lifetimes() == (40, 40, 40)


def test_token_lifetime_reads_validity_and_units_with_cognitos_default_unit() -> None:
    assert token_lifetime({"IdTokenValidity": 60, "TokenValidityUnits": {"IdToken": "minutes"}}, "id") == 3600
    assert token_lifetime({"AccessTokenValidity": 2}, "access") == 7200  # hours when no unit is given
    assert token_lifetime({}, "id") is None and token_lifetime({"IdTokenValidity": 5}, "refresh") is None
