"""Reading and deciding model versions in the SageMaker Model Registry, and reading deployment records: what
both the `ivadas` CLI (infra.lifecycle) and the Models API (models_api.py) do, with plain boto3 clients.

A version is `<model>-<n>`: package n of the group `ivadas-<stage>-<model>`. Its decision (status, who, when,
why) is kept in the package: the approval status and description, and customer metadata, with the history of
every decision and re-open (`decision_history`, a JSON list, the newest last).

A decision is final: a decided version answers a different decision with 409 `conflict` (the same one again
changes nothing) until someone re-opens it, with a reason, which makes it pending again and is recorded too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ivadas_contract.models import BASELINE, deployment_parameter, package_group, parse_version, version_name

PENDING, APPROVED, REJECTED = "PendingManualApproval", "Approved", "Rejected"
#: The history's entry for a re-open (its other entries name the status decided).
REOPENED = "Reopened"
#: SageMaker keeps at most 1,024 characters per metadata value: the history keeps its newest entries that fit,
#: each with the first HISTORY_NOTE_CHARS of its note (the current decision keeps 256 in `decision_note`).
HISTORY_KEY, HISTORY_CHARS, HISTORY_NOTE_CHARS = "decision_history", 1024, 80
#: Model-card metrics summarised per version (their means over classes) in the package's metadata.
SUMMARY_METRICS = ("image_auroc", "pixel_auroc", "aupro", "recall_at_threshold")


class RegistryError(ValueError):
    """A decision the registry cannot make; `kind` is its error type (ivadas_contract.errors)."""

    kind = "bad_request"


class VersionNotFound(RegistryError):
    """A name that is not a version, or a version that does not exist."""

    kind = "not_found"


class VersionInUse(RegistryError):
    """A decision that the version's deployment forbids (a deployed version cannot be rejected)."""

    kind = "conflict"


@dataclass
class ModelVersion:
    name: str
    model: str
    number: int
    arn: str
    status: str
    created: datetime
    model_data_url: str
    image: str
    metrics_url: str | None
    metadata: dict[str, str]

    @classmethod
    def from_package(cls, desc: dict, model: str) -> ModelVersion:
        container = desc["InferenceSpecification"]["Containers"][0]
        quality = desc.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {})
        number = int(desc["ModelPackageVersion"])
        return cls(
            name=version_name(model, number),
            model=model,
            number=number,
            arn=desc["ModelPackageArn"],
            status=desc["ModelApprovalStatus"],
            created=desc["CreationTime"],
            model_data_url=container["ModelDataUrl"],
            image=container["Image"],
            metrics_url=quality.get("S3Uri"),
            metadata=dict(desc.get("CustomerMetadataProperties") or {}),
        )

    @property
    def classes(self) -> list[str]:
        return [c for c in self.metadata.get("classes", "").split(",") if c]

    @property
    def history(self) -> list[dict[str, str]]:
        return _history(self.metadata)

    def summary(self, metric: str) -> float | None:
        value = self.metadata.get(f"mean_{metric}")
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        """The API's view of a version."""
        meta = self.metadata
        return {
            "version": self.name, "model": self.model, "status": self.status, "classes": self.classes,
            "created": self.created.isoformat() if hasattr(self.created, "isoformat") else str(self.created),
            "metrics": {m: self.summary(m) for m in SUMMARY_METRICS},
            "artifact_version": meta.get("artifact_version"), "code_version": meta.get("code_version"),
            "decided_by": meta.get("decided_by"), "decided_at": meta.get("decided_at"),
            "decided_by_verified": meta.get("decided_by_verified") == "true",
            "decision_note": meta.get("decision_note"), "history": self.history,
        }  # fmt: skip


def versions(sagemaker: Any, stage: str, model: str) -> list[ModelVersion]:
    """Every version of `model`, oldest first (none when the group does not exist yet)."""
    arns = []
    try:
        pages = sagemaker.get_paginator("list_model_packages").paginate(
            ModelPackageGroupName=package_group(stage, model)
        )
        for page in pages:
            arns += [s["ModelPackageArn"] for s in page["ModelPackageSummaryList"]]
    except sagemaker.exceptions.ClientError:
        return []
    found = [
        ModelVersion.from_package(sagemaker.describe_model_package(ModelPackageName=a), model) for a in arns
    ]
    return sorted(found, key=lambda v: v.number)


def get_version(sagemaker: Any, stage: str, name: str) -> ModelVersion:
    try:
        model, number = parse_version(name)
    except ValueError as exc:
        raise VersionNotFound(str(exc)) from None
    for version in versions(sagemaker, stage, model):
        if version.number == number:
            return version
    raise VersionNotFound(f"no version {name} in {package_group(stage, model)}")


