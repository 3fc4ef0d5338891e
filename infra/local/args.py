"""Arguments of `ivadas local up`, kept free of heavy imports so `ivadas --help` stays instant."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ivadas_contract.models import MODELS

#: Where the local stack keeps its state (ports, pids, snapshot) and every command finds it:
#: $IVADAS_STATE_DIR, else .ivadas/local in the repository; `--state-dir` overrides both.
DEFAULT_STATE_DIR = Path(
    os.environ.get("IVADAS_STATE_DIR") or Path(__file__).resolve().parents[2] / ".ivadas/local"
)


def add_local_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))
    for model in MODELS:
        p.add_argument(f"--{model}", help=f"{model} artifact for the ivadas-<stage>-{model} endpoint")
    p.add_argument(
        "--parameter", action="append", default=[], metavar="NAME=VALUE", help="template parameter"
    )
    p.add_argument("--worker-concurrency", type=int, default=4, help="concurrent worker invocations")
    p.add_argument("--api-port", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the stack to come up")
    p.add_argument(
        "--fresh", action="store_true", help="start empty instead of restoring the last run's state"
    )
