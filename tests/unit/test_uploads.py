"""What `ivadas inspect` reads from the worker logs as it goes (infra.uploads, infra.local.worker_logs): which
images the worker is retrying and which failed their last delivery, from whole lines only."""

from __future__ import annotations

import json
from pathlib import Path

from infra.local.worker_logs import FAILED, RETRYING
from infra.uploads import _Retries, summarise


def line(message: str, iid: str, **extra: object) -> str:
    return json.dumps({"level": "INFO", "message": message, "inspection_id": iid, **extra}) + "\n"


def test_retries_and_last_deliveries_are_read_as_the_logs_grow(tmp_path: Path) -> None:
    old = tmp_path / "worker-0.log"
    old.write_text(line(FAILED[0], "before", delivery=1))  # written before this run: not this run's
    retries = _Retries(tmp_path, max_receive=3)
    retries.read()
    assert retries.retrying == set()
    with open(old, "a") as log:
        log.write(line(RETRYING, "a", attempt=1) + "not JSON: a traceback line\n")
        log.write(line(FAILED[0], "b", delivery=3)[:30])  # half a line: read once it is whole
    (tmp_path / "worker-1.log").write_text(line(FAILED[0], "c", delivery=2) + line("result written", "d"))
    retries.read()
    assert retries.retrying == {"a", "c"} and retries.dead == set()
    with open(old, "a") as log:
        log.write(line(FAILED[0], "b", delivery=3)[30:])
    retries.read()
    assert retries.retrying == {"a", "b", "c"} and retries.dead == {"b"}


def test_an_image_without_a_result_is_in_flight_while_the_queue_holds_its_message() -> None:
    def row(status: str | None, **extra: object) -> dict:
        item = {"status": status, "is_anomaly": False} if status else None
        return {"key": "k", "id": "i", "item": item, "latency_ms": 5.0, **extra}

    rows = [row("INSPECTED"), row("REJECTED"), row(None), row(None), row(None, dead_lettered=True)]
    rows.append({"key": None, "id": None, "item": None, "error": "upload failed"})
    summary = summarise(rows, still_queued=2)
    assert (summary["inspected"], summary["rejected"], summary["not_uploaded"]) == (1, 1, 1)
    assert (summary["in_flight"], summary["dead_lettered"], summary["lost"]) == (2, 1, 0)
    assert summarise(rows, still_queued=1)["lost"] == 1  # more waiting images than messages left: one lost
