"""Where the lifecycle commands act: a stage of the deployed stack on AWS, or the running local stack (stage
`local`, whose boto3 environment points at moto). Names come from ivadas_contract.models and the template;
a deployed stage's model bucket and image come from its CloudFormation stack, never from template defaults."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from infra.template import Stack, load_template, stack_name
from model_server.errors import IvadasError

LOCAL = "local"


def boto3_client(service: str) -> Any:
    import boto3  # here: `ivadas train`'s parser, which the training image runs, takes these options too

    return boto3.client(service)


@dataclass
class Context:
    stage: str
    model_bucket: str
    image_uri: str
    local: bool = False
    #: where artifacts are downloaded to be scored here (compare, promote, update-model)
    cache_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "ivadas-artifacts")
    #: makes the AWS clients: boto3's, or `make deploy`'s recorder (whose dry run only prints the writes)
    client: Callable[[str], Any] = field(default=boto3_client, repr=False)

    @property
    def stack_name(self) -> str:
        return stack_name(self.stage)

    @cached_property
    def sagemaker(self):  # noqa: ANN201 - boto3 client
        return self.client("sagemaker")

    @cached_property
    def ssm(self):  # noqa: ANN201
        return self.client("ssm")

    @cached_property
    def s3(self):  # noqa: ANN201
        return self.client("s3")

    @cached_property
    def cloudformation(self):  # noqa: ANN201
        return self.client("cloudformation")

    @cached_property
    def caller(self) -> str:
        """Who decides or deploys from the CLI: the caller's AWS identity, its ARN from STS
        GetCallerIdentity (moto answers it locally). Decisions made in the UI record the signed-in user."""
        return self.client("sts").get_caller_identity()["Arn"]

    @cached_property
    def stack(self) -> Stack:
        """The template bound to this stage: the names of its tables and queues."""
        return Stack(load_template(), {"Stage": self.stage})

    @property
    def local_role(self) -> str:
        from infra.local.endpoints import local_role

        return local_role(self.stage)


@contextmanager
def as_cli_error() -> Iterator[None]:
    """A refusal of the shared lifecycle code (ivadas_functions: a RegistryError with its kind) as the CLI's
    IvadasError: one line and exit 2, and `--json` reports the same type the API answers. Known by its class's
    name, as cli_errors knows kinds: the training image imports this module and has no ivadas_functions."""
    try:
        yield
    except Exception as exc:
        if "RegistryError" not in {cls.__name__ for cls in type(exc).__mro__}:
            raise
        err = IvadasError(str(exc))
        err.kind = exc.kind  # type: ignore[attr-defined]
        raise err from None


def add_context_arguments(p: argparse.ArgumentParser) -> None:
    from infra.local.args import DEFAULT_STATE_DIR

    p.add_argument("--stage", default=LOCAL, help="stack stage ('local': the running local stack)")
    p.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR), help="the local stack's state folder")
    p.add_argument("--model-bucket", help="artifact bucket (default: the deployed stack's ModelBucketName)")
    p.add_argument("--image-uri", help="model server image (default: the deployed stack's ModelImageUri)")


def deployed_settings(stage: str, cloudformation: Any = None) -> dict[str, str]:
    """The parameters the stage's stack was deployed with; IvadasError when it has no stack."""
    # botocore: not in the training image, whose `train` parser imports this module
    from ivadas_functions import stack as deployed_stack

    name = stack_name(stage)
    stack = deployed_stack.describe(cloudformation or boto3_client("cloudformation"), name)
    if stack is None:
        raise IvadasError(
            f"stage {stage} has no stack {name} in this region: deploy it first (make deploy STAGE={stage})"
        )
    return deployed_stack.parameters(stack)


def context_from_args(args: argparse.Namespace) -> Context:
    if args.stage != LOCAL:
        bucket, image = args.model_bucket, args.image_uri
        if not (bucket and image):
            deployed = deployed_settings(args.stage)
            bucket, image = bucket or deployed["ModelBucketName"], image or deployed["ModelImageUri"]
        return Context(args.stage, bucket, image)
    from infra.local.state import read_state, use_state
    from infra.template import LOCAL_IMAGE

    state = read_state(args.state_dir)
    use_state(state)
    bucket = args.model_bucket or state["resources"]["ModelBucket"]
    image = args.image_uri or LOCAL_IMAGE
    return Context(LOCAL, bucket, image, local=True, cache_dir=Path(args.state_dir) / "artifacts")
