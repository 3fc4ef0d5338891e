"""Who the end-to-end tests are: signed-in users of the running local stack (moto's cognito-idp), each made
the first time a test needs them, and their id tokens, reused while they are valid."""

from __future__ import annotations

import time

import jwt

from infra.local.users import create_user, sign_in

PASSWORD = "E2e-Test-Passw0rd!"
ENGINEER = "e2e-engineer"
_tokens: dict[tuple[str, str], str] = {}


def auth_headers(state: dict, user: str = ENGINEER, group: str = "ml-engineers") -> dict[str, str]:
    """{"Authorization": <user's id token>} in the stack `state`; the user is created in `group` if new."""
    key = (state["state_dir"], user)
    token = _tokens.get(key)
    if token and jwt.decode(token, options={"verify_signature": False})["exp"] > time.time() + 60:
        return {"Authorization": token}
    if key not in _tokens:
        create_user(state, user, PASSWORD, [group])
    _tokens[key] = sign_in(state, user, PASSWORD)["IdToken"]
    return {"Authorization": _tokens[key]}
