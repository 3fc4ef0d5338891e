"""Backbone weights a user brings: any timm model's state dict from a local file, an S3 URI or the model hub.

A memory bank is only valid with the exact weights it was built with, so brought weights are known by the
SHA-256 of their file. Fetched files land in a content-addressed cache (`IVADAS_WEIGHTS_CACHE`, default
`~/.cache/ivadas/weights`); an artifact carries the files its classes need and registers them when it is
loaded (artifact.py), so a network-isolated endpoint never fetches anything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from model_server.errors import ArtifactError

#: `--weights` value that asks timm to download the model's default pretrained weights from its hub.
HUB = "hub"
#: File suffixes kept in the cache and the artifact: they decide how a file is read.
SUFFIXES = (".safetensors", ".pth")
_REGISTRY: dict[str, Path] = {}


def cache_dir() -> Path:
    return Path(os.environ.get("IVADAS_WEIGHTS_CACHE", Path.home() / ".cache" / "ivadas" / "weights"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def suffix_of(path: Path) -> str:
    return ".safetensors" if path.suffix == ".safetensors" else ".pth"


def register(path: Path, sha256: str | None = None) -> str:
    """Make a weights file findable by its digest (checked when given); returns the digest."""
    digest = file_sha256(path)
    if sha256 is not None and digest != sha256:
        raise ArtifactError(f"weights file {path} has sha256 {digest}, expected {sha256}")
    _REGISTRY[digest] = path
    return digest


def store(data: bytes, sha256: str, suffix: str) -> Path:
    """Put weights bytes (from an artifact) into the cache under their digest, checked; returns the file."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ArtifactError(f"backbone weights {sha256[:12]}... are corrupt (checksum mismatch)")
    target = cache_dir() / f"{sha256}{suffix}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            tmp.write(data)
        Path(tmp.name).replace(target)
    _REGISTRY[sha256] = target
    return target


def path_for(sha256: str) -> Path:
    """The weights file with this digest: registered in this process, or already in the cache."""
    if sha256 in _REGISTRY and _REGISTRY[sha256].is_file():
        return _REGISTRY[sha256]
    for suffix in SUFFIXES:
        cached = cache_dir() / f"{sha256}{suffix}"
        if cached.is_file():
            register(cached, sha256)
            return cached
    raise ArtifactError(
        f"backbone weights {sha256[:12]}... are not available here: train with --weights, or load the "
        "artifact that carries them"
    )


def _cached_copy(source: Path) -> Path:
    digest = file_sha256(source)
    target = cache_dir() / f"{digest}{suffix_of(source)}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return target


def _from_s3(uri: str) -> Path:
    import boto3  # only the training side fetches from S3; the model server never does

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise ArtifactError(f"weights URI {uri!r} must be s3://bucket/key")
    suffix = ".safetensors" if key.endswith(".safetensors") else ".pth"
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        local = Path(tmp) / f"download{suffix}"
        try:
            boto3.client("s3").download_file(bucket, key, str(local))
        except Exception as exc:  # boto3 raises several unrelated types for a failed download
            raise ArtifactError(f"cannot download weights {uri}: {exc}") from None
        return _cached_copy(local)


def _from_hub(timm_name: str) -> Path:
    import timm

    try:
        model = timm.create_model(timm_name, pretrained=True)
    except Exception as exc:  # network, hub and missing-weights errors alike
        raise ArtifactError(
            f"cannot download pretrained weights for {timm_name!r} from the model hub ({exc}); "
            "pass --weights PATH or s3://... instead"
        ) from None
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        local = Path(tmp) / "hub.pth"
        torch.save(model.state_dict(), local)
        return _cached_copy(local)


def fetch(source: str, timm_name: str) -> tuple[str, Path]:
    """(sha256, file) of the weights at `source`: a local file, an s3:// URI, or "hub"; registered."""
    if source == HUB:
        path = _from_hub(timm_name)
    elif source.startswith("s3://"):
        path = _from_s3(source)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ArtifactError(f"weights file {source} does not exist")
    return register(path), path


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from a .safetensors or a torch file (tensors only: `weights_only`, never unpickling code).
    A checkpoint that wraps it under "state_dict" or "model" is unwrapped."""
    try:
        if suffix_of(path) == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a bad file
        raise ArtifactError(f"weights file {path} cannot be read: {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ArtifactError(f"weights file {path} does not hold a state dict of tensors")
    return dict(state)