def deployment(ssm: Any, stage: str, model: str) -> dict | None:
    """The deployment record of `model`'s endpoint (rollout.py writes it), or None before the first deploy."""
    try:
        value = ssm.get_parameter(Name=deployment_parameter(stage, model))["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        return None
    return json.loads(value)


def _history(meta: dict[str, str]) -> list[dict[str, str]]:
    """Every recorded decision and re-open, oldest first (as far as the bounded history reaches)."""
    try:
        entries = json.loads(meta.get(HISTORY_KEY) or "[]")
    except ValueError:
        return []
    return entries if isinstance(entries, list) else []


def _with_history(meta: dict[str, str], entry: dict[str, str]) -> dict[str, str]:
    """`meta` with `entry` appended to its history, dropping the oldest entries until it fits a value."""
    entries = [*_history(meta), entry]
    text = json.dumps(entries, separators=(",", ":"))
    while len(text) > HISTORY_CHARS and len(entries) > 1:
        entries = entries[1:]
        text = json.dumps(entries, separators=(",", ":"))
    return {**meta, HISTORY_KEY: text}


def _entry(what: str, author: str, at: str, note: str | None) -> dict[str, str]:
    entry = {"decision": what, "by": author[-200:], "at": at}
    return {**entry, "note": note[:HISTORY_NOTE_CHARS]} if note else entry


def _refuse_if_deployed(ssm: Any, stage: str, version: ModelVersion, what: str) -> None:
    serving = {(deployment(ssm, stage, m) or {}).get("version") for m in {version.model, BASELINE}}
    if version.name in serving:  # a promoted version serves on the baseline endpoint
        raise VersionInUse(f"{version.name} is deployed: deploy another version or roll back before {what}")


def _update(sagemaker: Any, version: ModelVersion, status: str, description: str, meta: dict) -> ModelVersion:
    sagemaker.update_model_package(
        ModelPackageArn=version.arn,
        ModelApprovalStatus=status,
        ApprovalDescription=description[:1024],
        CustomerMetadataProperties=meta,
    )
    return ModelVersion.from_package(
        sagemaker.describe_model_package(ModelPackageName=version.arn), version.model
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decide(
    sagemaker: Any, ssm: Any, stage: str, name: str, status: str, note: str | None, author: str,
    author_details: dict[str, str] | None = None,
) -> ModelVersion:  # fmt: skip
    """Approve or reject `name`; the decision, its author (and `author_details`: e.g. the signed-in user's
    sub), time and note are kept with the package, and appended to its history. A deployed version cannot be
    rejected (deploy another or roll back first); a decided one keeps its decision (VersionInUse) until it is
    re-opened; the same decision again changes nothing."""
    version = get_version(sagemaker, stage, name)
    if status == REJECTED:
        _refuse_if_deployed(ssm, stage, version, "rejecting it")
    if version.status == status:
        return version  # a retried request: the first decision stands, as recorded
    if version.status != PENDING:
        by, at = version.metadata.get("decided_by", "?"), version.metadata.get("decided_at", "?")
        raise VersionInUse(f"{name} is already {version.status} (by {by} at {at}): re-open it to decide anew")
    at = _now()
    meta = {k: v for k, v in version.metadata.items() if not k.startswith("decided_by")}  # the last decider's
    meta.update({**(author_details or {}), "decision": status, "decided_by": author, "decided_at": at})
    if note:
        meta["decision_note"] = note[:256]
    else:
        meta.pop("decision_note", None)
    meta = _with_history(meta, _entry(status, author, at, note))
    return _update(sagemaker, version, status, note or status, meta)


def reopen(sagemaker: Any, ssm: Any, stage: str, name: str, why: str, author: str) -> ModelVersion:
    """Make a decided version pending again, so it can be decided anew: `why` and who are kept in its history
    (the decision it had is there too). A deployed version stays decided (VersionInUse)."""
    version = get_version(sagemaker, stage, name)
    if version.status == PENDING:
        raise VersionInUse(f"{name} is not decided: there is nothing to re-open")
    _refuse_if_deployed(ssm, stage, version, "re-opening it")
    meta = {
        k: v for k, v in version.metadata.items()
        if k not in ("decision", "decision_note") and not k.startswith("decided_")
    }  # fmt: skip
    meta = _with_history(meta, _entry(REOPENED, author, _now(), why))
    return _update(sagemaker, version, PENDING, f"re-opened: {why}", meta)
