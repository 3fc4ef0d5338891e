"""`ivadas local up` and `ivadas local down`: start the supervisor in the background and wait until every
part answers; stop it (it saves the stack's state on the way down)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from infra.local.processes import ROOT, wait_http
from infra.local.state import read_state, stack_processes, state_path
from ivadas_contract.models import MODELS


def _supervisor_command(args: argparse.Namespace) -> list[str]:
    """The supervisor's command line; it runs from the repository, so paths are made absolute here."""
    cmd = [sys.executable, "-m", "infra.local", "--state-dir", str(Path(args.state_dir).resolve()),
           "--worker-concurrency", str(args.worker_concurrency)]  # fmt: skip
    for model in MODELS:
        artifact = getattr(args, model)
        cmd += [f"--{model}", str(Path(artifact).resolve()) if artifact else ""]
    for p in args.parameter:
        cmd += ["--parameter", p]
    if args.api_port:
        cmd += ["--api-port", str(args.api_port)]
    if args.fresh:
        cmd += ["--fresh"]
    return cmd


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _already_running(state_dir: Path) -> bool:
    """Whether a stack runs from this state folder; a stale state.json (its supervisor killed -9) is removed,
    with whatever of that stack still runs (nothing, when its children died with it as they should)."""
    if not state_path(state_dir).exists():
        return False
    state = read_state(state_dir)
    if _alive(state["pid"]):
        return True
    left = stack_processes(state.get("pgid", state["pid"]))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in left) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        print(f"killed {len(left)} processes left by a local stack that was killed", file=sys.stderr)
    state_path(state_dir).unlink(missing_ok=True)
    return False


def up(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    if _already_running(state_dir):
        print("the local stack is already running (ivadas local down stops it)", file=sys.stderr)
        return 1
    state_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(state_dir / "supervisor.log", "ab")  # noqa: SIM115 - handed to the supervisor process
    proc = subprocess.Popen(  # argument list (no shell) of this package's supervisor  # nosec B603
        _supervisor_command(args), cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
        start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    deadline = time.monotonic() + args.timeout
    while not state_path(state_dir).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            print(f"the local stack did not start; see {state_dir / 'supervisor.log'}", file=sys.stderr)
            if proc.poll() is None:
                proc.terminate()
            return 1
        time.sleep(0.3)
    state = read_state(state_dir)
    wait_http(state["api_url"] + "/config.json", 60)
    print(f"local stack up: UI {state['ui_url']}  API {state['api_url']}")
    print(f"people: ivadas local add-user NAME --group operators; machines: X-Api-Key {state['api_key']}")
    print(
        f"inbox bucket: {state['resources']['InboxBucket']}, "
        f"moto at {state['environment']['AWS_ENDPOINT_URL']}"
    )
    return 0


def down(args: argparse.Namespace) -> int:
    path = state_path(args.state_dir)
    if not path.exists():
        print("the local stack is not running")
        return 0
    pid = json.loads(path.read_text())["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        path.unlink(missing_ok=True)
        return 0
    deadline = time.monotonic() + 60
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):  # still saving or stopping its children: its state.json stays until it is done
        print(f"the local stack ({pid}) is still stopping", file=sys.stderr)
        return 1
    path.unlink(missing_ok=True)
    print("local stack stopped")
    return 0
