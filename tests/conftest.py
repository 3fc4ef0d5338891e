"""Shared fixtures: a small synthetic MVTec-layout data set (textured 'parts' with drawn defects)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _part(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A grey textured disc on a dark background: every good image is the same part with a little noise."""
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size * 0.38) ** 2
    base = np.where(disc, 150 + 30 * np.sin(xx / 3.0), 30).astype(np.float32)
    img = base + rng.normal(scale=4.0, size=base.shape)
    return np.clip(np.stack([img, img * 0.9, img * 0.8], axis=-1), 0, 255).astype(np.uint8)


def _scratch(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    img = img.copy()
    mask = np.zeros(img.shape[:2], dtype=np.uint8)
    y = int(rng.integers(30, 60))
    img[y : y + 6, 25:70] = (255, 20, 20)
    mask[y : y + 6, 25:70] = 255
    return img, mask


def make_mvtec(root: Path, class_name: str = "widget", n_train: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = root / class_name
    for sub in ("train/good", "test/good", "test/scratch", "ground_truth/scratch"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        Image.fromarray(_part(rng)).save(base / f"train/good/{i:03d}.png")
    for i in range(4):
        Image.fromarray(_part(rng)).save(base / f"test/good/{i:03d}.png")
        bad, mask = _scratch(_part(rng), rng)
        Image.fromarray(bad).save(base / f"test/scratch/{i:03d}.png")
        Image.fromarray(mask).save(base / f"ground_truth/scratch/{i:03d}_mask.png")
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mvtec(tmp_path_factory.mktemp("mvtec"))


def _train(root: Path, out: Path, model: str, coreset_ratio: float = 0.25, classes: str = "widget") -> Path:
    from infra.cli import main

    code = main(
        ["train", "--data-root", str(root), "--classes", classes, "--model", model,
         "--input-size", "64", "--coreset-ratio", str(coreset_ratio), "--quiet",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="session")
def trained_artifact(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PatchCore artifact trained by the real CLI on the synthetic class (64 px input: seconds)."""
    return _train(synthetic_root, tmp_path_factory.mktemp("artifact") / "model.tar.gz", "patchcore")


@pytest.fixture(scope="session")
def retrained_artifact(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second PatchCore artifact of the same class (a larger bank): the next version to roll out."""
    out = tmp_path_factory.mktemp("artifact") / "model-v2.tar.gz"
    return _train(synthetic_root, out, "patchcore", coreset_ratio=0.5)


@pytest.fixture(scope="session")
def two_class_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic widget and a second class, gadget (other parts, other seed)."""
    return make_mvtec(make_mvtec(tmp_path_factory.mktemp("mvtec2")), "gadget", seed=1)


@pytest.fixture(scope="session")
def two_class_artifact(two_class_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artifact") / "two-class.tar.gz"
    return _train(two_class_root, out, "patchcore", classes="widget,gadget")


@pytest.fixture(scope="session")
def trained_softpatch(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(synthetic_root, tmp_path_factory.mktemp("artifact") / "softpatch.tar.gz", "softpatch")


@contextlib.contextmanager
def local_stack(
    state_dir: Path, patchcore: Path | None, softpatch: Path | None, parameters: list[str]
) -> Iterator[dict]:
    """`ivadas local up` in a subprocess; this process's boto3 points at it until `local down`. A model
    without an artifact serves what was last deployed to it (if anything)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "infra.cli", "local", "up", "--state-dir", str(state_dir)]
    for flag, artifact in (("--patchcore", patchcore), ("--softpatch", softpatch)):
        cmd += [flag, str(artifact)] if artifact else []
    for p in parameters:
        cmd += ["--parameter", p]
    up = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    log = state_dir / "supervisor.log"
    assert up.returncode == 0, up.stdout + up.stderr + (log.read_text() if log.exists() else "")
    state = json.loads((state_dir / "state.json").read_text())
    state["state_dir"] = str(state_dir)
    saved = dict(os.environ)
    os.environ.update(state["environment"])
    try:
        yield state
    finally:
        os.environ.clear()
        os.environ.update(saved)
        down = [sys.executable, "-m", "infra.cli", "local", "down", "--state-dir", str(state_dir)]
        subprocess.run(down, env=env, timeout=60)
