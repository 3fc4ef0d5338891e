"""The local stack's SageMaker endpoints. moto holds the control plane (models, endpoint configs, endpoints)
but runs nothing, so this module does what SageMaker's fleet would:

- at start-up, `bring_up` creates each model's endpoint in moto as `sam deploy` would, from template.yaml's
  model and endpoint config (`create_config`): serving the artifact given to `ivadas local up` (uploaded to
  the model bucket, its URI written to the SSM parameter the template resolves, as `make deploy` does), else
  what that parameter names since an `ivadas deploy`;
- `apply_locally` is CloudFormation's part of a deployment: the endpoint's model and config replaced by ones
  serving what the SSM parameter names, the endpoint updated, the replaced ones deleted. `ivadas deploy` runs
  it itself; the follower runs it for an update of the stack's stand-in (the Deployments API's);
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
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import boto3

from infra.template import ACCOUNT, LOCAL_IMAGE, LOGICAL_PREFIX, Stack
from ivadas_contract.models import MODELS, deployed_url_parameter, endpoint_name
from ivadas_functions.deployments import serves
from model_server.errors import IvadasError

log = logging.getLogger("ivadas.local")


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


def create_config(stack: Stack, model: str, url: str) -> str:
    """What CloudFormation makes of template.yaml's model and endpoint config of `model` serving `url` (the
    local image and execution role stand in for the stack's): a model and a config of a new name."""
    sm, prefix = boto3.client("sagemaker"), LOGICAL_PREFIX[model]
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")[:17]  # to the millisecond: names are unique
    name = f"{endpoint_name(stack.values['Stage'], model)}-{stamp}"
    template_model = stack.props(f"{prefix}Model")
    container = {
        **stack.resolve(template_model["PrimaryContainer"]),
        "Image": LOCAL_IMAGE,
        "ModelDataUrl": url,
    }
    sm.create_model(
        ModelName=name,
        PrimaryContainer=container,
        ExecutionRoleArn=local_role(stack.values["Stage"]),
        EnableNetworkIsolation=bool(template_model.get("EnableNetworkIsolation", False)),
    )
    variants = [  # each of the template's variants on the new model (its ModelName is the model's GetAtt)
        {**stack.resolve({k: v for k, v in variant.items() if k != "ModelName"}), "ModelName": name}
        for variant in stack.props(f"{prefix}EndpointConfig")["ProductionVariants"]
    ]
    for v in variants:
        v["InitialInstanceCount"], v["InitialVariantWeight"] = (
            int(v["InitialInstanceCount"]),
            float(v["InitialVariantWeight"]),
        )
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=variants)
    return name


class ApplyFailed(IvadasError):
    """The endpoint did not take the new config (the old one keeps serving)."""


def apply_locally(stack: Stack, model: str, timeout_s: float) -> None:
    """What a stack update does to `model`'s endpoint when its SSM parameter changed: a new model and config
    from the template, the endpoint updated (created the first time), the replaced ones deleted."""
    sm, stage = boto3.client("sagemaker"), stack.values["Stage"]
    name = endpoint_name(stage, model)
    url = boto3.client("ssm").get_parameter(Name=deployed_url_parameter(stage, model))["Parameter"]["Value"]
    try:
        old = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    except sm.exceptions.ClientError:
        old = None
    if old is not None and serves(sm, old) == url:
        return  # nothing changed: CloudFormation would not touch the endpoint either
    config = create_config(stack, model, url)
    if old is None:  # the local stack's first endpoint of this model: what the stack's create makes on AWS
        sm.create_endpoint(EndpointName=name, EndpointConfigName=config)
    else:
        retain = stack.props(f"{LOGICAL_PREFIX[model]}Endpoint").get("RetainAllVariantProperties", False)
        sm.update_endpoint(EndpointName=name, EndpointConfigName=config, RetainAllVariantProperties=retain)
    _wait(sm, name, timeout_s)
    if old is not None:  # CloudFormation deletes what it replaced
        old_model = sm.describe_endpoint_config(EndpointConfigName=old)["ProductionVariants"][0]["ModelName"]
        sm.delete_endpoint_config(EndpointConfigName=old)
        sm.delete_model(ModelName=old_model)


