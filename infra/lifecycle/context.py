"""Where the lifecycle commands act: a stage of the deployed stack on AWS, or the running local stack (stage
`local`, whose boto3 environment points at moto). Names come from ivadas_contract.models and the template."""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from infra.template import Stack, load_template

LOCAL = "local"


def _client(service: str):  # noqa: ANN202 - a boto3 client
    import boto3  # here: `ivadas train`'s parser, which the training image runs, takes these options too

    return boto3.client(service)


def template_default(parameter: str) -> str:
    return str(load_template()["Parameters"][parameter]["Default"])


@dataclass
class Context:
    stage: str
    model_bucket: str
    image_uri: str
    local: bool = False
    #: where artifacts are downloaded to be scored here (compare, promote, update-model)
    cache_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "ivadas-artifacts")

    @cached_property
    def sagemaker(self):  # noqa: ANN201 - boto3 client
        return _client("sagemaker")

    @cached_property
    def ssm(self):  # noqa: ANN201
        return _client("ssm")

    @cached_property
    def s3(self):  # noqa: ANN201
        return _client("s3")

    @cached_property
    def caller(self) -> str:
        """Who decides or deploys from the CLI: the caller's AWS identity, its ARN from STS
        GetCallerIdentity (moto answers it locally). Decisions made in the UI record the signed-in user."""
        return _client("sts").get_caller_identity()["Arn"]

    @cached_property
    def stack(self) -> Stack:
        """The template bound to this stage: the names of its tables and queues."""
        return Stack(load_template(), {"Stage": self.stage})

    @property
    def local_role(self) -> str:
        from infra.local.endpoints import local_role

        return local_role(self.stage)


def add_context_arguments(p: argparse.ArgumentParser) -> None:
    from infra.local.args import DEFAULT_STATE_DIR

    p.add_argument("--stage", default=LOCAL, help="stack stage ('local': the running local stack)")
    p.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR), help="the local stack's state folder")
    p.add_argument("--model-bucket", help="artifact bucket (default: the template's ModelBucketName)")
    p.add_argument("--image-uri", help="model server image (default: the template's ModelImageUri)")


def context_from_args(args: argparse.Namespace) -> Context:
    image = args.image_uri or template_default("ModelImageUri")
    if args.stage != LOCAL:
        return Context(args.stage, args.model_bucket or template_default("ModelBucketName"), image)
    from infra.local.state import read_state, use_state

    state = read_state(args.state_dir)
    use_state(state)
    bucket = args.model_bucket or state["resources"]["ModelBucket"]
    return Context(LOCAL, bucket, image, local=True, cache_dir=Path(args.state_dir) / "artifacts")
