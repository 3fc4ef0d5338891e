"""Who may do what: the one mapping from API Gateway's request context to an identity and its groups
(ivadas_functions.identity), the claims in the form the gateway passes them, and the route split of the
template (people's routes behind the Cognito authorizer, machines' behind the API key), checked on SAM's own
translation of template.yaml."""

from __future__ import annotations

import pytest

from infra.local.authorizer import API_KEY, COGNITO, gateway_claims, route_auth
from infra.template import TEMPLATE, Stack, load_template
from ivadas_functions import identity


def event(claims: dict | None = None, api_key_id: str | None = None) -> dict:
    context: dict = {"identity": {"sourceIp": "10.0.0.1", **({"apiKeyId": api_key_id} if api_key_id else {})}}
    if claims is not None:
        context["authorizer"] = {"claims": claims}
    return {"requestContext": context}


def claims(groups: str = "operators", **extra: str) -> dict:
    return {"sub": "s-1", "cognito:username": "ana", "cognito:groups": groups, "token_use": "id", **extra}


@pytest.mark.parametrize(
    ("groups", "allowed"),
    [
        ("operators", {identity.READ, identity.PREDICT, identity.REVIEW}),
        (
            "ml-engineers",
            {identity.READ, identity.PREDICT, identity.REVIEW, identity.DECIDE, identity.MODERATE},
        ),
        (
            "operators,ml-engineers",
            {identity.READ, identity.PREDICT, identity.REVIEW, identity.DECIDE, identity.MODERATE},
        ),
        ("visitors", set()),
        ("", set()),
    ],
)
def test_groups_decide_what_a_person_may_do(groups: str, allowed: set[str]) -> None:
    who = identity.caller(event(claims(groups)))
    assert who is not None and who.via == "cognito"
    assert {a for a in identity.GROUPS_FOR if who.may(a)} == allowed
    assert not who.may(identity.MACHINE)  # a person never passes as a machine


def test_an_operator_approving_is_forbidden_and_no_caller_is_unauthorized() -> None:
    with pytest.raises(identity.Forbidden) as refused:
        identity.require(event(claims("operators")), identity.DECIDE)
    assert refused.value.status_code == 403 and "ml-engineers" in refused.value.msg
    with pytest.raises(identity.Unauthorized) as nobody:
        identity.require(event(), identity.READ)
    assert nobody.value.status_code == 401
    assert identity.require(event(claims("ml-engineers")), identity.DECIDE).username == "ana"


def test_the_api_key_is_a_machine_that_reads_nothing() -> None:
    machine = identity.require(event(api_key_id="k-123"), identity.MACHINE)
    assert machine.principal == "api-key:k-123"
    for action in identity.GROUPS_FOR:
        with pytest.raises(identity.Forbidden):
            identity.require(event(api_key_id="k-123"), action)


def test_claims_that_are_not_an_id_token_make_no_identity() -> None:
    assert identity.caller(event({**claims(), "token_use": "access"})) is None
    assert identity.caller(event({k: v for k, v in claims().items() if k != "sub"})) is None


def test_groups_in_every_form_the_gateway_or_a_token_gives() -> None:
    assert identity.groups_of({"cognito:groups": "operators,ml-engineers"}) == ("operators", "ml-engineers")
    assert identity.groups_of({"cognito:groups": "[operators ml-engineers]"}) == ("operators", "ml-engineers")
    assert identity.groups_of({"cognito:groups": ["ml-engineers"]}) == ("ml-engineers",)
    assert identity.groups_of({}) == ()


def test_a_reviewer_and_an_author_are_recorded_from_the_token() -> None:
    who = identity.caller(event(claims("operators", email="ana@example.com")))
    expected = {"reviewer": "ana", "reviewer_sub": "s-1", "reviewer_email": "ana@example.com"}
    assert who.as_reviewer() == {**expected, "reviewer_verified": True}
    assert who.as_author("decided") == {"decided_by": "cognito:ana", "decided_by_sub": "s-1",
                                        "decided_by_verified": "true"}  # fmt: skip


def test_gateway_claims_are_strings_as_api_gateway_passes_them() -> None:
    token = {"sub": "s", "cognito:groups": ["ml-engineers", "operators"], "exp": 1796240357,
             "iat": 1796236757, "auth_time": 1796236757, "email_verified": True,
             "token_use": "id"}  # fmt: skip
    passed = gateway_claims(token)
    assert passed["cognito:groups"] == "ml-engineers,operators" and passed["email_verified"] == "true"
    assert passed["exp"] == "Wed Dec 02 19:39:17 UTC 2026" and passed["auth_time"] == "1796236757"
    assert all(isinstance(v, str) for v in passed.values())
    assert identity.caller(event(passed)).groups == ("ml-engineers", "operators")


def _sam_security() -> dict[tuple[str, str], list[str]]:
    """(METHOD, path) -> the security schemes SAM puts on each method of the deployed API."""
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    class _NoPolicies:
        def load(self) -> dict:
            return {}

    text = TEMPLATE.read_text().replace("CodeUri: functions/", "CodeUri: s3://bucket/functions.zip")
    translated = transform(yaml_parse(text), {}, _NoPolicies())
    paths = translated["Resources"]["Api"]["Properties"]["Body"]["paths"]
    return {
        (method.upper(), path): [name for scheme in spec.get("security", []) for name in scheme]
        for path, methods in paths.items()
        for method, spec in methods.items()
        if method != "options"
    }


def test_people_routes_take_the_authorizer_and_machine_routes_the_key(monkeypatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    security = _sam_security()
    assert security, "no API routes translated"
    for (method, path), schemes in security.items():
        expected = ["api_key"] if path.startswith("/machine/") else ["CognitoAuthorizer"]
        assert schemes == expected, (method, path, schemes)
    assert ("POST", "/machine/predict") in security and ("POST", "/predict") in security
    # the local shim reads the same split from the template
    local = route_auth(Stack(load_template(), {}))
    assert {k: (API_KEY if v == ["api_key"] else COGNITO) for k, v in security.items()} == local


def test_the_user_pool_admits_only_admin_made_users_with_strong_passwords() -> None:
    stack = Stack(load_template(), {})
    pool = stack.props("UserPool")
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    policy = pool["Policies"]["PasswordPolicy"]
    assert policy["MinimumLength"] >= 12 and all(
        policy[f"Require{k}"] for k in ("Lowercase", "Uppercase", "Numbers", "Symbols")
    )
    client = stack.props("UserPoolClient")
    assert client["GenerateSecret"] is False and "ALLOW_USER_PASSWORD_AUTH" in client["ExplicitAuthFlows"]
    groups = {stack.props(k)["GroupName"] for k, r in stack.resources.items()
              if r["Type"] == "AWS::Cognito::UserPoolGroup"}  # fmt: skip
    assert groups == {identity.OPERATORS, identity.ML_ENGINEERS}
    outputs = load_template()["Outputs"]
    assert {"UserPoolId", "UserPoolClientId"} <= set(outputs)
    assert "UiApprovals" not in load_template()["Parameters"]  # decisions need an ML engineer's sign-in
