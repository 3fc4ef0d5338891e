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
from infra.local.state import read_state, state_path
from ivadas_contract.models import MODELS


def _supervisor_command(args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "infra.local", "--state-dir", str(args.state_dir),
           "--worker-concurrency", str(args.worker_concurrency)]  # fmt: skip
    for model in MODELS:
        cmd += [f"--{model}", getattr(args, model) or ""]
    for p in args.parameter:
        cmd += ["--parameter", p]
    if args.api_port:
        cmd += ["--api-port", str(args.api_port)]
    if args.fresh:
        cmd += ["--fresh"]
    return cmd


def _already_running(state_dir: Path) -> bool:
    if not state_path(state_dir).exists():
        return False
    try:
        os.kill(read_state(state_dir)["pid"], 0)
        return True
    except OSError:
        state_path(state_dir).unlink()  # left by a supervisor that died
        return False


def up(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    if _already_running(state_dir):
        print("the local stack is already running (ivadas local down stops it)", file=sys.stderr)
        return 1
    state_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(state_dir / "supervisor.log", "ab")  # noqa: SIM115 - handed to the supervisor process
    proc = subprocess.Popen(
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
    print(f"local stack up: UI {state['ui_url']}  API {state['api_url']}  (X-Api-Key: {state['api_key']})")
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
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.2)
    path.unlink(missing_ok=True)
    print("local stack stopped")
    return 0
