"""What every API handler checks of a request before it uses it, against the limits of the published contract
(openapi/api.yaml, ivadas_contract.limits): a value the document refuses is a 400 `bad_request` here too,
never a failed AWS call (an over-long DynamoDB key) or a crash on a wrong type further in."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler.exceptions import BadRequestError, ServiceError

from ivadas_contract.limits import MAX_API_BODY_BYTES, MAX_NAME_CHARS, MAX_TOKEN_CHARS

#: The page sizes a list endpoint serves (`limit`; openapi/api.yaml `Limit`), and its default.
MIN_PAGE, MAX_PAGE, DEFAULT_PAGE = 1, 200, 50
#: query parameter -> its longest value
QUERY_LIMITS = {"class_name": MAX_NAME_CHARS, "line": MAX_NAME_CHARS, "next_token": MAX_TOKEN_CHARS}


def query(params: dict[str, str] | None) -> dict[str, str]:
    """The query parameters, each within its length limit (BadRequestError otherwise)."""
    params = params or {}
    for name, limit in QUERY_LIMITS.items():
        if len(params.get(name) or "") > limit:
            raise BadRequestError(f"{name} must be at most {limit} characters")
    return params


def page_size(params: dict[str, str]) -> int:
    """The `limit` query parameter: a whole number from MIN_PAGE to MAX_PAGE (absent: DEFAULT_PAGE). Anything
    else is a 400, never clamped: `limit=0` answering one item hides the caller's mistake."""
    value = params.get("limit")
    if value is None:
        return DEFAULT_PAGE
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 4 and MIN_PAGE <= int(text) <= MAX_PAGE):
        raise BadRequestError(f"limit must be a whole number from {MIN_PAGE} to {MAX_PAGE}: {value[:20]!r}")
    return int(text)


#: The filters of a results query (`GET /results`), and those of them that are flags.
FILTERS = ("class_name", "line", "anomalous", "reviewed", "disagrees", "since", "until", "next_token")
FLAGS = ("anomalous", "reviewed", "disagrees")


def filters_body(event: Any) -> dict[str, str]:
    """The results filters of a JSON body (`POST /results/export`), as the query's text (`"true"` for a flag's
    true), within the query's limits: the same names, the same checks. An absent or empty body is {}; any
    other field is a 400, so a misspelt filter never exports every row."""
    body = json_object(event, required=False)
    unknown = sorted(set(body) - set(FILTERS))
    if unknown:
        names = ", ".join(repr(n[:40]) for n in unknown[:5])
        raise BadRequestError(f"unknown field {names}: the filters are {', '.join(FILTERS)}")
    found = {}
    for name, value in body.items():
        if name in FLAGS and isinstance(value, bool):
            value = "true" if value else "false"  # noqa: PLW2901 - the query's form of it
        if value is not None and not isinstance(value, str):
            raise BadRequestError(f"{name} must be {'true or false' if name in FLAGS else 'text'}")
        if value is not None:
            found[name] = value
    return query(found)


def json_body(event: Any) -> Any:
    """The request's body parsed as JSON (None when there is none): the one place a handler parses a body.
    Whatever a client sends is a 400 here, never a 500: not JSON, not UTF-8, nested deeper than the parser
    recurses (RecursionError), or a number of more than 4,300 digits (Python's int limit: ValueError); and a
    body over what Lambda passes is a 413 (API Gateway refuses it first; the local shim and tests do not)."""
    try:
        text = event.decoded_body
    except ValueError:  # base64 that is not, or bytes that are not UTF-8
        raise BadRequestError("the body is not valid JSON: not UTF-8 text") from None
    if not text:
        return None
    if len(text) > MAX_API_BODY_BYTES:
        raise ServiceError(413, f"the body is over the {MAX_API_BODY_BYTES:,} byte limit")
    try:
        return json.loads(text)
    except RecursionError:
        raise BadRequestError("the body is not JSON this API reads: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise BadRequestError(f"the body is not valid JSON: {exc.msg} at character {exc.pos}") from None
    except ValueError:  # int("...") past sys.get_int_max_str_digits()
        raise BadRequestError("the body is not JSON this API reads: a number of over 4,300 digits") from None


def json_object(event: Any, required: bool) -> dict:
    """The request's JSON body as an object; an absent (empty) body is {} unless `required`. A body that is
    present must be an object: `null` is not absence (BadRequestError otherwise)."""
    if not event.body and not required:
        return {}
    body = json_body(event)
    if not isinstance(body, dict):
        raise BadRequestError("the body must be a JSON object")
    return body


def text(body: dict, name: str, limit: int, required: bool = False) -> str | None:
    """`body[name]` as stripped text of at most `limit` characters; None when absent or null (if optional)."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) > limit or (required and not value.strip()):
        need = "is required: text" if required else "must be text"
        raise BadRequestError(f"{name} {need} of at most {limit} characters")
    return value.strip() or None
