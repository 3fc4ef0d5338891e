"""People of the local stack: `ivadas local add-user NAME --group operators` creates a user in the local user
pool (moto's cognito-idp, created from template.yaml), and `sign_in` gets a user's id token the way the UI
does (InitiateAuth, USER_PASSWORD_AUTH, unsigned), for the CLI and the tests.

Users live in moto's memory: they are gone after `ivadas local down` (the pool is made anew on the next
`up`), so add them again after a restart. Passwords must meet the template's password policy.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

#: where the CLI finds a user's name and password when no flag gives them
USER_ENV, PASSWORD_ENV = "IVADAS_USER", "IVADAS_PASSWORD"
GROUPS = ("operators", "ml-engineers")


def add_user_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `ivadas local add-user` (kept import-free for `ivadas --help`)."""
    p.add_argument("name", nargs="?", help="add-user: the user's name (what they sign in with)")
    p.add_argument("--group", action="append", choices=GROUPS, help="add-user: a group (repeatable)")
    p.add_argument("--password", help=f"add-user: a permanent password (default: ${PASSWORD_ENV}, or asked)")
    p.add_argument("--email", help="add-user: the user's email (default: NAME@example.com)")


def _idp(state: dict) -> Any:
    import boto3

    from infra.local.state import use_state

    use_state(state)
    return boto3.client("cognito-idp")


def create_user(state: dict, name: str, password: str, groups: list[str], email: str | None = None) -> None:
    """A confirmed user with a permanent password, in `groups`, in the running stack's user pool."""
    idp, pool_id = _idp(state), state["resources"]["UserPool"]
    attributes = [
        {"Name": "email", "Value": email or f"{name}@example.com"},
        {"Name": "email_verified", "Value": "true"},
    ]
    idp.admin_create_user(
        UserPoolId=pool_id, Username=name, UserAttributes=attributes, MessageAction="SUPPRESS"
    )
    idp.admin_set_user_password(UserPoolId=pool_id, Username=name, Password=password, Permanent=True)
    for group in groups:
        idp.admin_add_user_to_group(UserPoolId=pool_id, Username=name, GroupName=group)


def sign_in(state: dict, name: str, password: str) -> dict[str, Any]:
    """InitiateAuth USER_PASSWORD_AUTH as the UI sends it (no AWS credentials); its AuthenticationResult."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    endpoint = state["environment"]["AWS_ENDPOINT_URL"]
    idp = boto3.client(
        "cognito-idp", endpoint_url=endpoint, region_name=state["environment"]["AWS_REGION"],
        config=Config(signature_version=UNSIGNED),
    )  # fmt: skip
    answer = idp.initiate_auth(
        AuthFlow="USER_PASSWORD_AUTH",
        ClientId=state["resources"]["UserPoolClient"],
        AuthParameters={"USERNAME": name, "PASSWORD": password},
    )
    if "AuthenticationResult" not in answer:
        raise PermissionError(f"sign-in of {name} needs {answer.get('ChallengeName')}: finish it in the UI")
    return answer["AuthenticationResult"]


def signed_in_headers(state: dict, name: str | None, password: str | None) -> dict[str, str]:
    """The Authorization header of `name` (default $IVADAS_USER), password from $IVADAS_PASSWORD or asked."""
    from model_server.errors import IvadasError

    name = name or os.environ.get(USER_ENV)
    if not name:
        raise IvadasError(f"sign in: give --user or set {USER_ENV} (ivadas local add-user makes users)")
    password = password or os.environ.get(PASSWORD_ENV) or getpass.getpass(f"password of {name}: ")
    try:
        return {"Authorization": sign_in(state, name, password)["IdToken"]}
    except Exception as exc:  # noqa: BLE001 - botocore's NotAuthorizedException and the challenge above
        raise IvadasError(f"sign-in of {name} failed: {exc}") from None


def add_user_command(args: argparse.Namespace) -> int:
    """`ivadas local add-user NAME --group G [--password P] [--email E]`."""
    from infra.local.state import read_state

    if not args.name:
        print("ivadas local add-user: error: give the user's name", file=sys.stderr)
        return 2
    state = read_state(args.state_dir)
    password = args.password or os.environ.get(PASSWORD_ENV) or getpass.getpass(f"password for {args.name}: ")
    try:
        create_user(state, args.name, password, args.group or [], args.email)
    except Exception as exc:  # noqa: BLE001 - botocore's InvalidPasswordException, UsernameExistsException
        print(f"ivadas local add-user: error: {exc}", file=sys.stderr)
        return 2
    groups = ", ".join(args.group or []) or "no group"
    print(f"user {args.name} added to {groups} (sign in at {state['ui_url']})")
    return 0
