"""The local stack's SageMaker jobs. moto keeps training and transform jobs (moto_jobs.py) but runs nothing,
so these runners do what SageMaker's fleet would, as the endpoint follower does for endpoints:

- `TrainingRunner` starts each created training job's `train` entry point (model_server/training_job.py) in
  a process of its own, on an /opt/ml tree in a temporary folder: hyperparameters.json from the job, each
  channel synced from moto's S3 (keys relative to the channel's prefix). It tars /opt/ml/model to the job's
  output path as model.tar.gz, reads the metric lines with the job's MetricDefinitions, and moves the job to
  Completed, or Failed with output/failure as its reason; a job stopped (StopTrainingJob) or past its
  MaxRuntimeInSeconds is killed and ends Stopped.
- `TransformRunner` serves each created transform job's model (its artifact, with the job's environment) with
  the model server in a process of its own, sends it every object of the job's manifest (or prefix) as
  SageMaker's Batch Transform does (POST /invocations, the job's content type), and writes each answer to
  `<output path>/<key relative to the prefix>.out`. A record the server refuses fails the job, naming it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from infra.local.endpoints import download
from infra.local.processes import free_port, spawn, wait_http

log = logging.getLogger("ivadas.local.jobs")


def split_s3(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


def s3_keys(s3, url: str) -> list[str]:  # noqa: ANN001 - a boto3 client
    """Every key under an S3 prefix."""
    bucket, prefix = split_s3(url)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def relative(prefix: str, key: str) -> str:
    """A key's path below a channel's prefix: after the prefix's last '/' (a prefix naming one object keeps
    that object's name)."""
    return key[len(prefix.rpartition("/")[0]) :].lstrip("/") if "/" in prefix else key


@dataclass
class Run:
    """One job this runner started: its process and folder."""

    name: str
    proc: subprocess.Popen
    folder: Path
    deadline: float
    described: dict = field(default_factory=dict)
    result: dict | None = None  # a transform's outcome, set before its server is ended


class Runner(threading.Thread):
    """Polls moto for jobs of one kind, starts new ones, and ends each as its process does."""

    kind = ""

    def __init__(self, moto_url: str, work: Path, logs: Path) -> None:
        super().__init__(name=f"{self.kind}-runner", daemon=True)
        self.moto_url, self.work, self.logs = moto_url, work, logs
        self.runs: dict[str, Run] = {}
        self.stop = threading.Event()
        self.sm, self.s3 = boto3.client("sagemaker"), boto3.client("s3")  # clients: made once

    # ------------------------------------------------------------------ what each kind does
    def start_job(self, described: dict) -> Run:
        raise NotImplementedError

    def finish(self, run: Run) -> dict:
        """The job's final report once its process has exited."""
        raise NotImplementedError

    def listing(self, status: str) -> list[str]:
        raise NotImplementedError

    def describe(self, name: str) -> dict:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def report(self, name: str, body: dict) -> None:
        request = urllib.request.Request(
            f"{self.moto_url}/_ivadas/jobs/{self.kind}/{name}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as resp:  # the local moto  # nosec B310
            resp.read()

    def check(self) -> None:
        for name in self.listing("InProgress"):
            if name not in self.runs:
                self._start(name)
        for name in self.listing("Stopping"):
            run = self.runs.pop(name, None)
            if run is not None:
                self._kill(run)
            self.report(name, {"status": "Stopped", "secondary_status": "Stopped", "message": "stopped"})
        for name, run in list(self.runs.items()):
            if run.proc.poll() is None and time.monotonic() > run.deadline:
                self._kill(run)
                del self.runs[name]
                self.report(name, {"status": "Stopped", "secondary_status": "MaxRuntimeExceeded",
                                   "message": "the job ran past its MaxRuntimeInSeconds"})  # fmt: skip
            elif run.proc.poll() is not None:
                del self.runs[name]
                self._end(run)

    def _start(self, name: str) -> None:
        described = self.describe(name)
        try:
            self.runs[name] = self.start_job(described)
        except Exception as exc:  # noqa: BLE001 - the job fails with the reason, as SageMaker's would
            log.exception("%s job %s could not start", self.kind, name)
            self.report(name, {"status": "Failed", "secondary_status": "Failed", "failure_reason": f"{exc}"})

    def _end(self, run: Run) -> None:
        try:
            body = self.finish(run)
        except Exception as exc:  # noqa: BLE001 - e.g. the output could not be uploaded
            log.exception("%s job %s could not finish", self.kind, run.name)
            body = {"status": "Failed", "secondary_status": "Failed", "failure_reason": f"{exc}"}
        self.report(run.name, body)
        shutil.rmtree(run.folder, ignore_errors=True)

    def _kill(self, run: Run) -> None:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGKILL)
        run.proc.wait()
        shutil.rmtree(run.folder, ignore_errors=True)

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - moto restarting or shutting down
                log.debug("%s runner: moto not answering", self.kind, exc_info=True)
        for run in self.runs.values():
            self._kill(run)


