"""The documentation stays true to the repository: its figures are rendered from the benchmarks' records,
it points at nothing outside the repository, its links resolve, it places every module, it names every
template parameter, and template.yaml's scaling defaults follow its sizing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.benchmarks import render, sizing
from tests.paths import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
#: What a clone never has: a folder beside the repository, or one machine's own paths.
OUTSIDE = re.compile(r"\.\./shared|/work/")
#: Words that belong to a project's tracker, not to its documentation or code.
TRACKER = re.compile(r"issue [0-9]+", re.IGNORECASE)
SOURCE_FOLDERS = ("model_server", "functions", "infra", "ui")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def test_the_docs_are_rendered_from_the_benchmark_records() -> None:
    assert render.pages(), "no page has a generated block"
    assert render.stale() == [], "run: .venv/bin/python tests/benchmarks/render.py"


def test_nothing_points_outside_the_repository() -> None:
    files = [*PAGES, *_files(REPO_ROOT / "docs/benchmarks")]
    found = [f"{p.relative_to(REPO_ROOT)}: {m[0]}" for p in files for m in OUTSIDE.finditer(p.read_text())]
    assert found == []


def test_no_tracker_numbers_in_docs_or_code() -> None:
    files = [*PAGES] + [p for d in SOURCE_FOLDERS for p in _files(REPO_ROOT / d) if p.suffix != ".png"]
    found = [f"{p.relative_to(REPO_ROOT)}: {m[0]}" for p in files for m in TRACKER.finditer(p.read_text())]
    assert found == []


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {anchor(m[1]) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def test_every_link_resolves_to_a_file_and_heading() -> None:
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, fragment = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_the_link_check_knows_github_anchors() -> None:
    assert anchor("Shadow, compare, promote") == "shadow-compare-promote"
    assert anchor("The `ivadas` command") == "the-ivadas-command"


def test_where_things_live_places_every_module() -> None:
    text = (REPO_ROOT / "docs/architecture.md").read_text().split("## Where things live", 1)[1]
    modules = [p for d in ("model_server", "infra", "functions") for p in (REPO_ROOT / d).rglob("*.py")]
    missing = sorted(
        str(p.relative_to(REPO_ROOT))
        for p in modules
        if p.stem != "__init__" and f"`{p.stem}`" not in text and "tests" not in p.parts
    )
    assert missing == []


def _template() -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # CloudFormation's short forms
    return yaml.load((REPO_ROOT / "template.yaml").read_text(), Loader=Loader)  # noqa: S506  # nosec B506


def test_deploying_names_every_template_parameter() -> None:
    text = (REPO_ROOT / "docs/deploying.md").read_text()
    assert [name for name in _template()["Parameters"] if f"`{name}`" not in text] == []


def test_the_template_scales_as_the_sizing_says() -> None:
    parameters = _template()["Parameters"]
    workers, instances = (parameters[k]["Default"] for k in ("WorkerMaxConcurrency", "EndpointMaxInstances"))
    assert workers == sizing.IN_FLIGHT_PER_INSTANCE * instances
    record = render.load_record("bench_server")
    if record is None:
        pytest.skip("no bench-server record yet: `make bench-server` writes the figures the target follows")
    expected = sizing.sizing(record["figures"])["invocations_per_instance_target"]
    assert parameters["InvocationsPerInstanceTarget"]["Default"] == expected


def test_every_record_is_a_benchmark_run() -> None:
    for path in sorted((REPO_ROOT / "docs/benchmarks").glob("*.json")):
        record = json.loads(path.read_text())
        assert record["benchmark"] == path.stem and path.stem in render.BENCHMARKS
        assert {"date", "command", "machine", "exit_code", "missed", "figures"} <= set(record)
