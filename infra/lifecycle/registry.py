"""Model versions in the SageMaker Model Registry: one package group per model family and stage, one package
per distinct artifact (content hash), its per-class quality metrics as a JSON document in S3 that the package
references, and the approval decision stored with the package (status, who, when, why)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from statistics import mean

from infra.lifecycle.context import Context
from infra.local.endpoints import file_sha256
from ivadas_contract.models import package_group
from ivadas_functions import registry as shared
from ivadas_functions.registry import (  # noqa: F401 - the lifecycle's names, re-exported
    APPROVED,
    PENDING,
    REJECTED,
    SUMMARY_METRICS,
    ModelVersion,
    RegistryError,
)
from model_server import __version__
from model_server.engine.artifact import read_cards
from model_server.errors import IvadasError

#: Request and response types of the model server (SageMaker container contract).
CONTENT_TYPES = ["application/json", "image/png", "image/jpeg", "application/x-image"]


def class_metrics(card: dict) -> dict:
    """What the registry shows of one class's model card (None where the card has no test-split metrics)."""
    metrics = card.get("metrics") or {}
    at = metrics.get("at_threshold") or {}
    threshold = card.get("threshold") or {}
    return {
        "image_auroc": metrics.get("image_auroc"),
        "pixel_auroc": metrics.get("pixel_auroc"),
        "aupro": metrics.get("aupro"),
        "f1_max": metrics.get("f1_max"),
        "threshold": threshold.get("threshold"),
        "recall_at_threshold": at.get("recall"),
        "false_positive_rate_at_threshold": at.get("false_positive_rate"),
        "n_good": metrics.get("n_good"),
        "n_anomalous": metrics.get("n_anomalous"),
    }


def quality_document(manifest: dict, cards: dict[str, dict]) -> dict:
    """The model quality metrics document the package references: per class, the card's metrics, data
    fingerprint and hyperparameters."""
    return {
        "model": manifest["model"],
        "artifact_version": manifest["model_version"],
        "code_version": manifest.get("git_commit"),
        "classes": {
            name: {
                "metrics": class_metrics(card),
                "data_fingerprint": (card.get("data") or {}).get("fingerprint"),
                "hyperparameters": card.get("hyperparameters"),
                "training_seconds": (card.get("training") or {}).get("total_seconds"),
                "trained_at": card.get("trained_at"),
            }
            for name, card in sorted(cards.items())
        },
        # classes a cloud training run could not train (`--allow-partial`), each with its job and reason
        "missing_classes": (manifest.get("training") or {}).get("missing_classes") or {},
    }


def _metadata(sha: str, manifest: dict, doc: dict) -> dict[str, str]:
    classes = doc["classes"]
    fingerprints = "".join(c["data_fingerprint"] or "" for c in classes.values())
    meta = {
        "content_sha256": sha,
        "artifact_version": manifest["model_version"],
        "classes": ",".join(classes),
        "code_version": str(manifest.get("git_commit") or "unknown"),
        "ivadas_version": __version__,
        "trained_at": manifest.get("created", ""),
        "training_seconds": f"{sum(c['training_seconds'] or 0 for c in classes.values()):.1f}",
        "data_fingerprint": hashlib.sha256(fingerprints.encode()).hexdigest(),
    }
    if doc["missing_classes"]:
        meta["missing_classes"] = ",".join(sorted(doc["missing_classes"]))
    for metric in SUMMARY_METRICS:
        values = [c["metrics"][metric] for c in classes.values() if c["metrics"][metric] is not None]
        if values:  # metadata values may not be empty: a metric no class has is left out
            meta[f"mean_{metric}"] = f"{mean(values):.4f}"
    return meta


def ensure_group(ctx: Context, model: str) -> str:
    group = package_group(ctx.stage, model)
    try:
        ctx.sagemaker.describe_model_package_group(ModelPackageGroupName=group)
    except ctx.sagemaker.exceptions.ClientError:
        ctx.sagemaker.create_model_package_group(
            ModelPackageGroupName=group,
            ModelPackageGroupDescription=f"IVADAS {model} versions, stage {ctx.stage}",
        )
    return group


def versions(ctx: Context, model: str) -> list[ModelVersion]:
    return shared.versions(ctx.sagemaker, ctx.stage, model)


