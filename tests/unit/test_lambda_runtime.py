"""The local Lambda runtime loads handlers as Lambda does, so powertools behaves as deployed."""

from __future__ import annotations

import pytest

from infra.local.lambda_runtime import handler_location, load_module
from infra.template import Stack, load_template


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch) -> Stack:
    stack = Stack(load_template(), {"Stage": "local"})
    for name, value in stack.functions_environment().items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return stack


def test_every_environment_names_the_idempotency_records_alike(worker_env: Stack) -> None:
    """Powertools keys a record by the function's module and name: environments that named the module per
    instance kept separate records, so a message delivered to two of them was inspected twice."""
    location = handler_location(worker_env, "WorkerFunction")
    first, second = load_module(location, "0"), load_module(location, "1")
    assert first is not second  # each environment has its own module state
    names = {f"{m.inspect_once.__wrapped__.__module__}.{m.inspect_once.__wrapped__.__qualname__}"
             for m in (first, second)}  # fmt: skip
    assert names == {"ivadas_functions.worker.inspect_once"}
