"""SageMaker training and transform jobs in the local stack's moto, as AWS keeps them.

moto 5.2 records a created job as Completed at once (with a made-up metric definition and final metric) and
has no StopTrainingJob or StopTransformJob. Here a created job is InProgress until someone runs it, a stop
request moves it to Stopping, and the local job runners (infra/local/jobs.py, in the supervisor) report what
happened through a route of this moto's own, outside any AWS API:

    POST /_ivadas/jobs/{training|transform}/NAME   {"status", "secondary_status", "failure_reason",
                                                    "metrics": {name: value}, "model_artifacts": s3 url}

so DescribeTrainingJob and DescribeTransformJob answer as on AWS. ListServiceQuotas answers the SageMaker
training quotas per instance type with this machine's cores: the local account runs that many jobs at once.

Installed into the local stack's moto process by moto_extensions.install.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from moto.core.responses import EmptyResult
from moto.core.utils import utcnow
from moto.sagemaker.exceptions import ResourceInUseException, ValidationError
from moto.sagemaker.models import FakeTrainingJob, FakeTransformJob, SageMakerModelBackend, sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse
from moto.servicequotas.responses import ServiceQuotasResponse

from infra.template import ACCOUNT, REGION

ROUTE = "/_ivadas/jobs/"
ENDED = ("Completed", "Failed", "Stopped")
#: Training instance types the local account has a quota for (ListServiceQuotas).
INSTANCE_TYPES = ("ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge", "ml.c5.xlarge",
                  "ml.c5.2xlarge", "ml.c5.4xlarge", "ml.g5.xlarge", "ml.g6.xlarge")  # fmt: skip


def _pending_training(init):  # noqa: ANN001, ANN202 - wraps moto's constructor
    @functools.wraps(init)
    def create(self, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        spec = kwargs["algorithm_specification"]
        definitions = list(spec.get("MetricDefinitions") or [])  # moto replaces them with its own
        init(self, *args, **kwargs)
        spec["MetricDefinitions"] = definitions
        self.training_job_status, self.secondary_status = "InProgress", "Starting"
        self.training_start_time = self.training_end_time = self.model_artifacts = None
        self.final_metric_data_list, self.failure_reason = [], None
        self.secondary_status_transitions = [_transition("Starting", "Preparing the instances for training")]

    create.ivadas_jobs = True
    return create


def _pending_transform(init):  # noqa: ANN001, ANN202 - wraps moto's constructor
    @functools.wraps(init)
    def create(self, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        init(self, *args, **kwargs)
        self.transform_job_status, self.failure_reason = "InProgress", None
        self.transform_start_time = self.transform_end_time = None

    return create


def _transition(status: str, message: str) -> dict:
    return {"Status": status, "StartTime": utcnow(), "StatusMessage": message}


def _unique(create, jobs: str, kind: str):  # noqa: ANN001, ANN202 - wraps moto's create_*_job
    """AWS refuses a second job of the same name; moto would overwrite the first."""

    @functools.wraps(create)
    def once(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        name = kwargs.get(f"{kind}_job_name") or args[0]
        if name in getattr(self, jobs):
            raise ResourceInUseException(f"{kind.title()} job names must be unique: {name} exists")
        return create(self, *args, **kwargs)

    return once


def _job(backend: SageMakerModelBackend, kind: str, name: str) -> Any:
    jobs = backend.training_jobs if kind == "training" else backend.transform_jobs
    if name not in jobs:
        cls = FakeTrainingJob if kind == "training" else FakeTransformJob
        arn = cls.arn_formatter(name, backend.account_id, backend.region_name)
        raise ValidationError(message=f"Could not find {kind} job '{arn}'.")
    return jobs[name]


def _stop(kind: str) -> Callable:
    def stop(self: SageMakerResponse) -> EmptyResult:
        name = self._get_param("TrainingJobName" if kind == "training" else "TransformJobName")
        job = _job(self.sagemaker_backend, kind, name)
        status = f"{kind}_job_status"
        if getattr(job, status) != "InProgress":
            raise ValidationError(message=f"The job is {getattr(job, status)}: only an InProgress job stops.")
        setattr(job, status, "Stopping")
        job.last_modified_time = utcnow()
        if kind == "training":
            job.secondary_status = "Stopping"
            job.secondary_status_transitions.append(_transition("Stopping", "Stopping the training job"))
        return EmptyResult()

    return stop


def update_job(kind: str, name: str, body: dict) -> dict:
    """What a local runner reports about a job: its status, failure reason, metrics, model."""
    job = _job(sagemaker_backends[ACCOUNT][REGION], kind, name)
    now = utcnow()
    status = body.get("status")
    if kind == "training":
        if body.get("secondary_status"):
            job.secondary_status = body["secondary_status"]
            step = _transition(job.secondary_status, body.get("message", ""))
            job.secondary_status_transitions.append(step)
        if status == "InProgress" and job.training_start_time is None:
            job.training_start_time = now
        for metric, value in (body.get("metrics") or {}).items():
            job.final_metric_data_list = [m for m in job.final_metric_data_list if m["MetricName"] != metric]
            job.final_metric_data_list.append({"MetricName": metric, "Value": float(value), "Timestamp": now})
        if body.get("model_artifacts"):
            job.model_artifacts = {"S3ModelArtifacts": body["model_artifacts"]}
        if status:
            job.training_job_status = status
        if status in ENDED:
            job.training_end_time = now
    else:
        if status == "InProgress" and job.transform_start_time is None:
            job.transform_start_time = now
        if status:
            job.transform_job_status = status
        if status in ENDED:
            job.transform_end_time = now
    if body.get("failure_reason"):
        job.failure_reason = body["failure_reason"][:1024]
    job.last_modified_time = now
    return {"name": name, "status": getattr(job, f"{kind}_job_status")}


def _list_service_quotas(self: ServiceQuotasResponse) -> str:
    """SageMaker's training quotas: this machine's cores per instance type (other services: none)."""
    if json.loads(self.body).get("ServiceCode") != "sagemaker":
        return json.dumps({"Quotas": []})
    cores = float(len(os.sched_getaffinity(0)))
    quotas = [{"ServiceCode": "sagemaker", "QuotaCode": f"L-LOCAL{i:03d}", "Value": cores, "Adjustable": True,
               "QuotaName": f"{t} for training job usage", "Unit": "None"}
              for i, t in enumerate(INSTANCE_TYPES)]  # fmt: skip
    return json.dumps({"Quotas": quotas})


def job_routes(app: Callable) -> Callable:
    """moto's WSGI application with the runners' route in front of it."""

    def wsgi(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(ROUTE) or environ["REQUEST_METHOD"] != "POST":
            return app(environ, start_response)
        kind, _, name = path[len(ROUTE) :].partition("/")
        try:
            body = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
            answer, status = update_job(kind, name, body), "200 OK"
        except (ValidationError, ValueError, KeyError) as exc:
            answer, status = {"error": str(exc), "type": "bad_request"}, "400 Bad Request"
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(answer).encode()]

    return wsgi


def install() -> None:
    if getattr(FakeTrainingJob.__init__, "ivadas_jobs", False):
        return
    FakeTrainingJob.__init__ = _pending_training(FakeTrainingJob.__init__)
    FakeTransformJob.__init__ = _pending_transform(FakeTransformJob.__init__)
    backend = SageMakerModelBackend
    backend.create_training_job = _unique(backend.create_training_job, "training_jobs", "training")
    backend.create_transform_job = _unique(backend.create_transform_job, "transform_jobs", "transform")
    SageMakerResponse.stop_training_job = _stop("training")  # type: ignore[attr-defined]
    SageMakerResponse.stop_transform_job = _stop("transform")  # type: ignore[attr-defined]
    ServiceQuotasResponse.list_service_quotas = _list_service_quotas  # type: ignore[attr-defined]
