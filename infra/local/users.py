"""People of the local stack: `ivadas local add-user NAME --group operators` creates a user in the local user
pool (moto's cognito-idp, created from template.yaml), and `sign_in` gets a user's id token the way the UI
does (InitiateAuth, USER_PASSWORD_AUTH, unsigned), for the CLI and the tests.

Users live in moto's memory: they are gone after `ivadas local down` (the pool is made anew on the next
`up`), so add them again after a restart. Passwords must meet the template's password policy: it is checked
before the user is made, so a weak password leaves no half-made user behind and a retry works.

A password comes from `--password`, `--password-stdin` (a script's pipe), `$IVADAS_PASSWORD`, or is asked on
the terminal; with no terminal to ask on it is an error of one line (exit 2), never an EOFError traceback.
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
    add_password_stdin_argument(p)
    p.add_argument("--email", help="add-user: the user's email (default: NAME@example.com)")


def add_password_stdin_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")


def read_password(given: str | None, from_stdin: bool, prompt: str) -> str:
    """`given`, stdin's first line (`from_stdin`), $IVADAS_PASSWORD, or asked on the terminal; IvadasError
    when there is none of them (stdin closed or not a terminal), never getpass's EOFError."""
    from model_server.errors import IvadasError

    if given:
        return given
    if from_stdin:
        password = (sys.stdin.readline() if sys.stdin and not sys.stdin.closed else "").rstrip("\r\n")
        if not password:
            raise IvadasError("--password-stdin: stdin held no password")
        return password
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    no_terminal = IvadasError(
        f"no password and no terminal to ask for one: pipe it with --password-stdin or set ${PASSWORD_ENV}"
    )
    if sys.stdin is None or sys.stdin.closed or not sys.stdin.isatty():
        raise no_terminal
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise no_terminal from None


def password_problems(password: str, policy: dict) -> list[str]:
    """What `password` lacks of a Cognito PasswordPolicy (DescribeUserPool's), in words; [] when it passes."""
    shortest = policy.get("MinimumLength", 0)
    needs = [
        (len(password) >= shortest, f"at least {shortest} characters"),
        (not policy.get("RequireLowercase") or any(c.islower() for c in password), "a lowercase letter"),
        (not policy.get("RequireUppercase") or any(c.isupper() for c in password), "an uppercase letter"),
        (not policy.get("RequireNumbers") or any(c.isdigit() for c in password), "a number"),
        (not policy.get("RequireSymbols") or any(not c.isalnum() for c in password), "a symbol"),
    ]
    return [need for met, need in needs if not met]


def _idp(state: dict) -> Any:
    import boto3

    from infra.local.state import use_state

    use_state(state)
    return boto3.client("cognito-idp")


def create_user(state: dict, name: str, password: str, groups: list[str], email: str | None = None) -> None:
    """A confirmed user with a permanent password, in `groups`, in the running stack's user pool. A password
    the pool's policy refuses is an IvadasError before anything is made; any later failure deletes the user
    again, so a retry never meets UsernameExistsException for a user nobody can sign in as."""
    from model_server.errors import IvadasError

    idp, pool_id = _idp(state), state["resources"]["UserPool"]
    pool = idp.describe_user_pool(UserPoolId=pool_id)["UserPool"]
    problems = password_problems(password, pool.get("Policies", {}).get("PasswordPolicy", {}))
    if problems:
        raise IvadasError(f"the password is too weak for the user pool: it needs {', '.join(problems)}")
    attributes = [
        {"Name": "email", "Value": email or f"{name}@example.com"},
        {"Name": "email_verified", "Value": "true"},
    ]
    idp.admin_create_user(
        UserPoolId=pool_id, Username=name, UserAttributes=attributes, MessageAction="SUPPRESS"
    )
    try:
        idp.admin_set_user_password(UserPoolId=pool_id, Username=name, Password=password, Permanent=True)
        for group in groups:
            idp.admin_add_user_to_group(UserPoolId=pool_id, Username=name, GroupName=group)
    except Exception:
        idp.admin_delete_user(UserPoolId=pool_id, Username=name)
        raise


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


def signed_in_headers(
    state: dict, name: str | None, password: str | None, password_stdin: bool = False
) -> dict[str, str]:
    """The Authorization header of `name` (default $IVADAS_USER), password as read_password finds it."""
    from model_server.errors import IvadasError

    name = name or os.environ.get(USER_ENV)
    if not name:
        raise IvadasError(f"sign in: give --user or set {USER_ENV} (ivadas local add-user makes users)")
    password = read_password(password, password_stdin, f"password of {name}: ")
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
    from botocore.exceptions import ClientError

    from model_server.errors import IvadasError

    state = read_state(args.state_dir)
    try:
        password = read_password(args.password, args.password_stdin, f"password for {args.name}: ")
        create_user(state, args.name, password, args.group or [], args.email)
    except (IvadasError, ClientError) as exc:  # the policy above; UsernameExistsException, a missing group
        error = exc.response["Error"] if isinstance(exc, ClientError) else {"Message": str(exc)}
        kind = f" ({error['Code']})" if error.get("Code") else ""
        print(f"ivadas local add-user: error: {error.get('Message')}{kind}", file=sys.stderr)
        return 2
    groups = ", ".join(args.group or []) or "no group"
    print(f"user {args.name} added to {groups} (sign in at {state['ui_url']})")
    return 0
