"""The local stack's SageMaker endpoints. moto holds the control plane (models, endpoint configs, endpoints)
but runs nothing, so this module does what SageMaker's fleet would:

- at start-up, `bring_up` creates each model's endpoint in moto as `sam deploy` would: from the artifact given
  to `ivadas local up` (uploaded to the model bucket), else from the deployment record `ivadas deploy` left
  (and the previous configs it names, so a rollback still finds them);
- while the stack runs, `EndpointFollower` waits for the local moto's next endpoint change (a long-polled
  count, infra/local/moto_server.py) and, when an endpoint was updated to a new config, downloads that
  config's artifact and swaps the model server's endpoint to it (PUT /endpoints/NAME/artifact), which keeps
  serving the old artifact until the new one is warm. With nothing deployed it asks moto once a minute.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import boto3

from infra.template import ACCOUNT
from ivadas_contract.models import VARIANT, deployment_parameter, endpoint_name

log = logging.getLogger("ivadas.local")
IMAGE = "ivadas-model-server:local"


@dataclass
class Served:
    """What one model's endpoint serves at start-up."""

    model: str
    endpoint: str
    artifact: Path  # local file the model server loads
    config: str


def file_sha256(path: Path) -> str:
    """SHA-256 of a file read in 1 MB blocks (artifacts can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _split(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


def local_role(stage: str) -> str:
    """The execution role of endpoints the local stack makes itself (moto checks none)."""
    return f"arn:aws:iam::{ACCOUNT}:role/ivadas-{stage}-model"


def default_variant(model_name: str) -> dict:
    """The template's production variant: one ml.m5.large, all the traffic."""
    return {"VariantName": VARIANT, "ModelName": model_name, "InstanceType": "ml.m5.large",
            "InitialInstanceCount": 1, "InitialVariantWeight": 1.0}  # fmt: skip


def _create_config(name: str, url: str, stage: str) -> None:
    sm = boto3.client("sagemaker")
    container = {"Image": IMAGE, "ModelDataUrl": url}
    sm.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=local_role(stage))
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[default_variant(name)])


def artifact_url(config_name: str) -> str:
    sm = boto3.client("sagemaker")
    config = sm.describe_endpoint_config(EndpointConfigName=config_name)
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    return model["PrimaryContainer"]["ModelDataUrl"]


def download(url: str, cache: Path) -> Path:
    """The artifact at `url`, fetched once into `cache` (named by its URL's hash)."""
    path = cache / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.tar.gz"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        bucket, key = _split(url)
        boto3.client("s3").download_file(bucket, key, str(path) + ".partial")
        Path(str(path) + ".partial").replace(path)
    return path


def _from_record(model: str, stage: str, cache: Path) -> Served | None:
    try:
        value = boto3.client("ssm").get_parameter(Name=deployment_parameter(stage, model))["Parameter"][
            "Value"
        ]
    except boto3.client("ssm").exceptions.ParameterNotFound:
        return None
    record = json.loads(value)
    for entry in [record, *record.get("previous", [])]:
        _create_config(entry["endpoint_config"], entry["model_data_url"], stage)
    artifact = download(record["model_data_url"], cache)
    return Served(model, endpoint_name(stage, model), artifact, record["endpoint_config"])


def _from_file(model: str, stage: str, artifact: Path, bucket: str) -> Served:
    digest = file_sha256(artifact)[:16]
    key = f"{stage}/{model}/local-up/{digest}/model.tar.gz"
    boto3.client("s3").upload_file(str(artifact), bucket, key)
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")[:17]
    config = f"{endpoint_name(stage, model)}-local-up-{stamp}"
    _create_config(config, f"s3://{bucket}/{key}", stage)
    return Served(model, endpoint_name(stage, model), artifact, config)


def bring_up(artifacts: dict[str, str | None], stage: str, bucket: str, cache: Path) -> list[Served]:
    """Each model's endpoint in moto, from its `local up` artifact or its deployment record."""
    served = []
    for model, artifact in artifacts.items():
        s = (
            _from_file(model, stage, Path(artifact), bucket)
            if artifact
            else _from_record(model, stage, cache)
        )
        if s is not None:
            boto3.client("sagemaker").create_endpoint(EndpointName=s.endpoint, EndpointConfigName=s.config)
            served.append(s)
    return served


class EndpointFollower(threading.Thread):
    """Swaps the model server's endpoints to the artifacts their moto endpoints were updated to."""

    def __init__(
        self, served: list[Served], endpoints: list[str], model_url: str, cache: Path, moto_url: str
    ) -> None:
        super().__init__(name="endpoint-follower", daemon=True)
        self.moto_url = moto_url
        self.seen = {s.endpoint: s.config for s in served}
        #: what each endpoint serves now: a replaced model server starts with these
        self.artifacts: dict[str, Path] = {s.endpoint: s.artifact for s in served}
        self.endpoints = endpoints
        self.model_url = model_url
        self.cache = cache
        self.stop = threading.Event()

    def _swap(self, endpoint: str, artifact: Path) -> dict:
        request = urllib.request.Request(
            f"{self.model_url}/endpoints/{endpoint}/artifact",
            data=json.dumps({"artifact": str(artifact)}).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=600) as resp:  # noqa: S310 - the local model server  # nosec B310
            return json.loads(resp.read())

    def check(self) -> None:
        sm = boto3.client("sagemaker")
        for endpoint in self.endpoints:
            try:
                config = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
            except sm.exceptions.ClientError:
                continue  # not created yet
            if self.seen.get(endpoint) == config:
                continue
            self.seen[endpoint] = config  # a failed swap is logged once, not retried in a loop
            try:
                artifact = download(artifact_url(config), self.cache)
                answer = self._swap(endpoint, artifact)
                self.artifacts[endpoint] = artifact
                log.info("endpoint %s now serves %s (%s)", endpoint, answer["model_version"], config)
            except Exception:  # noqa: BLE001 - the old artifact keeps serving, as on a failed update
                log.exception("endpoint %s could not swap to %s", endpoint, config)

    def changes(self, after: int | None, wait_s: float = 60.0) -> int:
        """The count of endpoint changes moto has seen, once it differs from `after` (or after `wait_s`)."""
        url = (
            f"{self.moto_url}/_ivadas/endpoints/changes?after={-1 if after is None else after}&wait={wait_s}"
        )
        with urllib.request.urlopen(url, timeout=wait_s + 30) as resp:  # noqa: S310 - the local moto  # nosec B310
            return int(json.loads(resp.read())["generation"])

    def run(self) -> None:
        seen = None  # the count of changes the endpoints were last checked at
        while not self.stop.is_set():
            try:
                now = self.changes(seen)
                if now != seen:
                    self.check()
                    seen = now
            except Exception:  # noqa: BLE001 - moto restarting or shutting down: ask again in a moment
                log.debug("endpoint follower: moto not answering", exc_info=True)
                self.stop.wait(1.0)
