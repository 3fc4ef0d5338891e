"""Every shell block in README.md and docs/ is marked runnable or not (and why), and the matcher that checks a
runnable block's output against what the docs show accepts a real run and refuses a different one."""

from __future__ import annotations

from pathlib import Path

from tests import docblocks
from tests.paths import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def test_every_shell_block_is_marked() -> None:
    found = [b for page in PAGES for b in docblocks.blocks(page)]
    assert [p for b in found if (p := docblocks.marker_problem(b))] == []
    assert sum(b.runnable for b in found) >= 5


def test_a_console_block_splits_into_commands_and_their_output(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```console run stack\n$ ivadas models \\\n  --json\n[]\n$ ivadas approve x\n"
        "ivadas approve: error: no\n```\n```python\nprint(1)\n```\n```bash no-run aws\nsam deploy\n```\n"
    )
    (console, aws) = docblocks.blocks(page)
    assert console.needs_stack and not aws.runnable and docblocks.marker_problem(aws) is None
    assert docblocks.commands(console) == [
        ("ivadas models \\\n  --json", ["[]"]),
        ("ivadas approve x", ["ivadas approve: error: no"]),
    ]
    assert docblocks.expects_failure(["ivadas approve: error: no"])
    page.write_text("```bash\nls\n```\n")
    assert "mark the block" in docblocks.marker_problem(docblocks.blocks(page)[0])


def test_figures_and_ids_may_differ_but_words_may_not() -> None:
    shown = [
        "registered patchcore-1: PendingManualApproval, classes elpv_mono, elpv_poly",
        "  artifact s3://ivadas-models/local/patchcore/978ae08768e0a0ec/model.tar.gz",
        "...",
        '{"uploaded": 413, "inspected": 413, ...}',
    ]
    ran = [
        "registered patchcore-1: PendingManualApproval, classes elpv_mono, elpv_poly",
        "  artifact s3://ivadas-models/local/patchcore/061f534384ebad59/model.tar.gz",
        "file  status  verdict",
        "a.png INSPECTED good",
        '{"uploaded": 8, "inspected": 8, "missing": 0}',
    ]
    assert docblocks.matches(shown, ran)
    assert not docblocks.matches(shown, [ran[0].replace("Pending", "Approved"), *ran[1:]])
    assert not docblocks.matches(shown[:2], ran)  # output the block does not show
    assert docblocks.matches(["a  b", "patchcore-1  approved at 2026-12-02T04:42:51Z"],
                             ["a      b", "patchcore-1  approved at 2026-12-07T10:00:00Z"])  # fmt: skip
    assert not docblocks.matches(["patchcore-1 deployed"], ["patchcore-2 deployed"])
    assert docblocks.matches(["line1/elpv_mono/scratch_003.png"], ["line1/elpv_mono/scratch_001.png"])
