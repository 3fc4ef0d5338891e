"""API Gateway's two gates, locally: the Cognito user pool authorizer and the API key, each on the routes
template.yaml gives it (the Api's `DefaultAuthorizer`, and an event's `Auth: {Authorizer: NONE,
ApiKeyRequired: true}`).

The authorizer checks an id token as API Gateway does: an RS256 signature by a key of the pool's JWKS
(moto's cognito-idp serves them), the pool's issuer (`https://cognito-idp.<region>.amazonaws.com/<pool id>`,
which moto writes too), the app client as audience, `token_use` "id" and an unexpired `exp`. A request it
refuses never reaches the function: 401 `unauthorized` (a missing or unknown API key: 403 `forbidden`), in
the one error shape. A verified token's claims go into the proxy event's `requestContext.authorizer.claims`
in API Gateway's own form: every value a string, `cognito:groups` joined by commas, `exp`, `iat` as dates.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from infra.template import Stack

COGNITO, API_KEY, OPEN = "cognito", "api-key", "none"
#: the id the shim gives its one API key (API Gateway's requestContext.identity.apiKeyId)
LOCAL_API_KEY_ID = "local-api-key"
#: moto serves a pool's JWKS only to a request that names cognito-idp (its documented way: a SigV4-shaped
#: Authorization header; nothing is signed or checked)
_MOTO_COGNITO_HEADER = (
    "AWS4-HMAC-SHA256 Credential=local/20260101/{region}/cognito-idp/aws4_request, "
    "SignedHeaders=host, Signature=0"
)
_JWKS_REFRESH_S = 30.0  # an unknown key id fetches the JWKS again, at most this often


class Denied(Exception):
    """A request the gateway refuses before any function runs."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


@dataclass(frozen=True)
class UserPool:
    """The user pool and the UI's app client, as moto created them (provision.create_user_pool)."""

    pool_id: str
    client_id: str
    region: str
    endpoint: str  # where cognito-idp answers (moto's URL locally)

    @property
    def issuer(self) -> str:
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.pool_id}"

    @property
    def jwks_url(self) -> str:
        return f"{self.endpoint.rstrip('/')}/{self.pool_id}/.well-known/jwks.json"


class CognitoAuthorizer:
    """Verifies id tokens of one pool and app client with PyJWT; the JWKS is fetched once and again only for
    a key id it does not know (a rotated key), at most every `_JWKS_REFRESH_S` seconds."""

    def __init__(self, pool: UserPool) -> None:
        self.pool = pool
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def _fetch_keys(self) -> None:
        header = _MOTO_COGNITO_HEADER.format(region=self.pool.region)
        request = urllib.request.Request(self.pool.jwks_url, headers={"Authorization": header})
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - the pool's own JWKS URL  # nosec B310
            keys = jwt.PyJWKSet.from_dict(json.loads(resp.read())).keys
        self._keys = {k.key_id: k for k in keys if k.key_id}
        self._fetched_at = time.monotonic()

    def _key(self, kid: str | None) -> jwt.PyJWK:
        with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched_at > _JWKS_REFRESH_S:
                self._fetch_keys()
            if kid not in self._keys:
                raise Denied(401, "unauthorized", "Unauthorized: the token is not signed by this user pool")
            return self._keys[kid]

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid id token of this pool and client; Denied(401) for anything else."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Denied(401, "unauthorized", "Unauthorized: Authorization is not a token") from None
        if header.get("alg") != "RS256":
            raise Denied(401, "unauthorized", "Unauthorized: tokens must be signed with RS256")
        key = self._key(header.get("kid"))
        try:
            claims = jwt.decode(
                token, key, algorithms=["RS256"], audience=self.pool.client_id, issuer=self.pool.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "token_use"]},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise Denied(401, "unauthorized", "The incoming token has expired: sign in again") from None
        except jwt.InvalidTokenError as exc:
            raise Denied(401, "unauthorized", f"Unauthorized: {exc}") from None
        if claims.get("token_use") != "id":
            raise Denied(401, "unauthorized", "Unauthorized: an id token is required (token_use id)")
        return claims


def _gateway_date(epoch: Any) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%a %b %d %H:%M:%S UTC %Y")


def gateway_claims(claims: dict[str, Any]) -> dict[str, str]:
    """Token claims as API Gateway's Cognito authorizer passes them to a REST proxy integration."""
    out = {}
    for name, value in claims.items():
        if name in ("exp", "iat"):
            out[name] = _gateway_date(value)
        elif isinstance(value, list):
            out[name] = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = str(value)
    return out


def route_auth(stack: Stack) -> dict[tuple[str, str], str]:
    """(method, path) -> COGNITO, API_KEY or OPEN, from the Api's Auth and each API event's own Auth."""
    api_auth = stack.props("Api").get("Auth", {})
    kinds = {}
    for resource in stack.resources.values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] != "Api":
                continue
            props = event["Properties"]
            auth = props.get("Auth", {})
            authorizer = auth.get("Authorizer", api_auth.get("DefaultAuthorizer"))
            if authorizer and authorizer != "NONE":
                kind = COGNITO
            elif auth.get("ApiKeyRequired", api_auth.get("ApiKeyRequired", False)):
                kind = API_KEY
            else:
                kind = OPEN
            kinds[(props["Method"].upper(), props["Path"])] = kind
    return kinds


class Gate:
    """What API Gateway does before a function runs: each route's authorizer or API key check, and what it
    adds to the proxy event's requestContext."""

    def __init__(self, stack: Stack, api_key: str, pool: UserPool | None) -> None:
        self.kinds = route_auth(stack)
        self.api_key = api_key
        self.authorizer = CognitoAuthorizer(pool) if pool else None

    def admit(self, method: str, resource: str, headers: Any) -> dict[str, Any]:
        """The requestContext entries for an admitted request (merge them with `stamp`); Denied otherwise."""
        kind = self.kinds.get((method.upper(), resource), OPEN)
        if kind == API_KEY:
            if headers.get("x-api-key") != self.api_key:
                raise Denied(403, "forbidden", "Forbidden: a missing or unknown API key (X-Api-Key)")
            return {"identity": {"apiKey": self.api_key, "apiKeyId": LOCAL_API_KEY_ID}}
        if kind == COGNITO:
            token = headers.get("authorization")
            if not token:
                raise Denied(401, "unauthorized", "Unauthorized: sign in (an id token in Authorization)")
            if self.authorizer is None:
                raise Denied(401, "unauthorized", "Unauthorized: the local stack has no user pool")
            claims = self.authorizer.verify(token)
            return {"authorizer": {"claims": gateway_claims(claims)}, "identity": {"apiKey": None}}
        return {}


def stamp(event: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """`event` with the gate's requestContext entries merged in (identity fields added, authorizer set)."""
    request_context = event.setdefault("requestContext", {})
    if "identity" in context:
        request_context["identity"] = {**request_context.get("identity", {}), **context["identity"]}
    if "authorizer" in context:
        request_context["authorizer"] = context["authorizer"]
    return event