class TrainingRunner(Runner):
    kind = "training"

    def listing(self, status: str) -> list[str]:
        pages = self.sm.get_paginator("list_training_jobs").paginate(StatusEquals=status)
        return [j["TrainingJobName"] for page in pages for j in page["TrainingJobSummaries"]]

    def describe(self, name: str) -> dict:
        return self.sm.describe_training_job(TrainingJobName=name)

    def start_job(self, described: dict) -> Run:
        name = described["TrainingJobName"]
        folder = self.work / name
        ml = folder / "ml"
        (ml / "input/config").mkdir(parents=True)
        hyperparameters = json.dumps(described.get("HyperParameters", {}))
        (ml / "input/config/hyperparameters.json").write_text(hyperparameters)
        s3 = self.s3
        channels = {}
        for channel in described.get("InputDataConfig", []):
            url = channel["DataSource"]["S3DataSource"]["S3Uri"]
            bucket, prefix = split_s3(url)
            target = ml / "input/data" / channel["ChannelName"]
            for key in s3_keys(s3, url):
                path = target / relative(prefix, key)
                path.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, key, str(path))
            channels[channel["ChannelName"]] = {"TrainingInputMode": "File"}
        (ml / "input/config/inputdataconfig.json").write_text(json.dumps(channels))
        logs = self.logs / "training-jobs"
        logs.mkdir(parents=True, exist_ok=True)
        proc = spawn(["-m", "model_server.training_job"], logs / f"{name}.log", {"IVADAS_ML_ROOT": str(ml)})
        self.report(name, {"status": "InProgress", "secondary_status": "Training", "message": "training"})
        limit = described.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", 86400)
        return Run(name, proc, folder, time.monotonic() + limit, described)

    def finish(self, run: Run) -> dict:
        ml = run.folder / "ml"
        text = (self.logs / "training-jobs" / f"{run.name}.log").read_text(errors="replace")
        metrics = {}
        for definition in run.described["AlgorithmSpecification"].get("MetricDefinitions", []):
            found = re.findall(definition["Regex"], text)
            if found:
                metrics[definition["Name"]] = float(found[-1])
        if run.proc.returncode != 0:
            failure = ml / "output/failure"
            why = failure.read_text() if failure.exists() else f"exit code {run.proc.returncode}"
            return {"status": "Failed", "secondary_status": "Failed", "metrics": metrics,
                    "failure_reason": f"AlgorithmError: {why}"}  # fmt: skip
        out = run.described["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        url = f"{out}/{run.name}/output/model.tar.gz"
        archive = run.folder / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:  # as SageMaker does: model/'s contents, relative names
            for path in sorted((ml / "model").rglob("*")):
                tar.add(path, arcname=path.relative_to(ml / "model").as_posix(), recursive=False)
        self.s3.upload_file(str(archive), *split_s3(url))
        return {"status": "Completed", "secondary_status": "Completed", "metrics": metrics,
                "model_artifacts": url, "message": "uploaded the model"}  # fmt: skip


class TransformRunner(Runner):
    kind = "transform"

    def __init__(self, moto_url: str, work: Path, logs: Path, cache: Path) -> None:
        super().__init__(moto_url, work, logs)
        self.cache = cache

    def listing(self, status: str) -> list[str]:
        pages = self.sm.get_paginator("list_transform_jobs").paginate(StatusEquals=status)
        return [j["TransformJobName"] for page in pages for j in page["TransformJobSummaries"]]

    def describe(self, name: str) -> dict:
        return self.sm.describe_transform_job(TransformJobName=name)

    def start_job(self, described: dict) -> Run:
        """The job's model, served with its artifact and the container's and the job's environment."""
        name = described["TransformJobName"]
        model = self.sm.describe_model(ModelName=described["ModelName"])
        container = model["PrimaryContainer"]
        artifact = download(container["ModelDataUrl"], self.cache)
        folder = self.work / name
        folder.mkdir(parents=True)
        port = free_port()
        env = {**container.get("Environment", {}), **described.get("Environment", {})}
        logs = self.logs / "transform-jobs"
        logs.mkdir(parents=True, exist_ok=True)
        serve = ["-m", "model_server.server.serve", "--artifact", str(artifact), "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "warning"]  # fmt: skip
        proc = spawn(serve, logs / f"{name}.log", env)
        self.report(name, {"status": "InProgress"})
        run = Run(name, proc, folder, time.monotonic() + 86400, described)
        threading.Thread(target=self._transform, args=(run, port), name=name, daemon=True).start()
        return run

    def _inputs(self, described: dict) -> tuple[str, list[str]]:
        """(the prefix keys are relative to, the keys) of the job's data source."""
        source = described["TransformInput"]["DataSource"]["S3DataSource"]
        if source["S3DataType"] == "S3Prefix":
            return source["S3Uri"], s3_keys(self.s3, source["S3Uri"])
        bucket, key = split_s3(source["S3Uri"])
        manifest = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        return manifest[0]["prefix"], list(manifest[1:])

    def _transform(self, run: Run, port: int) -> None:
        """Every record through the server; the process is ended at last, which ends the job."""
        result: dict = {"status": "Completed"}
        try:
            wait_http(f"http://127.0.0.1:{port}/ping", 300, run.proc, ok=lambda s: s == 200)
            described = run.described
            prefix, keys = self._inputs(described)
            out = described["TransformOutput"]["S3OutputPath"].rstrip("/")
            content_type = described["TransformInput"].get("ContentType", "application/octet-stream")
            accept = described["TransformOutput"].get("Accept", "application/json")
            s3 = self.s3
            bucket, key_prefix = split_s3(prefix)

            def one(key: str) -> None:
                body = s3.get_object(Bucket=bucket, Key=key_prefix + key)["Body"].read()
                headers = {"Content-Type": content_type, "Accept": accept}
                request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body, headers)
                try:
                    with urllib.request.urlopen(request, timeout=120) as resp:  # the job's server  # nosec B310
                        answer = resp.read()
                except urllib.error.HTTPError as err:
                    raise RuntimeError(f"ClientError: {key}: {err.code} {err.read()[:300]!r}") from None
                s3.put_object(Body=answer, ContentType=accept, **dict(zip(("Bucket", "Key"),
                              split_s3(f"{out}/{key}.out"), strict=True)))  # fmt: skip

            with ThreadPoolExecutor(max(1, described.get("MaxConcurrentTransforms") or 1)) as pool:
                list(pool.map(one, keys))
        except Exception as exc:  # noqa: BLE001 - the job fails with why
            result = {"status": "Failed", "failure_reason": str(exc)}
        run.result = result
        if run.proc.poll() is None:
            run.proc.terminate()

    def finish(self, run: Run) -> dict:
        exited = {"status": "Failed", "failure_reason": "the model server exited"}
        return run.result or exited
