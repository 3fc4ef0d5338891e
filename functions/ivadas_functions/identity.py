"""Who is calling the API and what they may do: the one place that turns API Gateway's request context into
an identity and checks it against the groups each action needs.

People sign in to the Cognito user pool; API Gateway's Cognito authorizer verifies their id token (signature,
issuer, audience, expiry) and hands its claims to the function as `requestContext.authorizer.claims`, every
value a string (`cognito:groups` is "a,b"). Machines (cameras, line scripts) call the routes that take the API
key; API Gateway checks the key and puts its id in `requestContext.identity.apiKeyId`. The functions trust
both because the gateway put them there, and enforce the groups themselves: hiding a button is not security.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.event_handler.exceptions import ServiceError

OPERATORS = "operators"
ML_ENGINEERS = "ml-engineers"

# Actions, and the groups that may take each (any one of them suffices).
READ = "read"  # results, classes, stats, the review queue, exports, the model registry
PREDICT = "predict"  # synchronous scoring from the UI
REVIEW = "review"  # confirm or override a verdict
DECIDE = "decide"  # approve or reject a model version
MODERATE = "moderate"  # withdraw another reviewer's review (one's own needs only REVIEW)
MACHINE = "machine"  # the API-key routes: no person, no group

GROUPS_FOR: dict[str, tuple[str, ...]] = {
    READ: (OPERATORS, ML_ENGINEERS),
    PREDICT: (OPERATORS, ML_ENGINEERS),
    REVIEW: (OPERATORS, ML_ENGINEERS),
    DECIDE: (ML_ENGINEERS,),
    MODERATE: (ML_ENGINEERS,),  # the console's administrators
}


class Unauthorized(ServiceError):
    """No verified caller in the request context (only reachable past a misconfigured gateway)."""

    def __init__(self, message: str) -> None:
        super().__init__(401, message)


class Forbidden(ServiceError):
    """A verified caller whose groups do not allow the action."""

    def __init__(self, message: str) -> None:
        super().__init__(403, message)


@dataclass(frozen=True)
class Identity:
    """A verified caller: a signed-in person (`via="cognito"`) or an API key (`via="api-key"`)."""

    username: str
    via: str
    sub: str | None = None
    email: str | None = None
    groups: tuple[str, ...] = ()

    def may(self, action: str) -> bool:
        if action == MACHINE:
            return self.via == "api-key"
        return self.via == "cognito" and any(g in self.groups for g in GROUPS_FOR[action])

    @property
    def principal(self) -> str:
        """One string naming the caller, e.g. "cognito:ana" or "api-key:k1" (decided_by, logs)."""
        return f"{self.via}:{self.username}"

    def as_reviewer(self) -> dict[str, Any]:
        """The fields a review stores about who made it (all from the verified token)."""
        fields = {"reviewer": self.username, "reviewer_sub": self.sub, "reviewer_email": self.email}
        return {**{k: v for k, v in fields.items() if v}, "reviewer_verified": True}

    def as_author(self, prefix: str) -> dict[str, str]:
        """`<prefix>_by`, `<prefix>_by_sub` and `<prefix>_by_verified`, as text (model package metadata)."""
        fields = {f"{prefix}_by": self.principal, f"{prefix}_by_sub": self.sub or ""}
        return {**{k: v for k, v in fields.items() if v}, f"{prefix}_by_verified": "true"}


def groups_of(claims: dict[str, Any]) -> tuple[str, ...]:
    """`cognito:groups` as API Gateway passes it ("a,b"), or as a list (the token's own form)."""
    raw = claims.get("cognito:groups")
    if isinstance(raw, list | tuple):
        return tuple(str(g) for g in raw)
    if isinstance(raw, str) and raw.strip():
        return tuple(g.strip() for g in raw.strip("[]").replace(" ", ",").split(",") if g.strip())
    return ()


def caller(event: dict[str, Any]) -> Identity | None:
    """The verified caller of a REST proxy event, or None when the gateway vouched for no one."""
    context = event.get("requestContext") or {}
    claims = (context.get("authorizer") or {}).get("claims")
    if isinstance(claims, dict) and claims.get("token_use") == "id" and claims.get("sub"):
        return Identity(
            username=str(claims.get("cognito:username") or claims["sub"]),
            via="cognito",
            sub=str(claims["sub"]),
            email=str(claims["email"]) if claims.get("email") else None,
            groups=groups_of(claims),
        )
    key_id = (context.get("identity") or {}).get("apiKeyId")
    if key_id:
        return Identity(username=str(key_id), via="api-key")
    return None


def require(event: dict[str, Any], action: str) -> Identity:
    """The caller, if it may take `action`; otherwise Unauthorized (401) or Forbidden (403)."""
    who = caller(event)
    if who is None:
        raise Unauthorized("sign in first: this route needs a signed-in user's id token (Authorization)")
    if not who.may(action):
        if action == MACHINE:
            raise Forbidden("this route is for machines: send the API key (X-Api-Key)")
        if who.via != "cognito":
            raise Forbidden("the API key may only call the machine routes (/machine/...)")
        needed = " or ".join(GROUPS_FOR[action])
        raise Forbidden(f"{who.username} may not {action}: that needs the group {needed}")
    return who


def required(action: str) -> Callable[..., Any]:
    """A powertools middleware that admits only callers who may take `action` (`app.use([required(READ)])`
    guards every route of a resolver; a route that needs more calls `require` itself)."""

    def middleware(app: Any, next_middleware: Callable[[Any], Any]) -> Any:
        require(app.current_event.raw_event, action)
        return next_middleware(app)

    return middleware
