"""The lifecycle through the running local stack: a registered, approved version deployed with
`ivadas deploy` reaches the model server (the endpoint follower swaps it in) and scores inbox images;
`ivadas rollback` brings the previous one back; after `local down` / `local up` the registry and the
deployment are still there and the deployed version is what serves."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from infra.cli import main
from model_server.engine.artifact import load_artifact
from tests.conftest import local_stack
from tests.e2e.test_pipeline import put, wait_items

ENDPOINT = "ivadas-local-patchcore"


def _serving(state: dict, version: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{state['model_port']}/ping", timeout=5) as resp:  # noqa: S310
            if json.loads(resp.read())["endpoints"].get(ENDPOINT) == version:
                return
        time.sleep(0.5)
    raise AssertionError(f"{ENDPOINT} never served {version}")


def test_deploy_rollback_and_restart(
    trained_artifact: Path,
    retrained_artifact: Path,
    trained_softpatch: Path,
    synthetic_root: Path,
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "stack"
    where = ["--state-dir", str(state_dir)]
    old, new = (load_artifact(p).model_version for p in (trained_artifact, retrained_artifact))
    image = (synthetic_root / "widget/test/scratch/000.png").read_bytes()
    with local_stack(state_dir, trained_artifact, trained_softpatch, []) as state:
        assert main(["register", "--artifact", str(retrained_artifact), "--model", "patchcore", *where]) == 0
        assert main(["deploy", "--model", "patchcore", "--version", "patchcore-1", *where]) == 2  # pending
        assert main(["approve", "patchcore-1", "--note", "e2e", *where]) == 0
        assert main(["deploy", "--model", "patchcore", "--version", "patchcore-1", *where]) == 0
        _serving(state, new)
        scored = put(state, "line1/widget/after-deploy.png", image)
        assert wait_items(state, [scored])[scored]["model_version"] == new

        assert main(["rollback", "--model", "patchcore", *where]) == 0
        _serving(state, old)
        assert main(["deploy", "--model", "patchcore", "--version", "patchcore-1", *where]) == 0
        _serving(state, new)
    with local_stack(state_dir, None, trained_softpatch, []) as state:
        _serving(state, new, timeout=5)  # the deployment survived the restart, not the `local up` default
        assert main(["models", "--model", "patchcore", *where]) == 0
        scored = put(state, "line1/widget/after-restart.png", image)
        assert wait_items(state, [scored])[scored]["model_version"] == new
        assert main(["rollback", "--model", "patchcore", *where]) == 0  # the history survived too
        _serving(state, old)
