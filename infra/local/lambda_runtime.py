"""What Lambda's Python runtime does for a function, locally: find the handler from the template's CodeUri and
Handler, load a fresh copy of its module per execution environment, and hand it a context object.

The handler packages in functions/ (the CodeUri) are installed under their own names, so the module's imports
resolve exactly as in the deployed package; `load_handler` checks that they resolve into CodeUri.
"""

from __future__ import annotations

import importlib.util
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from infra.local.processes import ROOT
from infra.template import ACCOUNT, REGION, Stack

Handler = Callable[[dict, "LambdaContext"], dict]


@dataclass
class LambdaContext:
    function_name: str
    timeout_s: float

    def __post_init__(self) -> None:
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class HandlerLocation:
    code_uri: Path  # the function's package root, as `sam build` zips it
    module: str  # e.g. ivadas_functions.worker
    function: str  # e.g. handler

    @property
    def path(self) -> Path:
        return self.code_uri / (self.module.replace(".", "/") + ".py")


def handler_location(stack: Stack, logical_id: str) -> HandlerLocation:
    props = stack.props(logical_id)
    code_uri = props.get("CodeUri") or stack.template.get("Globals", {}).get("Function", {}).get("CodeUri")
    module, function = props["Handler"].rsplit(".", 1)
    return HandlerLocation((ROOT / code_uri).resolve(), module, function)


def load_module(location: HandlerLocation, instance: str) -> ModuleType:
    """A fresh copy of the handler module (its module-level state is per execution environment), under the
    module's own name as Lambda imports it: powertools names idempotency records after the function's module,
    so copies named per instance would each keep their own records and never see each other's work."""
    package = importlib.util.find_spec(location.module.split(".")[0])
    origin = Path(package.origin).resolve() if package and package.origin else None
    if origin is None or not origin.is_relative_to(location.code_uri):
        raise RuntimeError(
            f"{location.module} does not import from its CodeUri {location.code_uri} ({origin})"
        )
    spec = importlib.util.spec_from_file_location(location.module, location.path)  # not put in sys.modules
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_handler(stack: Stack, logical_id: str, instance: str) -> Handler:
    location = handler_location(stack, logical_id)
    return getattr(load_module(location, instance), location.function)


def function_timeout(stack: Stack, logical_id: str) -> float:
    timeout = stack.props(logical_id).get("Timeout")
    if timeout is None:
        timeout = stack.template.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    return float(stack.resolve(timeout))
