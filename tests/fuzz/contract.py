"""What every fuzzed answer must hold, and the bounds of a fuzz run.

Schemathesis generates requests from the OpenAPI documents (openapi/), valid ones and, in negative mode, ones
that break the document (wrong types, out-of-range numbers, missing fields, malformed bodies). Its own checks
hold each answer to the document (no 5xx, a documented status, the documented body, invalid data refused);
`one_error_shape` adds this project's rule: an error is `{"error", "type"}` with a known type whose status is
the one answered, and never a stack trace.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from ivadas_contract.errors import TYPES

MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)

#: Generated examples per operation and mode: enough for every field's wrong types and edge values, small
#: enough that both documents fuzz in a few minutes on two cores.
MAX_EXAMPLES = 60
#: Refusals a request that breaks the document may get (413: schemathesis' longest strings and bodies).
REFUSALS = ["400", "401", "403", "404", "405", "409", "413", "415", "422"]


def fuzz_settings(max_examples: int = MAX_EXAMPLES) -> settings:
    """Derandomised (the same requests every run), no per-example deadline, no shrinking (a failure is shown
    as generated), no example database."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def config(headers: dict[str, str] | None = None) -> schemathesis.Config:
    data: dict = {
        # the caller's credentials are sent as given (the gates' refusals are tested in test_signin)
        "generation": {"mode": "all", "deterministic": True, "with-security-parameters": False},
        "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}},
    }
    if headers:
        data["headers"] = headers
    return schemathesis.Config.from_dict(data)


def _looks_like_a_trace(text: str) -> bool:
    return "Traceback (most recent call last)" in text or ('File "/' in text and "line " in text)


@schemathesis.check
def one_error_shape(ctx, response, case) -> bool | None:  # noqa: ANN001 - schemathesis' check signature
    """Every answer of 400 and above is the one error shape, its `type` one of errors.TYPES with this
    status; no answer carries a stack trace."""
    text = response.text or ""
    if _looks_like_a_trace(text):
        raise AssertionError(f"a stack trace in the answer: {text[:300]}")
    if response.status_code < 400:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        raise AssertionError(f"{response.status_code} answer is not JSON: {text[:200]!r}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str) or "type" not in doc:
        raise AssertionError(f"{response.status_code} answer is not the error shape: {text[:200]}")
    if doc["type"] not in TYPES:
        raise AssertionError(f"unknown error type {doc['type']!r}")
    if TYPES[doc["type"]] != response.status_code:
        raise AssertionError(f"type {doc['type']} answered with {response.status_code}")
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    one_error_shape,
]


@dataclass
class Tally:
    """Requests made and statuses seen, per operation: printed at the end of the run."""

    started: float = field(default_factory=time.monotonic)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)

    def add(self, label: str, status: int) -> None:
        per = self.statuses.setdefault(label, {})
        per[status] = per.get(status, 0) + 1

    def summary(self) -> str:
        total = sum(sum(v.values()) for v in self.statuses.values())
        lines = [f"{total} requests in {time.monotonic() - self.started:.1f} s"]
        for label, per in sorted(self.statuses.items()):
            lines.append(f"  {label}: " + ", ".join(f"{s}x{n}" for s, n in sorted(per.items())))
        return "\n".join(lines)


def operations(document: Path) -> list[tuple[str, str, GenerationMode]]:
    """(path, method, mode) of every operation a document lists, for one test each; negative mode only where
    the operation takes input to break."""
    doc = yaml.safe_load(document.read_text())
    out = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in _METHODS:
                continue
            # path parameters are fixed to existing resources (fuzz_operation), so they leave nothing to break
            params = [_resolve(doc, p) for p in [*item.get("parameters", []), *op.get("parameters", [])]]
            takes_input = any(p.get("in") != "path" for p in params) or "requestBody" in op
            out += [(path, method, mode) for mode in MODES if takes_input or mode is GenerationMode.POSITIVE]
    return out


_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _resolve(doc: dict, node: dict) -> dict:
    """A parameter object, its local `$ref` followed."""
    ref = node.get("$ref")
    if not ref:
        return node
    for part in ref.lstrip("#/").split("/"):
        doc = doc[part]
    return doc


def _known_class(case, use: bool, class_name: str | None):  # noqa: ANN001, ANN202 - a schemathesis Case
    """Half the generated bodies name a class the server has, so they reach decoding and scoring."""
    if not use or class_name is None or not isinstance(case.body, dict):
        return case
    if "class_name" in case.body:
        case.body["class_name"] = class_name
    for item in case.body.get("instances") or []:
        if isinstance(item, dict) and "class_name" in item:
            item["class_name"] = class_name
    return case


def fuzz_operation(
    schema: schemathesis.BaseSchema, path: str, method: str, mode: GenerationMode, base_url: str,
    tally: Tally, headers: dict[str, str] | None = None, max_examples: int = MAX_EXAMPLES,
    path_parameters: dict[str, str] | None = None, class_name: str | None = None,
) -> None:  # fmt: skip
    """Send `max_examples` generated requests of one operation in one mode, checking each answer."""
    operation = schema[path][method.upper()]
    label = f"{method.upper()} {path} {mode.value}"
    fixed = {k: v for k, v in (path_parameters or {}).items() if "{" + k + "}" in path} or None
    cases = st.tuples(operation.as_strategy(generation_mode=mode, path_parameters=fixed), st.booleans()).map(
        lambda pair: _known_class(*pair, class_name)
    )

    @fuzz_settings(max_examples)
    @given(case=cases)
    def run(case) -> None:  # noqa: ANN001
        response = case.call(base_url=base_url, headers=headers, timeout=60)
        tally.add(label, response.status_code)
        case.validate_response(response, checks=CHECKS)

    run()
