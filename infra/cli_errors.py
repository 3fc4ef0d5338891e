"""How the `ivadas` CLI reports a failure: a line on stderr for people and, for a command run with `--json`,
the one error document (ivadas_contract.errors) on stdout, so a script reads the same `{"error", "type"}` the
API answers. An error the API sent is shown with its type."""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from ivadas_contract.errors import TYPES, error_body, kind_for_status

#: the kind of a user-facing error class without its own `kind` (model_server.errors)
_KINDS = {"ImageError": "invalid_image", "DataError": "bad_request", "ArtifactError": "unprocessable",
          "UnknownClassError": "not_found"}  # fmt: skip


def kind_of(exc: BaseException) -> str:
    """The error type of an exception: its `kind`, its class's, `unavailable` for an AWS or connection error
    or a stop for want of a stack, `internal` for anything else."""
    kind = getattr(exc, "kind", None)
    if kind in TYPES:
        return kind
    if isinstance(exc, SystemExit):  # how the CLI stops when the local stack is not running (state.py)
        return "unavailable"
    for cls in type(exc).__mro__:
        if cls.__name__ in _KINDS:
            return _KINDS[cls.__name__]
    if type(exc).__module__.startswith("botocore") or isinstance(exc, ConnectionError):
        return "unavailable"
    return "bad_request" if type(exc).__name__ == "IvadasError" else "internal"


def report(command: str, exc: BaseException, as_json: bool) -> int:
    """Print the failure of `command` (2 is the exit status)."""
    kind = kind_of(exc)
    message = str(exc) if kind != "internal" else f"internal error: {type(exc).__name__}: {exc}"
    print(f"ivadas {command}: error: {message}", file=sys.stderr)
    if kind == "internal":
        traceback.print_exception(exc, file=sys.stderr)
    if as_json:
        print(json.dumps(error_body(kind, message)))
    return 2


def api_error(status: int, raw: bytes) -> dict[str, str]:
    """The error document of an API answer: its own body when it is one, else one made from the status."""
    try:
        doc: Any = json.loads(raw)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc.get("type") in TYPES:
        return error_body(doc["type"], doc["error"])
    text = raw.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"
    return error_body(kind_for_status(status), text)


def describe(doc: dict[str, str]) -> str:
    """`message (type)`, as the CLI shows an API error."""
    return f"{doc['error']} ({doc['type']})"
