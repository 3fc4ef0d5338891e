"""The README's and the docs' runnable shell blocks, run as written against a local stack, print what the
docs show (tests/docblocks.py has the rules). Each page runs in a fresh sandbox in the order it is written:
its `run stack` blocks share one local stack serving small synthetic models of the demo's classes, with the
address and key `ivadas local up` prints as $API_URL and $API_KEY."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import docblocks
from tests.conftest import _train, make_mvtec
from tests.paths import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
CLASSES = ("elpv_mono", "elpv_poly")
#: A password the template's policy accepts (14 characters, all four kinds), for `local add-user`.
PASSWORD = "Docs-sandbox-2026"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/demo/{patchcore,softpatch}.tar.gz as `make demo` leaves them, small: the demo's classes made of
    the synthetic parts of tests/conftest.py, trained at 64 px."""
    root = tmp_path_factory.mktemp("docs-data")
    for seed, name in enumerate(CLASSES):
        make_mvtec(root, name, seed=seed)
    out = tmp_path_factory.mktemp("docs-models")
    for model in ("patchcore", "softpatch"):
        _train(root, out / f"{model}.tar.gz", model, classes=",".join(CLASSES))
    shutil.copytree(root / CLASSES[0] / "test", out / "images")
    return out


class Sandbox:
    def __init__(self, folder: Path, models: Path) -> None:
        self.folder = folder
        (folder / "runs/demo").mkdir(parents=True)
        for model in ("patchcore", "softpatch"):
            shutil.copy(models / f"{model}.tar.gz", folder / "runs/demo")
        images = folder / "path/to/images"
        images.mkdir(parents=True)
        for png in (models / "images").rglob("*.png"):
            shutil.copy(png, images / f"{png.parent.name}_{png.name}")
        for name in (".venv", "tests", "pyproject.toml"):  # `.venv/bin/pytest tests/...` as in a clone
            (folder / name).symlink_to(REPO_ROOT / name)
        self.state = folder / "stack"
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO_ROOT),
                    "IVADAS_STATE_DIR": str(self.state), "IVADAS_PASSWORD": PASSWORD}  # fmt: skip

    @property
    def up(self) -> bool:
        return (self.state / "state.json").exists()

    def shell(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(  # noqa: S603 - the docs' own commands, in the sandbox
            ["bash", "-euo", "pipefail", "-c", command], cwd=self.folder, env=self.env,
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    def start(self) -> None:
        up = self.shell("ivadas local up --patchcore runs/demo/patchcore.tar.gz "
                        "--softpatch runs/demo/softpatch.tar.gz --fresh")  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((self.state / "state.json").read_text())  # what `local up` printed
        self.env.update(API_URL=state["api_url"], API_KEY=state["api_key"])

    def stop(self) -> None:
        if self.up:
            self.shell("ivadas local down")


def run_block(box: Sandbox, block: docblocks.Block) -> list[str]:
    """Each of the block's commands run; what went otherwise than the block shows."""
    if block.needs_stack and not box.up:
        box.start()
    elif not block.needs_stack:
        box.stop()
    problems = []
    for command, expected in docblocks.commands(block):
        done = box.shell(command)
        said = (done.stdout + done.stderr).splitlines()
        failed = done.returncode != 0
        if failed != docblocks.expects_failure(expected):
            problems.append(
                f"{block.where()}: `{command}` exited {done.returncode}:\n" + "\n".join(said[-20:])
            )
        elif block.language == "console" and not docblocks.matches(expected, said):
            shown = "\n".join(expected)
            problems.append(f"{block.where()}: `{command}` printed\n" + "\n".join(said) + f"\nnot\n{shown}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_runnable_blocks_print_what_the_docs_show(page: Path, models: Path, tmp_path: Path) -> None:
    runnable = [b for b in docblocks.blocks(page) if b.runnable]
    if not runnable:
        pytest.skip(f"{page.name} has no runnable block")
    box = Sandbox(tmp_path / "sandbox", models)
    try:
        problems = [p for block in runnable for p in run_block(box, block)]
    finally:
        box.stop()
    assert problems == [], "\n\n".join(problems)
