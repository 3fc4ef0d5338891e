"""Lambda's execution environment, locally: a child process that loads the function's handler once (its cold
start) and serves one invocation at a time over a socket, with its own LambdaContext deadline.

Running invocations in a process, not a thread, is what lets the poller do what Lambda does: kill the
environment when the function's Timeout passes or when it crashes, and start a fresh one for the next batch;
it also lets a test kill -9 a worker in the middle of a batch. The poller's side is `ExecutionEnvironment`;
the child's loop is `main` (`python -m infra.local.lambda_process`). Messages are JSON, one per frame.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

from infra.local.processes import ROOT

#: Lambda allows 10 s for the init phase (module load); several environments importing boto3 and powertools
#: at once beside a loading model server on a shared 2-core machine can take longer.
INIT_TIMEOUT_S = 60.0


class InvocationFailed(Exception):
    """The invocation gave no result: the handler raised, the environment crashed or ran past its Timeout.
    Nothing of its batch is deleted; every message returns after the visibility timeout."""


class ExecutionEnvironment:
    """One execution environment of a function (the poller's handle on its child process)."""

    def __init__(
        self,
        function: str,
        instance: str,
        parameters: dict[str, str],
        log_path: Path,
        on_start: Callable[[], None] = lambda: None,
    ) -> None:
        self.function, self.instance, self.parameters = function, instance, parameters
        self.log_path = log_path
        self.on_start = on_start  # told after each (re)start, so the stack's state can name the new pid
        self.proc: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.ready = False  # past its init phase

    @property
    def ready_pid(self) -> int | None:
        """The pid of a running environment that has loaded its handler."""
        return self.pid if self.ready else None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, init_timeout: float = INIT_TIMEOUT_S) -> None:
        """A fresh process that has loaded the handler (waits for its init phase)."""
        self.ready = False
        parent, child = socket.socketpair()
        cmd = [sys.executable, "-m", "infra.local.lambda_process", "--fd", str(child.fileno()),
               "--function", self.function, "--instance", self.instance,
               "--parameters", json.dumps(self.parameters)]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(  # this interpreter on this package's runtime module, no shell  # nosec B603
                cmd, pass_fds=(child.fileno(),), stdout=log, stderr=subprocess.STDOUT,
                # unbuffered: the handler's log lines reach the file even when the process is killed
                env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}, cwd=ROOT,
            )  # fmt: skip
        child.close()
        self.conn = Connection(parent.detach())
        try:
            self._reply(init_timeout, "init")
        except InvocationFailed:
            self.kill()
            raise
        self.ready = True
        self.on_start()

    def invoke(self, event: dict, timeout_s: float) -> dict:
        """The handler's result for `event`, or InvocationFailed. A timeout or crash kills the process; the
        next invocation gets a fresh one (a cold start)."""
        if self.pid is None:
            self.start()
        deadline = time.time() + timeout_s
        try:
            self.conn.send_bytes(json.dumps({"event": event, "deadline": deadline}).encode())
        except OSError as exc:
            self.kill()
            raise InvocationFailed(f"environment {self.instance} is gone: {exc}") from None
        try:
            reply = self._reply(timeout_s, "invocation")
        except InvocationFailed as exc:
            self.platform_log(str(exc), event)
            raise
        if "error" in reply:  # the handler raised: Lambda keeps the environment
            raise InvocationFailed(reply["error"])
        return reply.get("result") or {}

    def platform_log(self, error: str, event: dict) -> None:
        """What Lambda's platform writes to the function's log when an invocation times out or crashes (the
        handler cannot): one JSON line naming the batch's messages, in the format of the handler's own."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3] + "+0000"
        ids = [r.get("messageId") for r in event.get("Records", [])]
        line = {"level": "ERROR", "message": "invocation failed", "timestamp": stamp, "error": error,
                "message_ids": ids}  # fmt: skip
        with open(self.log_path, "a") as out:
            out.write(json.dumps(line) + "\n")

    def _reply(self, timeout_s: float, phase: str) -> dict:
        try:
            ready = self.conn.poll(max(0.0, timeout_s))
            if not ready:
                pid = self.pid
                self.kill()
                raise InvocationFailed(f"{phase} timed out after {timeout_s:.1f} s: environment {pid} killed")
            return json.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            self.kill()
            code = self.proc.returncode if self.proc is not None else None
            raise InvocationFailed(
                f"environment {self.instance} exited during {phase} (code {code})"
            ) from None

    def kill(self) -> None:
        """SIGKILL, as Lambda ends an environment that timed out; waits for it to be gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def serve(conn: Connection, handler: Callable[[dict, object], dict], function_name: str) -> int:
    """Answer invocations until the poller closes the socket (or dies)."""
    from infra.local.lambda_runtime import LambdaContext

    conn.send_bytes(json.dumps({"ready": os.getpid()}).encode())
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return 0
        context = LambdaContext(function_name, max(0.0, request["deadline"] - time.time()))
        try:
            reply = {"result": handler(request["event"], context)}
        except Exception as exc:  # noqa: BLE001 - reported to the poller as Lambda reports a function error
            traceback.print_exc()
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.flush()
        conn.send_bytes(json.dumps(reply, default=str).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.lambda_process")
    parser.add_argument("--fd", type=int, required=True, help="the socket to the poller")
    parser.add_argument("--function", required=True, help="the function's logical id in template.yaml")
    parser.add_argument("--instance", required=True)
    parser.add_argument("--parameters", default="{}", help="template parameters (JSON)")
    args = parser.parse_args(argv)
    from infra.local.lambda_runtime import load_handler
    from infra.template import Stack, load_template

    stack = Stack(load_template(), json.loads(args.parameters))
    handler = load_handler(stack, args.function, args.instance)
    function_name = str(stack.resolve(stack.props(args.function)["FunctionName"]))
    return serve(Connection(args.fd), handler, function_name)


if __name__ == "__main__":
    sys.exit(main())
