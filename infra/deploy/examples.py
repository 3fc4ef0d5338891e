"""docs/deploying.md's two dry runs, made by running `ivadas deploy-stack --dry-run` (python -m
infra.deploy.examples rewrites them; tests/unit/test_deploy.py checks the page still shows what it prints):

- a fresh account: no credentials at all, so every read is "unknown" and taken as absent;
- a second stage: a local AWS (moto) holding what `make deploy STAGE=dev` leaves that every stage of the
  account shares: the image repository with this commit's image, and API Gateway's logging role.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from infra.deploy import command, image
from infra.deploy.recorder import Recorder
from infra.deploy.steps import API_GATEWAY_LOGS_ROLE

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploying.md"
REGION = "eu-west-1"
#: The make variables of each example (the Makefile turns them into deploy-stack's options).
FRESH = {"STAGE": "dev", "REGION": REGION, "ALARM_EMAIL": "ops@example.com", "ADMIN_USER": "ana",
         "ADMIN_EMAIL": "ana@example.com"}  # fmt: skip
SECOND = {"STAGE": "prod", "REGION": REGION, "ALARM_EMAIL": "ops@example.com", "ADMIN_USER": "ana",
          "ADMIN_EMAIL": "ana@example.com"}  # fmt: skip
_OPTIONS = {"STAGE": "--stage", "REGION": "--region", "ALARM_EMAIL": "--alarm-email",
            "ADMIN_USER": "--admin-user", "ADMIN_EMAIL": "--admin-email"}  # fmt: skip


def make_command(variables: dict[str, str]) -> str:
    return "make deploy " + " ".join(f"{k}={v}" for k, v in variables.items()) + " DRY_RUN=1"


def argv(variables: dict[str, str]) -> list[str]:
    """deploy-stack's options for these make variables (the Makefile's deploy target does the same)."""
    return [a for k, v in variables.items() for a in (_OPTIONS[k], v)] + ["--dry-run"]


def _dry_run(variables: dict[str, str], extra: list[str]) -> str:
    import argparse

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    request = command.request_from_args(parser.parse_args(argv(variables) + extra))
    lines: list[str] = []
    command.deploy(request, Recorder(request.region, dry_run=True, out=lines.append))
    return "\n".join(lines)


@contextmanager
def _no_credentials() -> Iterator[None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true"
    )
    with mock.patch.dict(os.environ, env, clear=True):
        yield


def fresh_account(extra: list[str]) -> str:
    with _no_credentials():
        return _dry_run(FRESH, extra)


def seed_image(ecr: Any, tag: str) -> None:
    """An image in moto's ECR as a push leaves it: a Docker v2 manifest under `tag`."""
    manifest = json.dumps({"schemaVersion": 2, "mediaType": image.MANIFEST_TYPE, "layers": []})
    ecr.put_image(repositoryName=image.REPOSITORY, imageManifest=manifest, imageTag=tag)


def second_stage(extra: list[str]) -> str:
    import boto3
    from moto import mock_aws

    with _no_credentials(), mock_aws():
        ecr = boto3.client("ecr", region_name=REGION)
        ecr.create_repository(repositoryName=image.REPOSITORY)
        seed_image(ecr, image.default_tag())
        trust = '{"Version": "2012-10-17", "Statement": []}'
        role = boto3.client("iam").create_role(RoleName=API_GATEWAY_LOGS_ROLE, AssumeRolePolicyDocument=trust)
        boto3.client("apigateway", region_name=REGION).update_account(
            patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": role["Role"]["Arn"]}]
        )
        return _dry_run(SECOND, extra)


def _block(name: str, variables: dict[str, str], output: str) -> str:
    fence = "```console no-run aws"  # the page's shell blocks say whether they run (tests/docblocks.py)
    return f"<!-- dry run: {name} -->\n{fence}\n$ {make_command(variables)}\n{output}\n```\n<!-- /dry run -->"


def blocks(extra: list[str] | None = None) -> dict[str, str]:
    """Both dry runs; `extra`: more options (the tests' own artifacts instead of make demo's)."""
    fresh, second = fresh_account(extra or []), second_stage(extra or [])
    return {"fresh": _block("fresh", FRESH, fresh), "second": _block("second", SECOND, second)}


def shown(doc: str) -> dict[str, str]:
    """The dry runs docs/deploying.md shows now, by name."""
    pattern = r"<!-- dry run: (\w+) -->.*?<!-- /dry run -->"
    return {m.group(1): m.group(0) for m in re.finditer(pattern, doc, flags=re.DOTALL)}


def main() -> int:
    text = DOC.read_text()
    for name, block in blocks().items():
        text = text.replace(shown(text)[name], block)
    DOC.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