def _wait(sm: object, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = sm.describe_endpoint(EndpointName=name)["EndpointStatus"]  # type: ignore[attr-defined]
        if status == "InService":
            return
        if status == "Failed":
            raise ApplyFailed(f"endpoint {name} failed to update; the previous config keeps serving")
        time.sleep(5)
    raise ApplyFailed(f"endpoint {name} still updating after {timeout_s:.0f} s")


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


def _from_parameter(stack: Stack, model: str, cache: Path) -> Served | None:
    """The endpoint serving what the SSM parameter names (an earlier `ivadas deploy`), or None before any."""
    ssm = boto3.client("ssm")
    try:
        url = ssm.get_parameter(Name=deployed_url_parameter(stack.values["Stage"], model))["Parameter"][
            "Value"
        ]
    except ssm.exceptions.ParameterNotFound:
        return None
    config = create_config(stack, model, url)
    return Served(model, endpoint_name(stack.values["Stage"], model), download(url, cache), config)


def _from_file(stack: Stack, model: str, artifact: Path, bucket: str) -> Served:
    stage = stack.values["Stage"]
    key = f"{stage}/{model}/local-up/{file_sha256(artifact)[:16]}/model.tar.gz"
    boto3.client("s3").upload_file(str(artifact), bucket, key)
    url = f"s3://{bucket}/{key}"
    boto3.client("ssm").put_parameter(
        Name=deployed_url_parameter(stage, model), Value=url, Type="String", Overwrite=True
    )
    return Served(model, endpoint_name(stage, model), artifact, create_config(stack, model, url))


def bring_up(artifacts: dict[str, str | None], stack: Stack, bucket: str, cache: Path) -> list[Served]:
    """Each model's endpoint in moto, from its `local up` artifact or what its SSM parameter names."""
    served = []
    for model, artifact in artifacts.items():
        s = (
            _from_file(stack, model, Path(artifact), bucket)
            if artifact
            else _from_parameter(stack, model, cache)
        )
        if s is not None:
            boto3.client("sagemaker").create_endpoint(EndpointName=s.endpoint, EndpointConfigName=s.config)
            served.append(s)
    return served


class EndpointFollower(threading.Thread):
    """Swaps the model server's endpoints to the artifacts their moto endpoints were updated to."""

    def __init__(
        self, served: list[Served], endpoints: list[str], model_url: str, cache: Path, moto_url: str,
        stack: Stack | None = None,
    ) -> None:  # fmt: skip
        super().__init__(name="endpoint-follower", daemon=True)
        self.moto_url = moto_url
        #: the template whose stand-in stack's updates this follower applies (None: it applies none)
        self.stack = stack
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

    def apply_stack_update(self) -> None:
        """An update of the stack's stand-in (the Deployments API starts them) applied as CloudFormation
        would: each endpoint whose SSM parameter changed, its model server swapped, then the update ended, or
        rolled back (the old config keeps serving) with why."""
        if self.stack is None:
            return
        name = str(self.stack.values["AWS::StackName"])
        try:
            status = boto3.client("cloudformation").describe_stacks(StackName=name)["Stacks"][0][
                "StackStatus"
            ]
        except Exception:  # noqa: BLE001 - no stand-in (a test's stack): nothing to apply
            return
        if status != "UPDATE_IN_PROGRESS":
            return
        done, reason = "UPDATE_COMPLETE", None
        try:
            for model in MODELS:
                apply_locally(self.stack, model, timeout_s=600)
            self.swap_changed()
        except Exception as exc:  # noqa: BLE001 - CloudFormation rolls a failed update back, with its reason
            log.exception("stack %s: update failed", name)
            done, reason = "UPDATE_ROLLBACK_COMPLETE", f"{type(exc).__name__}: {exc}"
        request = urllib.request.Request(
            f"{self.moto_url}/_ivadas/stacks/finish",
            data=json.dumps({"name": name, "status": done, "reason": reason}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - the local moto  # nosec B310
            resp.read()

    def check(self) -> None:
        self.apply_stack_update()
        self.swap_changed()

    def swap_changed(self) -> None:
        """Swap each endpoint the model server serves to its moto endpoint's config, where that changed."""
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
