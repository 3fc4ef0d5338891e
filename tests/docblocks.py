"""The shell blocks of README.md and docs/: which are runnable, and whether what a run printed is what the
block shows.

Every fenced `bash`, `sh`, `shell` or `console` block carries a marker after its language:

- `run`: executed as written by tests/e2e/test_doc_blocks.py, in a sandbox with the files the docs name
  (`runs/demo/*.tar.gz`, small synthetic models of the classes `elpv_mono` and `elpv_poly`; `path/to/images`)
  and, with `run stack`, a local stack serving them;
- `no-run REASON`: shown, never executed (`aws`: needs an AWS account; `data`: needs the MVTec data;
  `long`: a whole demo or test suite; `example`: output of a run the sandbox cannot make).

In a `console` block, `$ ` starts a command (a line ending in `\\` continues it) and the lines up to the next
command are its expected output, compared line by line: `...` on a line of its own stands for any number of
lines, `...` inside a line for any text, and every number or long hexadecimal id for any number or id (the
docs show a real run's figures; the sandbox's differ), except a version's number (`patchcore-1`). A command
whose expected output holds `: error:` must fail; every other command must succeed. `bash` blocks must
succeed; their output is not compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SHELLS = ("bash", "sh", "shell", "console")
FENCE = re.compile(r"^```([a-z]+)([^\n]*)\n(.*?)^```", re.M | re.S)
REASONS = ("aws", "data", "long", "example")
#: In an expected line: `...`, a date and time, a long hex id (or digit run), a number standing alone or after
#: an underscore (with decimals, thousands, a sign or a percent; `patchcore-1`'s and `v2`'s digits belong to
#: the name and must match, `scratch_003.png`'s may differ).
_DATE = r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d)?Z?)?"
_WILD = re.compile(rf"\.\.\.|{_DATE}|\b[0-9a-f]{{12,}}\b|(?<![A-Za-z0-9-])[-+]?\d+(?:[.,]\d+)*%?")


@dataclass
class Block:
    page: Path
    line: int
    language: str
    marker: list[str]
    body: str

    @property
    def runnable(self) -> bool:
        return self.marker[:1] == ["run"]

    @property
    def needs_stack(self) -> bool:
        return self.runnable and "stack" in self.marker

    def where(self) -> str:
        return f"{self.page.name}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    return [
        Block(page, text[: m.start()].count("\n") + 1, m[1], m[2].split(), m[3])
        for m in FENCE.finditer(text)
        if m[1] in SHELLS
    ]


def marker_problem(block: Block) -> str | None:
    """Why a shell block's marker is wrong, or None."""
    words = block.marker
    if words[:1] == ["run"] and set(words[1:]) <= {"stack"}:
        return None
    if words[:1] == ["no-run"] and len(words) == 2 and words[1] in REASONS:
        return None
    return f"{block.where()}: mark the block `{block.language} run [stack]` or `no-run <{'|'.join(REASONS)}>`"


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) in order; a `bash` block's lines are commands with no expectation."""
    out: list[tuple[str, list[str]]] = []
    lines = block.body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        prompt = block.language == "console"
        if prompt and not line.startswith("$ "):
            out[-1][1].append(line) if out else None
            i += 1
            continue
        cmd = line[2:] if prompt else line
        while cmd.endswith("\\") and i + 1 < len(lines):  # kept: bash reads the continuation itself
            i += 1
            cmd = cmd + "\n" + lines[i]
        if cmd.strip() and not cmd.lstrip().startswith("#"):
            out.append((cmd, []))
        i += 1
    return out


def line_pattern(expected: str) -> re.Pattern:
    expected = expected.strip()
    parts, last = [], 0
    for m in _WILD.finditer(expected):
        parts.append(re.escape(expected[last : m.start()]))
        token = m[0]
        if token == "...":
            parts.append(".*?")
        elif re.fullmatch(_DATE, token):
            parts.append(_DATE)
        elif re.fullmatch(r"[0-9a-f]{12,}", token):
            parts.append(r"[0-9a-f]+")
        else:
            parts.append(r"[-+]?\d+(?:[.,]\d+)*%?")
        last = m.end()
    parts.append(re.escape(expected[last:]))
    pattern = "".join(parts)
    pattern = re.sub(r"(\\ )+", r"\\s+", pattern)  # columns padded to their content
    return re.compile(pattern)


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether `actual` lines are what `expected` shows (see the module's rules); blank lines are ignored."""
    want = [e.rstrip() for e in expected if e.strip()]
    got = [a.rstrip() for a in actual if a.strip()]

    def walk(i: int, j: int) -> bool:
        if i == len(want):
            return j == len(got)
        if want[i].strip() == "...":
            return any(walk(i + 1, k) for k in range(j, len(got) + 1))
        return j < len(got) and bool(line_pattern(want[i]).fullmatch(got[j].strip())) and walk(i + 1, j + 1)

    return walk(0, 0)


def expects_failure(expected: list[str]) -> bool:
    return any(": error:" in line for line in expected)
