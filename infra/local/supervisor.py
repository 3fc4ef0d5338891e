"""The local stack's supervisor process (`python -m infra.local`, started by `ivadas local up`): moto and the
model server as child processes, the resources provisioned from template.yaml (Stage=local), the last run's
state restored, the poller and the API shim in this process. SIGTERM saves the state and stops it all.
moto journals every S3 and DynamoDB write before answering it (infra/local/journal.py), and the children die
with this process (infra/local/child.py), so a kill -9 of the stack loses nothing S3 or DynamoDB accepted.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import uvicorn

from infra.local import endpoints, jobs, snapshot
from infra.local.api_shim import create_shim
from infra.local.args import add_local_arguments
from infra.local.authorizer import UserPool
from infra.local.health import HealthCheck
from infra.local.poller import Poller
from infra.local.processes import free_port, spawn, wait_http
from infra.local.provision import create_stand_in_stack, provision
from infra.local.state import aws_environment, state_path, write_state
from infra.publish_ui import ui_config
from infra.template import REGION, Stack, load_template
from ivadas_contract.models import MODELS, endpoint_name
from model_server.server.faults import JOURNAL_ENV

log = logging.getLogger("ivadas.local")
#: Buckets whose contents survive a restart (the UI bucket is filled from ui/ instead); every table does.
STATEFUL_BUCKETS = ("InboxBucket", "ResultsBucket", "ModelBucket")


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state_dir = Path(args.state_dir)
        self.logs = self.state_dir / "logs"
        self.snapshot_dir = self.state_dir / "snapshot"
        self.moto_port = args.moto_port or free_port()
        self.model_port = args.model_port or free_port()
        self.api_port = args.api_port or free_port()
        parameters = dict(p.split("=", 1) for p in args.parameter)
        parameters.setdefault("Stage", "local")
        parameters.setdefault("UiOrigin", self.origin)  # the shim serves the UI: CORS names its own origin
        self.stack = Stack(load_template(), parameters)
        self.env = {
            **aws_environment(self.moto_port, self.model_port),
            **self.stack.functions_environment(),  # one process runs every function
        }
        self.children: list[subprocess.Popen] = []
        self.moto: subprocess.Popen | None = None
        self.model_server: subprocess.Popen | None = None
        self.names: dict[str, str] = {}
        self.poller: Poller | None = None
        self.health: HealthCheck | None = None
        self.replacements = 0  # model server instances replaced by the health check
        self.published: dict | None = None  # state.json once written; rewritten when a pid changes
        self.publish_lock = threading.Lock()
        self.saving = threading.Event()  # set: no more periodic snapshots
        self.restored: dict[str, int] = {}

    @property
    def origin(self) -> str:
        """Where the shim serves the UI and the API."""
        return f"http://127.0.0.1:{self.api_port}"

    def _start_moto(self) -> None:
        """moto, journalling every S3 and DynamoDB write it accepts (a fresh stack starts a new journal)."""
        journal = self.state_dir / "journal"
        if self.args.fresh:
            shutil.rmtree(journal, ignore_errors=True)
            shutil.rmtree(self.snapshot_dir, ignore_errors=True)
        args = ["-m", "infra.local.moto_server", "--port", str(self.moto_port), "--journal-dir", str(journal)]
        self.moto = spawn(args, self.logs / "moto.log")
        self.children.append(self.moto)

    def _start_model_server(self, artifacts: dict[str, Path]) -> None:
        """The model server with every endpoint that has an artifact; --admin: the follower swaps them."""
        endpoint_args = [a for name, path in artifacts.items() for a in ("--endpoint", f"{name}={path}")]
        os.environ[JOURNAL_ENV] = str(self.logs / "invocations.log")  # counts outlive a replaced instance
        serve = ["-m", "model_server.server.serve", "--host", "127.0.0.1", "--port", str(self.model_port)]
        self.model_server = spawn(
            [*serve, "--admin", "--log-level", "warning", *endpoint_args], self.logs / "model_server.log"
        )
        self.children.append(self.model_server)

    def _restore(self, names: dict[str, str]) -> None:
        if self.args.fresh:
            return
        moto_url = f"http://127.0.0.1:{self.moto_port}"
        counts = snapshot.restore(self.snapshot_dir, moto_url, *self._stateful(names))
        counts["interrupted"] = snapshot.clear_interrupted(names["IdempotencyTable"])
        log.info(
            "restored %d objects, %d items, %d parameters and %d model versions; %d invocations had been cut "
            "short (their images are inspected again)",
            counts["objects"], counts["items"], counts["parameters"], counts["packages"],
            counts["interrupted"],
        )  # fmt: skip
        self.restored = counts

    def bring_up(self) -> None:
        """moto, the resources (and the last run's state), the endpoints, then the model server with them."""
        self._start_moto()
        wait_http(f"http://127.0.0.1:{self.moto_port}/moto-api/", 60, self.moto)
        self.names = provision(self.stack, self._restore)
        create_stand_in_stack(self.stack)  # what the Deployments API updates (its endpoints follow)
        self.env.update(self.stack.functions_environment())  # now with the queues' URLs
        os.environ.update(self.env)
        stage = self.stack.values["Stage"]
        artifacts = {model: getattr(self.args, model) for model in MODELS}
        cache = self.state_dir / "artifacts"
        served = endpoints.bring_up(artifacts, self.stack, self.names["ModelBucket"], cache)
        if not served:
            raise RuntimeError("no model to serve: give --patchcore (and --softpatch) or deploy a version")
        self._start_model_server({s.endpoint: s.artifact for s in served})
        wait_http(f"http://127.0.0.1:{self.model_port}/ping", 300, self.model_server, ok=lambda s: s == 200)
        names = [endpoint_name(stage, model) for model in MODELS]
        self.follower = endpoints.EndpointFollower(
            served,
            names,
            f"http://127.0.0.1:{self.model_port}",
            cache,
            f"http://127.0.0.1:{self.moto_port}",
            self.stack,
        )
        self.follower.start()
        moto_url, work = f"http://127.0.0.1:{self.moto_port}", self.state_dir / "jobs"
        shutil.rmtree(work, ignore_errors=True)  # jobs of a previous run: moto forgot them
        for runner in (jobs.TrainingRunner(moto_url, work, self.logs),
                       jobs.TransformRunner(moto_url, work, self.logs, cache)):  # fmt: skip
            runner.start()  # SageMaker's training and batch transform: each job in processes of its own
        ping = f"http://127.0.0.1:{self.model_port}/ping"
        self.health = HealthCheck(ping, lambda: self.model_server, self._replace_model_server)
        self.health.start()

    def _replace_model_server(self, why: str) -> None:
        """What SageMaker does with an unhealthy instance: a new one, serving what the endpoints serve now."""
        old, self.model_server = self.model_server, None
        if old.poll() is None:
            old.kill()
        old.wait()
        self.children.remove(old)
        self._start_model_server(self.follower.artifacts)
        wait_http(f"http://127.0.0.1:{self.model_port}/ping", 300, self.model_server, ok=lambda s: s == 200)
        self.replacements += 1
        log.warning("model server replaced (%s): pid %d serves %s", why, self.model_server.pid,
                    ", ".join(f"{n}={p.name}" for n, p in self.follower.artifacts.items()))  # fmt: skip
        self.publish()

    def publish(self) -> None:
        """Rewrite state.json (once first written) with the current pids."""
        with self.publish_lock:
            if self.published is not None:
                self.published = {**self.published, **self._pids()}
                write_state(self.state_dir, self.published)

    def requeue(self) -> None:
        """Inbox objects that were still waiting when the stack stopped are announced again."""
        if self.args.fresh:
            return
        sent = snapshot.requeue_uninspected(
            self.names["InboxBucket"], self.names["ResultsTable"], self.names["InspectionQueue"]
        )
        self.restored["requeued"] = sent
        log.info("re-announced %d inbox images that had no result yet", sent)

    def _stateful(self, names: dict[str, str]) -> tuple[list[str], list[str]]:
        buckets = [names[k] for k in STATEFUL_BUCKETS if k in names]
        tables = [
            names[k]
            for k, r in self.stack.resources.items()
            if r["Type"] == "AWS::DynamoDB::Table" and k in names
        ]
        return buckets, tables

    def _save_snapshot(self) -> None:
        counts = snapshot.save(self.snapshot_dir)
        log.debug("saved %d parameters and %d model versions", counts["parameters"], counts["packages"])

    def _save_periodically(self) -> None:
        """Registry and deployment records every few seconds (objects and items are journalled as written)."""
        while not self.saving.wait(self.args.snapshot_interval):
            try:
                self._save_snapshot()
            except Exception:  # noqa: BLE001 - moto busy or stopping: the next interval tries again
                log.warning("could not save the registry and deployment records", exc_info=True)

    def stop(self, *_: object) -> None:
        """Save what moto holds, stop the children, remove state.json, exit."""
        if self.health is not None:
            self.health.paused.set()
        if self.poller is not None:  # no batch runs while the state is saved (`local down` waits 30 s)
            self.poller.shutdown(grace_s=min(20.0, self.poller.timeout_s))
        self.saving.set()
        if self.names and self.moto is not None and self.moto.poll() is None:
            try:
                self._save_snapshot()
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
            "pgid": os.getpgrp(),  # every process of the stack: `local up` kills what a kill -9 left
            "restored": self.restored,  # what the last run left: objects, items, interrupted, requeued
            "moto_port": self.moto_port,
            "model_port": self.model_port,
            **self._pids(),
            "moto_pid": self.moto.pid,
            "api_url": self.origin,
            "ui_url": f"{self.origin}/",
            "api_key": api_key,
            "resources": self.names,
            "environment": self.env,
        }

    def _pids(self) -> dict:
        """The processes a fault test may kill: the model server and the worker execution environments."""
        server = self.model_server
        return {
            "model_server_pid": server.pid if server is not None else None,
            "worker_pids": self.poller.pids() if self.poller is not None else [],
            "model_server_replacements": self.replacements,
        }

    def run(self) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        if self.args.fresh:  # a fresh stack starts with no invocation counts
            (self.logs / "invocations.log").unlink(missing_ok=True)
        os.environ.update(self.env)
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        try:
            self.bring_up()
        except Exception as exc:
            log.error("local stack failed to start: %s", exc)
            self.stop()
            return 1
        api_key = secrets.token_urlsafe(24)  # machines' key (/machine/...); people sign in to the pool
        pool_ids = self.names["UserPool"], self.names["UserPoolClient"]
        pool = UserPool(*pool_ids, REGION, self.env["AWS_ENDPOINT_URL"])
        config = ui_config(self.origin, REGION, *pool_ids, pool.endpoint, self.stack.values["Stage"])
        self.poller = Poller(
            self.stack, self.names["InspectionQueue"], self.args.worker_concurrency, self.logs, self.publish
        )
        self.poller.start()
        self.requeue()
        threading.Thread(target=self._save_periodically, name="snapshots", daemon=True).start()
        with self.publish_lock:
            self.published = self.state(api_key)
            write_state(self.state_dir, self.published)
        uvicorn.run(
            create_shim(self.stack, api_key, config, pool=pool),
            host="127.0.0.1",
            port=self.api_port,
            log_level="warning",
        )
        self.stop()
        return 0


def main_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.local")
    add_local_arguments(parser)
    parser.add_argument("--moto-port", type=int, default=0)
    parser.add_argument("--model-port", type=int, default=0)
    parser.add_argument(
        "--snapshot-interval", type=float, default=10.0, help="seconds between registry saves"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = main_parser().parse_args(argv)
    for model in MODELS:
        setattr(args, model, getattr(args, model) or None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return Supervisor(args).run()


if __name__ == "__main__":
    sys.exit(main())
