"""Every AWS call and command `ivadas deploy-stack` makes passes through here, so each one is printed, and a
dry run makes exactly the same decisions as a real run without changing anything.

How a dry run decides what exists: it sends every read (Describe*, Get*, List*, Head*) for real, so an account
it has credentials for answers as it would in a real run. A write is printed and not sent; botocore gets an
answer shaped like the operation's output with placeholders (`<UploadId from CreateMultipartUpload>`), so the
code after it runs as it would. Without credentials nothing can be asked: each read is answered "unknown",
which every step takes as "absent", so the plan shown is a fresh account's. External commands (docker, sam)
are printed and, in a dry run, not run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from botocore.model import OperationModel, Shape

from model_server.errors import IvadasError

_READS = ("Describe", "Get", "List", "Head")
#: Named like reads, but they issue something: printed and not sent in a dry run.
_WRITES_NAMED_AS_READS = {"GetAuthorizationToken"}
#: The error code of a read a dry run without credentials could not send.
UNKNOWN = "DryRunNoCredentials"
#: Error codes meaning "not there" for the reads the steps make.
NOT_FOUND = {
    UNKNOWN, "404", "NoSuchBucket", "NoSuchEntity", "ParameterNotFound", "RepositoryNotFoundException",
    "ImageNotFoundException", "UserNotFoundException", "ResourceNotFoundException", "NotFoundException",
}  # fmt: skip


def is_write(operation: str) -> bool:
    """Whether `operation` changes something (Cognito's reads are AdminGetUser, AdminList...)."""
    return operation in _WRITES_NAMED_AS_READS or not operation.removeprefix("Admin").startswith(_READS)


def absent(exc: Exception) -> bool:
    """Whether a read failed because the thing is not there (or, in a dry run, could not be asked)."""
    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    return error.get("Code") in NOT_FOUND or "does not exist" in error.get("Message", "")


def _placeholder(shape: Shape | None, operation: str, name: str = "", depth: int = 0) -> Any:
    """A value of `shape` standing in for what the write would have answered: `<Arn from CreateRole>`."""
    if shape is None or depth > 3:
        return None
    if shape.type_name == "structure":
        values = {n: _placeholder(s, operation, n, depth + 1) for n, s in shape.members.items()}
        return {n: v for n, v in values.items() if v is not None}
    if shape.type_name == "list":
        return []
    if shape.type_name in ("integer", "long", "float", "double"):
        return 0
    if shape.type_name == "boolean":
        return False
    if shape.type_name == "string":
        return f"<{name or shape.name} from {operation}>"
    return None


def _render(value: Any, limit: int = 120) -> str:
    if isinstance(value, bytes | bytearray) or hasattr(value, "read"):
        return f"<{len(value)} bytes>" if isinstance(value, bytes | bytearray) else "<file>"
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else f"{text[: limit - 20]}...<{len(text)} chars>"


class Recorder:
    """Clients and commands for one deploy; `out` receives each printed line."""

    def __init__(self, region: str, dry_run: bool, out: Callable[[str], None] = print) -> None:
        self.region, self.dry_run, self.out = region, dry_run, out
        self.session = boto3.session.Session(region_name=region)
        self.has_credentials = self.session.get_credentials() is not None

    def client(self, service: str, region: str | None = None) -> Any:
        client = self.session.client(service, region_name=region or self.region)
        client.meta.events.register("provide-client-params", self._keep_params)
        client.meta.events.register("before-call", self._before_call)
        client.meta.events.register("after-call", self._after_call)
        return client

    @staticmethod
    def _keep_params(params: dict, context: dict, **_: Any) -> None:
        """The parameters as the caller gave them (botocore adds idempotency tokens after this)."""
        context["ivadas_params"] = dict(params)

    def _line(self, model: OperationModel, context: dict) -> str:
        args = ", ".join(f"{k}={_render(v)}" for k, v in context.get("ivadas_params", {}).items())
        region = context.get("client_region")
        where = f" [{region}]" if region not in (None, self.region, "aws-global") else ""
        return f"{model.service_model.service_name}.{model.name}({args}){where}"

    def _before_call(self, model: OperationModel, context: dict, **_: Any) -> tuple | None:
        if is_write(model.name):
            if self.dry_run:
                self.out(f"  would call {self._line(model, context)}")
                return AWSResponse(None, 200, {}, None), _placeholder(model.output_shape, model.name) or {}
            self.out(f"  call {self._line(model, context)}")
            return None
        if self.dry_run and not self.has_credentials:
            error = {"Error": {"Code": UNKNOWN, "Message": "dry run without credentials"}}
            return AWSResponse(None, 400, {}, None), error
        return None

    def _after_call(
        self, model: OperationModel, http_response: Any, parsed: dict, context: dict, **_: Any
    ) -> None:
        """A read's line, with what it found."""
        if is_write(model.name):
            return
        code = parsed.get("Error", {}).get("Code") if http_response.status_code >= 300 else None
        if code == UNKNOWN:
            found = "unknown without credentials: taken as absent"
        elif code is None:
            listed = [v for k, v in parsed.items() if isinstance(v, list)]
            found = (
                f"{len(listed[0])} listed"
                if model.name.removeprefix("Admin").startswith("List") and listed
                else "found"
            )
        else:
            error = ClientError(parsed, model.name)
            found = f"{code}: absent" if absent(error) else code
        self.out(f"  ask  {self._line(model, context)} -> {found}")

    def run(self, argv: Sequence[str], stdin: str | None = None) -> None:
        """An external command (docker, sam): printed; run unless this is a dry run."""
        self.out(f"  {'would run' if self.dry_run else 'run'} {' '.join(argv)}")
        if self.dry_run:
            return
        # docker or sam, their argument lists built in image.py and stack.py
        done = subprocess.run(list(argv), input=stdin, text=True, check=False)  # nosec B603
        if done.returncode != 0:
            raise IvadasError(f"{' '.join(argv[:3])} exited {done.returncode} (its output is above)")

    def note(self, text: str) -> None:
        self.out(f"  {text}")
