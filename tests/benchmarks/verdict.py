"""How every benchmark ends: its figures recorded, its tables and each missed target printed, the verdict as
the exit code.

The record goes to docs/benchmarks/<benchmark>.json (committed: it is where docs/benchmarks.md and the
sizing in docs/deploying.md are rendered from, by render.py) with the date, the command that made it and
the machine; a run given `--out` elsewhere (a smoke run with reduced sizes) leaves the docs alone.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from tests.benchmarks.tables import Table, markdown

ROOT = Path(__file__).resolve().parents[2]
RECORDS = ROOT / "docs/benchmarks"


def record_path(benchmark: str) -> Path:
    return RECORDS / f"{benchmark}.json"


def command_line(benchmark: str, argv: list[str]) -> str:
    """What a reader types to make the same record: the make target when the run took no arguments."""
    if not argv:
        return f"make {benchmark.replace('_', '-')}"
    return shlex.join([".venv/bin/python", f"tests/benchmarks/{benchmark}.py", *argv])


def machine() -> dict:
    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "unknown"
    )
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def portable(value: object) -> object:
    """Figures as the docs may show them: paths inside the repository relative to it, the MVTec data as
    `$IVADAS_MVTEC_ROOT`, any other absolute path reduced to its last part (no machine's folders in docs/)."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        mvtec = os.environ.get("IVADAS_MVTEC_ROOT") or str(ROOT.parent / "shared/data/mvtec")
        if value.startswith(mvtec):
            return "$IVADAS_MVTEC_ROOT" + value[len(mvtec) :]
        if value.startswith(str(ROOT) + "/"):
            return value[len(str(ROOT)) + 1 :]
        return ".../" + Path(value).name
    return value


def conclude(
    benchmark: str,
    figures: dict,
    missed: list[str],
    tables: list[Table] | None = None,
    out: str | None = None,
) -> int:
    """Record the run, print its tables, each missed target and the verdict; the exit code (1 on a miss)."""
    path = Path(out) if out else record_path(benchmark)
    record = {
        "benchmark": benchmark,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(benchmark, sys.argv[1:]),
        "machine": machine(),
        "exit_code": 1 if missed else 0,
        "missed": missed,
        "figures": portable(figures),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"\n{markdown(tables)}" if tables else "", end="")
    print(f"wrote {path}")
    if path.resolve().parent == RECORDS.resolve():
        from tests.benchmarks.render import write_docs  # the renderer loads every benchmark's module

        for doc in write_docs():
            print(f"rendered {doc.relative_to(ROOT)}")
    for line in missed:
        print(f"MISSED: {line}")
    print("all targets met" if not missed else f"{len(missed)} target(s) missed", flush=True)
    return 1 if missed else 0
