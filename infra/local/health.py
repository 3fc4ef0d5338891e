"""The local model server's health check, as SageMaker's: an instance whose process died or that stops
answering `GET /ping` is replaced by a fresh one serving the same artifacts, and the replacement is logged."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

log = logging.getLogger("ivadas.local")


def answers_ping(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the local model server  # nosec B310
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


class HealthCheck(threading.Thread):
    """Every `interval` s: is the process alive, does /ping answer 200 within `timeout`? After `failures`
    failed pings in a row, or at once when the process is gone, `replace` starts a new instance."""

    def __init__(
        self,
        ping_url: str,
        process: Callable[[], subprocess.Popen | None],
        replace: Callable[[str], None],
        interval: float = 1.0,
        timeout: float = 5.0,
        failures: int = 3,
    ) -> None:
        super().__init__(name="model-server-health", daemon=True)
        self.ping_url, self.process, self.replace = ping_url, process, replace
        self.interval, self.timeout, self.failures = interval, timeout, failures
        #: set while the stack stops: no more replacements. The thread itself lives on until the process
        #: exits, because a replaced instance dies with the thread that started it (infra.local.child).
        self.paused = threading.Event()

    def unhealthy(self) -> str | None:
        """Why the instance must be replaced, or None."""
        proc = self.process()
        if proc is None:
            return None  # being replaced
        if proc.poll() is not None:
            return f"model server exited with {proc.returncode}"
        for _ in range(self.failures):
            if self.paused.is_set() or answers_ping(self.ping_url, self.timeout):
                return None
            if proc.poll() is not None:
                return f"model server exited with {proc.returncode}"
            time.sleep(self.interval)
        return f"model server did not answer /ping {self.failures} times in a row"

    def run(self) -> None:
        while True:
            time.sleep(self.interval)
            why = None if self.paused.is_set() else self.unhealthy()
            if why is None or self.paused.is_set():
                continue
            log.warning("%s: replacing it", why)
            try:
                self.replace(why)
            except Exception:  # noqa: BLE001 - try again at the next check
                log.exception("could not replace the model server")
