"""The model server's image as SageMaker can run it: built for linux/amd64 (SageMaker's CPU and GPU instances
are x86_64; a plain `docker build` on an ARM laptop makes arm64), pushed as one Docker v2 manifest. BuildKit
otherwise adds provenance attestations, which turn the push into an OCI image index that SageMaker refuses
("Unsupported manifest media type")."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = "model_server/Dockerfile"
REPOSITORY = "ivadas-model-server"
PLATFORM = "linux/amd64"
#: What model_server/Dockerfile copies into the image: a change elsewhere (docs, tests) makes the same image.
IMAGE_INPUTS = (
    "pyproject.toml",
    "README.md",
    "model_server",
    "functions/ivadas_contract",
    "infra/__init__.py",
    "infra/cli.py",
    "infra/template.py",
    "infra/local/__init__.py",
    "infra/local/args.py",
    "infra/local/users.py",
    "infra/lifecycle/__init__.py",
    "infra/lifecycle/context.py",
    "openapi/model_server.yaml",
)
#: The only manifest type deploy-stack accepts in ECR after the push.
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def registry(account: str, region: str) -> str:
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{suffix}"


def image_uri(account: str, region: str, tag: str) -> str:
    return f"{registry(account, region)}/{REPOSITORY}:{tag}"


def default_tag(root: Path = ROOT, inputs: tuple[str, ...] = IMAGE_INPUTS) -> str:
    """The commit's short hash; with uncommitted changes to what the image holds, plus a hash of them (ECR
    tags are immutable here, so the same tag always means the same code)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)  # nosec B603 B607
        return done.stdout

    tag = git("rev-parse", "--short=12", "HEAD").strip()
    changes = git("diff", "HEAD", "--", *inputs)
    if changes:
        tag += "-dirty-" + hashlib.sha256(changes.encode()).hexdigest()[:8]
    return tag


def login_argv(account: str, region: str) -> list[str]:
    """docker login to the account's registry; the password (GetAuthorizationToken's) comes on stdin."""
    return ["docker", "login", "--username", "AWS", "--password-stdin", registry(account, region)]


def build_argv(uri: str) -> list[str]:
    """Build for linux/amd64 and push as a single Docker v2 manifest: no provenance or SBOM attestations,
    no OCI media types."""
    return [
        "docker", "buildx", "build",
        "--platform", PLATFORM,
        "--provenance=false",
        "--sbom=false",
        "--output", "type=registry,oci-mediatypes=false",
        "--file", DOCKERFILE,
        "--tag", uri,
        ".",
    ]  # fmt: skip
