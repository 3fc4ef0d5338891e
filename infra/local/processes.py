"""Child processes of the local stack: free ports, starting a child with its log, waiting until it answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python args...` from the repository, with its output appended to `log_path` (and `env` added to this
    process's environment); a module (`-m M ...`) runs under infra.local.child, so it dies with this process
    even when this one is killed -9."""
    if args[:1] == ["-m"]:
        args = ["-m", "infra.local.child", str(os.getpid()), *args[1:]]
    return subprocess.Popen(  # this interpreter with the stack's own modules, no shell  # nosec B603
        [sys.executable, *args],
        stdout=open(log_path, "ab"),  # noqa: SIM115 - the child process owns the log file
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)},
    )


def wait_http(
    url: str,
    timeout: float,
    proc: subprocess.Popen | None = None,
    ok: Callable[[int], bool] = lambda status: status < 500,
) -> None:
    """Poll `url` until its status passes `ok` (default: any answer but a 5xx); fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{' '.join(map(str, proc.args))} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # a local service's health URL  # nosec B310
                status = resp.status
        except urllib.error.HTTPError as err:
            status = err.code
        except OSError:
            status = None
        if status is not None and ok(status):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer as expected within {timeout:.0f} s")
