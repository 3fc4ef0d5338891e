"""`make demo`'s driver (infra/demo.py) on two small synthetic classes: every step says what it does and
what comes next, the classes train side by side and each model is evaluated once by its training (a report
per class) and its classes joined into one artifact, SoftPatch takes PatchCore's configurations, and the
stack it leaves up has both models registered, approved and deployed (the console's Models view lists them)
and every test image inspected."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from model_server.engine.artifact import load_artifact
from tests.conftest import make_mvtec
from tests.paths import REPO_ROOT

CLASSES = ("widget", "gadget")


def test_demo_leaves_both_models_deployed_and_every_test_image_inspected(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for seed, name in enumerate(CLASSES):
        make_mvtec(root, name, seed=seed)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "IVADAS_STATE_DIR": str(tmp_path / "stack")}
    out = tmp_path / "demo"
    demo = [sys.executable, "-m", "infra.demo", "--data-root", str(root), "--classes", ",".join(CLASSES),
            "--out", str(out), "--api-port", "0", "--train-args", "--input-size 64"]  # fmt: skip
    ivadas = [sys.executable, "-m", "infra.cli"]
    try:
        run = subprocess.run(demo, env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        steps = re.findall(r"^\[(\d)/5\] .+\n      next: .+$", run.stdout, re.M)
        assert steps == ["1", "2", "3", "4", "5"]
        for name in CLASSES:
            summary = json.loads(re.search(rf"^{name}: (\{{.*\}})", run.stdout, re.M)[1])
            assert summary["inspected"] == 8
            assert summary["in_flight"] == summary["dead_lettered"] == summary["lost"] == 0
        artifacts = {}
        for model in ("patchcore", "softpatch"):  # a report per class; the classes joined into one artifact
            for name in CLASSES:
                assert (out / f"report_{model}/{name}/metrics.json").exists()
                assert re.search(rf"^{model} {name}: \S+@\d+, bank \d+ patches", run.stdout, re.M), run.stdout
            artifacts[model] = load_artifact(out / f"{model}.tar.gz")
            assert sorted(artifacts[model].classes) == sorted(CLASSES)
        for name in CLASSES:  # SoftPatch trained on the configurations of the PatchCore that is deployed
            card = artifacts["softpatch"].get(name).card
            assert card["configuration_from"] == artifacts["patchcore"].model_version
        listed = subprocess.run([*ivadas, "models", "--json"], env=env, capture_output=True, text=True)
        versions = {v["version"]: v for v in json.loads(listed.stdout)}
        assert set(versions) == {"patchcore-1", "softpatch-1"}, listed.stdout
        assert all(v["status"] == "Approved" and v["endpoint"] == "deployed" for v in versions.values())
    finally:
        subprocess.run([*ivadas, "local", "down"], env=env, timeout=120)
