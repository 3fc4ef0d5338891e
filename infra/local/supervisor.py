"""The local stack's supervisor process (`python -m infra.local`, started by `ivadas local up`): moto and the
model server as child processes, the resources provisioned from template.yaml (Stage=local), the last run's
state restored, the poller and the API shim in this process. SIGTERM saves the state and stops it all.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import uvicorn

from infra.local import endpoints, snapshot
from infra.local.api_shim import create_shim
from infra.local.args import add_local_arguments
from infra.local.poller import Poller
from infra.local.processes import free_port, spawn, wait_http
from infra.local.provision import provision
from infra.local.state import aws_environment, state_path, write_state
from infra.template import Stack, load_template
from ivadas_contract.models import MODELS, endpoint_name

log = logging.getLogger("ivadas.local")
#: Buckets whose contents survive a restart (the UI bucket is filled from ui/ instead); every table does.
STATEFUL_BUCKETS = ("InboxBucket", "ResultsBucket", "ModelBucket")


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state_dir = Path(args.state_dir)
        self.logs = self.state_dir / "logs"
        self.snapshot_dir = self.state_dir / "snapshot"
        parameters = dict(p.split("=", 1) for p in args.parameter)
        parameters.setdefault("Stage", "local")
        self.stack = Stack(load_template(), parameters)
        self.moto_port = args.moto_port or free_port()
        self.model_port = args.model_port or free_port()
        self.api_port = args.api_port or free_port()
        self.env = {
            **aws_environment(self.moto_port, self.model_port),
            **self.stack.functions_environment(),  # one process runs every function
        }
        self.children: list[subprocess.Popen] = []
        self.moto: subprocess.Popen | None = None
        self.model_server: subprocess.Popen | None = None
        self.names: dict[str, str] = {}

    def _start_moto(self) -> None:
        self.moto = spawn(
            ["-m", "infra.local.moto_server", "--port", str(self.moto_port)], self.logs / "moto.log"
        )
        self.children.append(self.moto)

    def _start_model_server(self, served: list[endpoints.Served]) -> None:
        """The model server with every endpoint that has an artifact; --admin: the follower swaps them."""
        endpoint_args = [a for s in served for a in ("--endpoint", f"{s.endpoint}={s.artifact}")]
        serve = ["-m", "model_server.server.serve", "--host", "127.0.0.1", "--port", str(self.model_port)]
        self.model_server = spawn(
            [*serve, "--admin", "--log-level", "warning", *endpoint_args], self.logs / "model_server.log"
        )
        self.children.append(self.model_server)

    def _restore(self, names: dict[str, str]) -> None:
        if not self.args.fresh and self.snapshot_dir.exists():
            counts = snapshot.restore(self.snapshot_dir)
            log.info(
                "restored %d objects, %d items, %d parameters and %d model versions",
                counts["objects"], counts["items"], counts["parameters"], counts["packages"],
            )  # fmt: skip

    def bring_up(self) -> None:
        """moto, the resources (and the last run's state), the endpoints, then the model server with them."""
        self._start_moto()
        wait_http(f"http://127.0.0.1:{self.moto_port}/moto-api/", 60, self.moto)
        self.names = provision(self.stack, self._restore)
        stage = self.stack.values["Stage"]
        artifacts = {model: getattr(self.args, model) for model in MODELS}
        cache = self.state_dir / "artifacts"
        served = endpoints.bring_up(artifacts, stage, self.names["ModelBucket"], cache)
        if not served:
            raise RuntimeError("no model to serve: give --patchcore (and --softpatch) or deploy a version")
        self._start_model_server(served)
        wait_http(f"http://127.0.0.1:{self.model_port}/ping", 300, self.model_server, ok=lambda s: s == 200)
        names = [endpoint_name(stage, model) for model in MODELS]
        self.follower = endpoints.EndpointFollower(
            served, names, f"http://127.0.0.1:{self.model_port}", cache
        )
        self.follower.start()

    def requeue(self) -> None:
        """Inbox objects that were still waiting when the stack stopped are announced again."""
        if self.args.fresh or not self.snapshot_dir.exists():
            return
        sent = snapshot.requeue_uninspected(
            self.names["InboxBucket"], self.names["ResultsTable"], self.names["InspectionQueue"]
        )
        log.info("re-announced %d inbox images that had no result yet", sent)

    def _stateful(self) -> tuple[list[str], list[str]]:
        buckets = [self.names[k] for k in STATEFUL_BUCKETS if k in self.names]
        tables = [
            self.names[k]
            for k, r in self.stack.resources.items()
            if r["Type"] == "AWS::DynamoDB::Table" and k in self.names
        ]
        return buckets, tables

    def stop(self, *_: object) -> None:
        """Save what moto holds, stop the children, remove state.json, exit."""
        if self.names and self.moto is not None and self.moto.poll() is None:
            try:
                counts = snapshot.save(self.snapshot_dir, *self._stateful())
                log.info(
                    "saved %d objects and %d items to %s",
                    counts["objects"],
                    counts["items"],
                    self.snapshot_dir,
                )
            except Exception:  # noqa: BLE001 - never block shutdown
                log.exception("could not save the local stack's state")
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        state_path(self.state_dir).unlink(missing_ok=True)
        os._exit(0)

    def state(self, api_key: str) -> dict:
        return {
            "pid": os.getpid(),
            "moto_port": self.moto_port,
            "model_port": self.model_port,
            "model_server_pid": self.model_server.pid,
            "moto_pid": self.moto.pid,
            "api_url": f"http://127.0.0.1:{self.api_port}",
            "ui_url": f"http://127.0.0.1:{self.api_port}/",
            "api_key": api_key,
            "resources": self.names,
            "environment": self.env,
        }

    def run(self) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        os.environ.update(self.env)
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        try:
            self.bring_up()
        except Exception as exc:
            log.error("local stack failed to start: %s", exc)
            self.stop()
            return 1
        api_key = secrets.token_urlsafe(24)
        config = {
            "apiBaseUrl": f"http://127.0.0.1:{self.api_port}",
            "apiKey": api_key,
            "stage": self.stack.values["Stage"],
        }
        Poller(self.stack, self.names["InspectionQueue"], self.args.worker_concurrency).start()
        self.requeue()
        write_state(self.state_dir, self.state(api_key))
        uvicorn.run(
            create_shim(self.stack, api_key, config),
            host="127.0.0.1",
            port=self.api_port,
            log_level="warning",
        )
        self.stop()
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local")
    add_local_arguments(parser)
    parser.add_argument("--moto-port", type=int, default=0)
    parser.add_argument("--model-port", type=int, default=0)
    args = parser.parse_args(argv)
    for model in MODELS:
        setattr(args, model, getattr(args, model) or None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return Supervisor(args).run()


if __name__ == "__main__":
    sys.exit(main())
