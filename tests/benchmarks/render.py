"""The figures in docs/, rendered from the benchmarks' records (docs/benchmarks/<benchmark>.json, written by
verdict.conclude at the end of every run), never copied by hand.

A page keeps its prose; each block between `<!-- generated: KEY -->` and `<!-- end generated: KEY -->` is
rewritten: KEY is a benchmark (its run's date, command, machine and verdict, then the tables its module's
`tables(figures)` makes) or `sizing` (docs/deploying.md, from bench_server's record). A benchmark that has no
record yet says how to make one.

Run: .venv/bin/python tests/benchmarks/render.py [--check]   (--check: exit 1 where a page differs;
tests/unit/test_docs.py runs the same check in `make test`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.sizing import sizing_tables  # noqa: E402
from tests.benchmarks.tables import Table, markdown  # noqa: E402

DOCS = ROOT / "docs"
RECORDS = DOCS / "benchmarks"
#: Every `make bench-*` target's module, in the order docs/benchmarks.md presents them.
BENCHMARKS = (
    "bench_model",
    "bench_quality",
    "bench_server",
    "bench_pipeline",
    "bench_feedback",
    "bench_faults",
    "bench_soak",
    "bench_peers",
)
BLOCK = re.compile(
    r"(<!-- generated: (?P<key>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=key) -->)", re.S
)


def bench_module(name: str) -> ModuleType:
    """A benchmark's module, loaded from its file (the benchmarks are scripts, not a package)."""
    key = f"ivadas_benchmark_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "tests/benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def load_record(name: str, records: Path = RECORDS) -> dict | None:
    path = records / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def header(record: dict) -> str:
    m = record["machine"]
    verdict = (
        "exit 0, every target met"
        if not record["missed"]
        else "exit 1, missed: " + "; ".join(record["missed"])
    )
    return f"Run {record['date']}, `{record['command']}`, on {m['cpus']} CPUs ({m['cpu']}): {verdict}.\n"


def benchmark_block(name: str, records: Path = RECORDS) -> str:
    record = load_record(name, records)
    target = f"make {name.replace('_', '-')}"
    if record is None:
        return f"No run recorded yet: `{target}` records one in docs/benchmarks/{name}.json.\n"
    tables: list[Table] = bench_module(name).tables(record["figures"])
    return header(record) + "\n" + markdown(tables)


def sizing_block(records: Path = RECORDS) -> str:
    record = load_record("bench_server", records)
    if record is None:
        return "No bench-server run recorded yet: `make bench-server` records what this section needs.\n"
    return f"From bench-server's run of {record['date']}:\n\n" + markdown(sizing_tables(record["figures"]))


def blocks(records: Path = RECORDS) -> dict[str, Callable[[], str]]:
    found: dict[str, Callable[[], str]] = {n: (lambda n=n: benchmark_block(n, records)) for n in BENCHMARKS}
    found["sizing"] = lambda: sizing_block(records)
    return found


def render(text: str, records: Path = RECORDS) -> str:
    """`text` with every generated block rewritten from the records; an unknown key is an error."""
    makers = blocks(records)

    def one(match: re.Match) -> str:
        key = match["key"]
        if key not in makers:
            raise KeyError(f"no renderer for generated block '{key}'")
        return f"{match.group(1)}{makers[key]()}{match.group(4)}"

    return BLOCK.sub(one, text)


def pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if "<!-- generated: " in p.read_text())


def stale(records: Path = RECORDS) -> list[Path]:
    return [p for p in pages() if render(p.read_text(), records) != p.read_text()]


def write_docs(records: Path = RECORDS) -> list[Path]:
    """Rewrite every page whose blocks differ from the records; the pages rewritten."""
    changed = stale(records)
    for page in changed:
        page.write_text(render(page.read_text(), records))
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 where a page differs from the records")
    args = parser.parse_args()
    if args.check:
        out = stale()
        for page in out:
            print(f"{page.relative_to(ROOT)} differs from its records: run tests/benchmarks/render.py")
        return 1 if out else 0
    for page in write_docs():
        print(f"rendered {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
