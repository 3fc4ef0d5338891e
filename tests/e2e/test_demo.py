"""`make demo`'s driver (infra/demo.py) on a small synthetic class: every step says what it does and what
comes next, each model is evaluated once by its training, and the stack it leaves up has both models
registered, approved and deployed (the console's Models view lists them) and every test image inspected."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO_ROOT


def test_demo_leaves_both_models_deployed_and_every_test_image_inspected(
    synthetic_root: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "IVADAS_STATE_DIR": str(tmp_path / "stack")}
    out = tmp_path / "demo"
    demo = [sys.executable, "-m", "infra.demo", "--data-root", str(synthetic_root), "--classes", "widget",
            "--out", str(out), "--api-port", "0", "--train-args", "--input-size 64"]  # fmt: skip
    ivadas = [sys.executable, "-m", "infra.cli"]
    try:
        run = subprocess.run(demo, env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        steps = re.findall(r"^\[(\d)/5\] .+\n      next: .+$", run.stdout, re.M)
        assert steps == ["1", "2", "3", "4", "5"]
        summary = re.search(r"^widget: (\{.*\})", run.stdout, re.M)[1]
        assert json.loads(summary)["inspected"] == 8 and json.loads(summary)["missing"] == 0
        for model in ("patchcore", "softpatch"):  # one evaluation each, reported
            assert (out / f"report_{model}/metrics.json").exists() and (out / f"{model}.tar.gz").exists()
        listed = subprocess.run([*ivadas, "models", "--json"], env=env, capture_output=True, text=True)
        versions = {v["version"]: v for v in json.loads(listed.stdout)}
        assert set(versions) == {"patchcore-1", "softpatch-1"}, listed.stdout
        assert all(v["status"] == "Approved" and v["endpoint"] == "deployed" for v in versions.values())
    finally:
        subprocess.run([*ivadas, "local", "down"], env=env, timeout=120)
