"""The CLI's failures: with `--json` the one error document on stdout; an API error shown with its type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.cli import main
from infra.cli_errors import api_error, describe, kind_of
from ivadas_contract.errors import TYPES


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
