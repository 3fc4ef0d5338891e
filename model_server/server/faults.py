"""Fault injection and invocation counts, for the local stack's model server only (`serve --admin`): what a
fault benchmark needs to make the endpoint misbehave as a SageMaker endpoint can, and to see how often each
image reached the model.

Faults (`PUT /admin/faults {"mode": ..., "for_seconds": N}`; `GET` reads them), each for a while or until off:
- `slow`: every invocation is answered after `delay_seconds` (past the worker's timeout, say);
- `throttle`: what SageMaker's runtime answers a throttled caller: 400 `ThrottlingException` "Rate exceeded"
  (the AWS common error; botocore's sagemaker-runtime model lists no throttling shape of its own);
- `error`: a 5xx from the endpoint (`status`: 503 `ServiceUnavailable` by default, 500 `InternalFailure`);
- `off`.

Counts (`GET /admin/invocations`): invocations that reached the model per image (the SHA-256 of its bytes),
and answers the faults gave instead. With IVADAS_INVOCATIONS_JOURNAL set, each count is appended to that file
(with its time) as it happens and read back at start, so a model server killed and replaced keeps its
predecessor's counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ivadas_contract.errors import error_body

JOURNAL_ENV = "IVADAS_INVOCATIONS_JOURNAL"
MODES = ("off", "slow", "throttle", "error")
#: status -> (SageMaker runtime's error code, our error kind)
_ERRORS = {500: ("InternalFailure", "internal"), 503: ("ServiceUnavailable", "unavailable")}


def _aws_error(status: int, code: str, kind: str, message: str) -> JSONResponse:
    """An error as SageMaker's runtime sends it (botocore reads the code from x-amzn-ErrorType, the text from
    "message"), in the one error shape."""
    return JSONResponse(
        {**error_body(kind, message), "message": message},
        status_code=status,
        headers={"x-amzn-ErrorType": code},
    )


class Faults:
    """The injected fault now in force and the per-image invocation counts of one model server process."""

    def __init__(self, journal: Path | None = None) -> None:
        self.mode, self.until, self.delay_s, self.status = "off", None, 0.0, 503
        self.invocations: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.journal = journal
        self.lock = threading.Lock()
        if journal is not None and journal.exists():
            for line in journal.read_text().splitlines():  # "<kind> <unix time> [<sha256>]"
                kind, _, digest = (line.split(" ") + ["", ""])[:3]
                (self.invocations if kind == "invocation" else self.refused)[digest or kind] += 1

    @classmethod
    def from_env(cls) -> Faults:
        path = os.environ.get(JOURNAL_ENV)
        return cls(Path(path) if path else None)

    def _record(self, kind: str, digest: str = "") -> None:
        with self.lock:
            (self.invocations if kind == "invocation" else self.refused)[digest or kind] += 1
            if self.journal is not None:
                with open(self.journal, "a") as out:
                    out.write(f"{kind} {time.time():.3f} {digest}".rstrip() + "\n")

    def current(self) -> dict:
        if self.until is not None and time.monotonic() >= self.until:
            self.mode, self.until = "off", None
        left = None if self.until is None else round(self.until - time.monotonic(), 1)
        return {"mode": self.mode, "seconds_left": left, "delay_seconds": self.delay_s, "status": self.status}

    def configure(self, doc: dict) -> dict:
        """Set the fault from a PUT body; ValueError says what is wrong with it."""
        mode = doc.get("mode")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        duration = doc.get("for_seconds")
        delay = doc.get("delay_seconds", 0)
        status = doc.get("status", 503)
        if duration is not None and (not isinstance(duration, int | float) or duration <= 0):
            raise ValueError("for_seconds must be a positive number")
        if not isinstance(delay, int | float) or delay < 0 or (mode == "slow" and delay <= 0):
            raise ValueError("delay_seconds must be a positive number for slow")
        if status not in _ERRORS:
            raise ValueError(f"status must be one of {', '.join(map(str, _ERRORS))}")
        self.mode, self.delay_s, self.status = mode, float(delay), status
        self.until = None if duration is None else time.monotonic() + float(duration)
        return self.current()

    async def before(self) -> Response | None:
        """The fault's answer to an invocation, or None to let it reach the model (after a delay if slow)."""
        mode = self.current()["mode"]
        if mode == "slow":
            await asyncio.sleep(self.delay_s)
        elif mode == "throttle":
            self._record("throttled")
            return _aws_error(400, "ThrottlingException", "throttled", "Rate exceeded")
        elif mode == "error":
            code, kind = _ERRORS[self.status]
            self._record(f"error_{self.status}")
            return _aws_error(self.status, code, kind, f"injected fault: {code}")
        return None

    def count(self, images: list[bytes]) -> None:
        """One invocation that reached the model, per image it carried."""
        for image in images:
            self._record("invocation", hashlib.sha256(image).hexdigest())

    def routes(self) -> list[Route]:
        async def faults(request: Request) -> Response:
            if request.method == "GET":
                return JSONResponse(self.current())
            try:
                doc = json.loads(await request.body() or b"{}")
                state = self.configure(doc if isinstance(doc, dict) else {})
            except ValueError as exc:
                return JSONResponse(error_body("bad_request", str(exc)), status_code=400)
            return JSONResponse(state)

        async def invocations(request: Request) -> Response:
            with self.lock:
                return JSONResponse({"invocations": dict(self.invocations), "refused": dict(self.refused)})

        return [
            Route("/admin/faults", faults, methods=["GET", "PUT"]),
            Route("/admin/invocations", invocations, methods=["GET"]),
        ]
