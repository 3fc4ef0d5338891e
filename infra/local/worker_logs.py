"""What the local stack's worker execution environments logged (`logs/worker-N.log`: powertools' JSON lines
and the platform's line for a batch that timed out or crashed), read whole or followed as it is written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

#: the worker's line for a failed record, and the platform's for a batch that timed out or crashed
FAILED = ("inspection failed: the message returns to the queue", "invocation failed")
#: the worker's line for a call it tries again within the invocation
RETRYING = "endpoint call failed: retrying"


def _records(lines: Iterator[str]) -> Iterator[dict]:
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            yield json.loads(line)
        except ValueError:
            continue


def worker_log_records(logs: Path) -> Iterator[dict]:
    """The JSON lines of every worker environment's log (the platform's and powertools')."""
    for path in sorted(logs.glob("worker-*.log")):
        yield from _records(iter(path.read_text(errors="replace").splitlines()))


class WorkerLogFollower:
    """The JSON lines the worker environments write from now on, whole lines only, as they come."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.offsets = {path: path.stat().st_size for path in logs.glob("worker-*.log")}

    def new_records(self) -> Iterator[dict]:
        for path in sorted(self.logs.glob("worker-*.log")):
            start = self.offsets.get(path, 0)
            try:
                size = path.stat().st_size
            except OSError:
                continue
            start = start if size >= start else 0  # a log started again
            if size == start:
                continue
            with open(path, "rb") as f:
                f.seek(start)
                chunk = f.read(size - start)
            whole = chunk.rfind(b"\n") + 1  # a line still being written is read next time
            self.offsets[path] = start + whole
            yield from _records(iter(chunk[:whole].decode(errors="replace").splitlines()))