def get_version(ctx: Context, name: str) -> ModelVersion:
    try:
        return shared.get_version(ctx.sagemaker, ctx.stage, name)
    except RegistryError as exc:
        raise IvadasError(str(exc)) from None


def decide(ctx: Context, name: str, status: str, note: str | None) -> ModelVersion:
    """Approve or reject `name` as the caller's AWS identity (STS GetCallerIdentity: verified by AWS's request
    signature, as a UI decision is by the sign-in token)."""
    try:
        verified = {"decided_by_verified": "true"}
        return shared.decide(ctx.sagemaker, ctx.ssm, ctx.stage, name, status, note, ctx.caller, verified)
    except RegistryError as exc:
        raise IvadasError(str(exc)) from None


def reopen(ctx: Context, name: str, why: str) -> ModelVersion:
    """Make a decided version pending again as the caller's AWS identity, `why` kept in its history."""
    try:
        return shared.reopen(ctx.sagemaker, ctx.ssm, ctx.stage, name, why, ctx.caller)
    except RegistryError as exc:
        raise IvadasError(str(exc)) from None


def _read(artifact: str | Path, model: str) -> tuple[Path, dict, dict, str]:
    path = Path(artifact)
    manifest, cards = read_cards(path)
    if manifest["model"] != model:
        raise IvadasError(f"{path} is a {manifest['model']} artifact, not {model}")
    return path, manifest, cards, file_sha256(path)


def _registered(ctx: Context, model: str, sha: str) -> ModelVersion | None:
    return next((v for v in versions(ctx, model) if v.metadata.get("content_sha256") == sha), None)


def _create(ctx: Context, path: Path, model: str, manifest: dict, cards: dict, sha: str) -> str:
    """Upload the artifact and its metrics and create the package (pending); the artifact's S3 URI."""
    prefix = f"{ctx.stage}/{model}/{sha[:16]}"
    doc = quality_document(manifest, cards)
    try:
        ctx.s3.upload_file(str(path), ctx.model_bucket, f"{prefix}/model.tar.gz")
        ctx.s3.put_object(
            Bucket=ctx.model_bucket,
            Key=f"{prefix}/metrics.json",
            Body=json.dumps(doc, indent=2).encode(),
            ContentType="application/json",
        )
    except ctx.s3.exceptions.NoSuchBucket:
        raise IvadasError(f"model bucket {ctx.model_bucket} does not exist (--model-bucket)") from None
    url = f"s3://{ctx.model_bucket}/{prefix}"
    ctx.sagemaker.create_model_package(
        ModelPackageGroupName=package_group(ctx.stage, model),
        ModelPackageDescription=f"{manifest['model_version']}: {', '.join(doc['classes'])}"
        + (f"; missing {', '.join(sorted(doc['missing_classes']))}" if doc["missing_classes"] else ""),
        InferenceSpecification={
            "Containers": [{"Image": ctx.image_uri, "ModelDataUrl": f"{url}/model.tar.gz"}],
            "SupportedContentTypes": CONTENT_TYPES,
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelMetrics={
            "ModelQuality": {
                "Statistics": {"ContentType": "application/json", "S3Uri": f"{url}/metrics.json"}
            }
        },
        MetadataProperties={
            "CommitId": str(manifest.get("git_commit") or "unknown"),
            "GeneratedBy": "ivadas",
        },
        CustomerMetadataProperties=_metadata(sha, manifest, doc),
        ModelApprovalStatus=PENDING,
    )
    return f"{url}/model.tar.gz"


def register(ctx: Context, artifact: str | Path, model: str) -> tuple[ModelVersion, bool]:
    """(version, True) for a new package; (the existing version, False) when this artifact is registered."""
    path, manifest, cards, sha = _read(artifact, model)
    ensure_group(ctx, model)
    existing = _registered(ctx, model, sha)
    if existing is not None:
        return existing, False
    _create(ctx, path, model, manifest, cards, sha)
    return _registered(ctx, model, sha), True


def upload_version(ctx: Context, artifact: str | Path, model: str) -> str:
    """The S3 URI of `artifact` as a registered version, registered (pending) unless it is already: what
    `make deploy` serves first. Uses nothing a write answers, so its dry run shows every call."""
    path, manifest, cards, sha = _read(artifact, model)
    ensure_group(ctx, model)
    existing = _registered(ctx, model, sha)
    return existing.model_data_url if existing else _create(ctx, path, model, manifest, cards, sha)
