"""Virtual environments of their own for the peer code the benchmarks compare against (anomalib, the official
PatchCore code): made once from the package registries, marked done by a stamp file that names the pins, and
run with nothing of this project's venv or path leaking in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path


def peer_env() -> dict:
    """The environment of a peer's processes: nothing of this project's venv or path leaks in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env | {"TRUST_REMOTE_CODE": "1"}


def registry_reachable(package: str, timeout: float = 10.0) -> bool:
    """Whether the package index answers for `package` (PIP_INDEX_URL, else PyPI)."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        with urllib.request.urlopen(f"{index}/{package}/", timeout=timeout) as resp:  # nosec B310 - fixed URL
            return resp.status == 200
    except OSError:
        return False


def ensure_venv(venv: Path, pins: tuple[str, ...], stamp: Path, probe_package: str) -> str | None:
    """Make `venv` with `pins` installed once; None when it is ready, else why it cannot be made here
    (`probe_package` is asked of the index first, so an offline machine skips rather than fails)."""
    if stamp.exists():
        return None
    if not registry_reachable(probe_package):
        return f"the package registries are unreachable, so {probe_package} cannot be installed"
    python = venv / "bin/python"
    if not python.exists():
        base = shutil.which("python3.11") or sys.executable
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    argv = [str(python), "-m", "pip", "install", "-q", *pins]
    print(f"installing {' '.join(pins)} into {venv} (once)", flush=True)
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"pip install into {venv} failed:\n{(proc.stderr or proc.stdout)[-2000:]}")
    stamp.write_text("\n".join(pins) + "\n")
    return None
