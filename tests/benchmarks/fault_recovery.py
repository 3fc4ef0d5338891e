"""bench-faults' recovery figures: for each fault, the images it found in flight, and the time from the fault
to the first inspection after it and to the last in-flight image's result, against the fault's target.

An image is in flight at a fault when it was uploaded before the fault was over (the replacement answered
/ping, the injected fault ended, the stack was up again) and had no result when the fault began. Recovery is
the time from the fault being over to the last such image's result; an image still without one (in the
dead-letter queue) means the fault was not recovered from, which only the long outage expects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass
class Fault:
    what: str
    started: float  # unix time
    #: when the fault was over: the replacement's /ping, the injected fault's end, the stack up again
    over: float | None = None
    #: the last in-flight image's result within this many seconds of `over` (None: measured, no target)
    target_s: float | None = None
    #: longer than the backoff schedule: its in-flight images are expected in the dead-letter queue
    dead_letters: bool = False


def result_time(row: dict) -> float | None:
    """When the row's result was made (the item's created_at), or None without one."""
    item = row.get("item")
    return datetime.fromisoformat(item["created_at"]).timestamp() if item else None


def _seconds(t: float | None, since: float) -> float | None:
    return None if t is None else round(t - since, 1)


def recovery(
    fault: Fault, rows: list[dict], reached: Callable[[dict], list[float]], in_dlq: set[str]
) -> dict:
    """The fault's figures from the uploaded rows (`t0`, `item`), the times each image reached the model
    (`reached(row)`) and the ids the dead-letter queue held."""
    over = fault.over if fault.over is not None else fault.started
    in_flight = [r for r in rows if r["t0"] < over and ((t := result_time(r)) is None or t > fault.started)]
    waiting = [r for r in in_flight if result_time(r) is None]
    # the first image inspected from a call made after the fault began (not one answered just before it)
    after = [result_time(r) for r in in_flight if (r.get("item") or {}).get("status") == "INSPECTED"
             and any(t > fault.started for t in reached(r))]  # fmt: skip
    last = max(result_time(r) for r in in_flight) if in_flight and not waiting else None
    return {
        "fault": fault.what,
        "in_flight": len(in_flight),
        "over_after_s": _seconds(over, fault.started),
        "first_inspection_s": _seconds(min(after, default=None), fault.started),
        "last_in_flight_s": _seconds(last, fault.started),
        "after_over_s": _seconds(last, over),
        "without_result": len(waiting),
        "in_dlq": sum(1 for r in waiting if r["id"] in in_dlq),
        "target_s": fault.target_s,
        "dead_letters": fault.dead_letters,
    }


def describe(f: dict) -> str:
    text = f"{f['fault']}: {f['in_flight']} in flight; over after {f['over_after_s']} s"
    text += f"; first inspection after {f['first_inspection_s']} s"
    if f["without_result"]:
        text += f"; {f['without_result']} without a result ({f['in_dlq']} in the DLQ)"
    else:
        text += (
            f"; last in-flight result after {f['last_in_flight_s']} s ({f['after_over_s']} s after it ended)"
        )
    if f["target_s"] is not None:
        text += f" (target <= {f['target_s']:.0f} s)"
    return text + (" (expected in the DLQ)" if f["dead_letters"] else "")


def missed(figures: list[dict]) -> list[str]:
    out = []
    for f in figures:
        if f["dead_letters"] and not f["in_dlq"]:
            out.append(f"{f['fault']}: none of its images reached the dead-letter queue (target: some)")
        elif f["dead_letters"]:
            continue
        elif f["target_s"] is not None and f["without_result"]:
            out.append(f"{f['fault']}: {f['without_result']} in-flight images without a result (target 0)")
        elif f["target_s"] is not None and f["after_over_s"] > f["target_s"]:
            out.append(f"{f['fault']}: last in-flight result {f['after_over_s']} s after the fault was over "
                       f"(target <= {f['target_s']:.0f} s)")  # fmt: skip
    return out
