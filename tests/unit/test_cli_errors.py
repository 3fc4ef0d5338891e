"""The CLI's failures: with `--json` the one error document on stdout; an API error shown with its type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.cli import main
from infra.cli_errors import api_error, describe, kind_of
from infra.local.state import write_state
from ivadas_contract.errors import TYPES

ROOT = Path(__file__).resolve().parents[2]


def test_a_json_command_that_fails_prints_the_error_document(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["stats", "--json", "--state-dir", str(tmp_path / "no-stack")])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert code == 2 and set(doc) == {"error", "type"} and doc["type"] == "unavailable"
    assert "not running" in doc["error"] and "not running" in err


def test_without_json_the_failure_stays_a_line_for_people(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit, match="not running"):
        main(["stats", "--state-dir", str(tmp_path / "no-stack")])
    assert capsys.readouterr().out == ""


def test_an_error_kind_comes_from_the_exception() -> None:
    from model_server.errors import DataError, ImageError

    assert kind_of(ImageError("x.png: not an image")) == "invalid_image"
    assert kind_of(DataError("no such folder")) == "bad_request"
    assert kind_of(RuntimeError("a bug")) == "internal"
    assert all(kind_of(e) in TYPES for e in (ImageError("a"), DataError("b"), SystemExit("c")))


def test_api_errors_are_shown_with_their_type() -> None:
    doc = api_error(401, json.dumps({"error": "sign in first", "type": "unauthorized"}).encode())
    assert describe(doc) == "sign in first (unauthorized)"
    assert api_error(502, b"Bad Gateway") == {"error": "Bad Gateway", "type": "internal"}  # not the shape


def _ivadas_without_a_terminal(args: list[str], state_dir: Path, stdin: str | None = None) -> tuple[int, str]:
    """`ivadas ARGS` with no controlling terminal and stdin closed (or fed `stdin`), as from cron or CI."""
    nowhere = "http://127.0.0.1:9"
    environment = {"AWS_ENDPOINT_URL": nowhere, "AWS_REGION": "us-east-1"}
    resources = {"UserPool": "p", "UserPoolClient": "c"}
    write_state(
        state_dir, {"api_url": nowhere, "ui_url": nowhere, "resources": resources, "environment": environment}
    )
    env = {k: v for k, v in os.environ.items() if k != "IVADAS_PASSWORD"} | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "infra.cli", *args, "--state-dir", str(state_dir)],
        input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL, capture_output=True, text=True,
        env=env, timeout=120, start_new_session=True,
    )  # fmt: skip
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("args", [["results", "--user", "ana"], ["local", "add-user", "bob"]])
def test_no_terminal_to_ask_a_password_on_is_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    code, err = _ivadas_without_a_terminal(args, tmp_path)
    assert code == 2, err
    command = " ".join(args[:2] if args[0] == "local" else args[:1])
    assert err.strip() == (
        f"ivadas {command}: error: no password and no terminal to ask for one: pipe it with "
        "--password-stdin or set $IVADAS_PASSWORD"
    )


def test_a_password_comes_from_stdin_when_asked_to(tmp_path: Path) -> None:
    code, err = _ivadas_without_a_terminal(["results", "--user", "ana", "--password-stdin"], tmp_path, "pw\n")
    assert code == 2 and err.startswith("ivadas results: error: sign-in of ana failed"), err  # no stack there
    assert len(err.strip().splitlines()) == 1
    code, err = _ivadas_without_a_terminal(["results", "--user", "ana", "--password-stdin"], tmp_path, "")
    assert code == 2 and err.strip() == "ivadas results: error: --password-stdin: stdin held no password"


def test_a_password_is_checked_against_the_pool_policy_in_words() -> None:
    from infra.local.users import password_problems

    policy = {"MinimumLength": 14, "RequireLowercase": True, "RequireUppercase": True, "RequireNumbers": True,
              "RequireSymbols": True}  # fmt: skip
    assert password_problems("Correct-Horse-Battery-9", policy) == []
    assert password_problems("short1A!", policy) == ["at least 14 characters"]
    assert password_problems("alllowercaseletters", policy) == ["an uppercase letter", "a number", "a symbol"]
