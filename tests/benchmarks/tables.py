"""The tables a benchmark makes of its figures: printed at the end of its run and written into docs/ by
render.py from the same JSON, so what a reader sees is what the run measured."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Table:
    title: str
    header: Sequence[str]
    rows: list[Sequence[object]]
    #: sentences printed under the table (what a row means, which figures a target reads)
    notes: list[str] = field(default_factory=list)


def cell(value: object) -> str:
    """A figure as a table shows it: None as '-', numbers to at most 4 decimals, grouped from 10,000."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        value = round(value, 4)
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value).replace("|", "\\|")


def markdown(tables: Sequence[Table]) -> str:
    out: list[str] = []
    for t in tables:
        out += [f"**{t.title}**", "", "| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
        out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in t.rows]
        out += ["", *(f"- {note}" for note in t.notes), *([""] if t.notes else [])]
    return "\n".join(out).rstrip() + "\n"


def rate(r: dict | None) -> str | None:
    """A count over n with its Wilson 95 % interval, as the benchmarks store rates."""
    if not r:
        return None
    lo, hi = r["wilson95"]
    return f"{r['count']}/{r['n']} = {r['rate']:.3f} [{lo:.3f}, {hi:.3f}]"
