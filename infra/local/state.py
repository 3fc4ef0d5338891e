"""Where a running local stack is: state.json in the state folder (ports, API key, resource names and the
environment that points boto3 at it), written by the supervisor once every part answers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from infra.local.args import DEFAULT_STATE_DIR
from infra.template import REGION

STATE_FILE = "state.json"


def aws_environment(moto_port: int, model_port: int) -> dict[str, str]:
    """What the handlers' plain boto3 clients need to talk to the local stack instead of AWS."""
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": f"http://127.0.0.1:{model_port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # moto's fake credentials for the local stack  # nosec B105
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
        "POWERTOOLS_DEV": "false",
    }


def state_path(state_dir: str | Path = DEFAULT_STATE_DIR) -> Path:
    return Path(state_dir) / STATE_FILE


def read_state(state_dir: str | Path = DEFAULT_STATE_DIR) -> dict:
    path = state_path(state_dir)
    if not path.exists():
        raise SystemExit("the local stack is not running: start it with `ivadas local up`")
    return json.loads(path.read_text())


def write_state(state_dir: str | Path, state: dict) -> None:
    """Written whole, then renamed: `local up` waits for the file and must never read half of it."""
    path = state_path(state_dir)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(state, indent=2))
    partial.replace(path)


def use_state(state: dict) -> None:
    """Point this process's boto3 clients at the running local stack."""
    os.environ.update(state["environment"])


def stack_processes(pgid: int) -> list[int]:
    """Processes of a local stack's process group (the supervisor starts one; its children inherit it) that
    run this project's code: what a kill -9 of the supervisor could leave behind (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            group = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if group == pgid and any(m in cmdline for m in (b"infra.local", b"model_server")):
            found.append(int(entry.name))
    return found
