"""The promotion gate, one implementation for `ivadas promote` (infra.lifecycle.promote) and the Deployments
API: a whole multi-class version (one artifact serves every class) becomes the production model, on the
baseline's endpoint, only when it is approved, serves every class production serves, and no class is worse
than production by more than `TOLERANCE` on any compared metric, neither on the model cards nor on the
labelled comparisons stored by `ivadas compare --data-root`, and it catches every reviewed escape production
catches. A refusal names the class, metric and source.

Scoring the reviewed escapes needs the model (torch), which the Lambda package never carries: the check is
passed in. The CLI scores them and stores the verdict (`escapes_key`); the API reads that stored verdict
(`StoredEscapes`) and refuses while escapes exist that no stored check of these two versions covers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError

from ivadas_contract.models import BASELINE, CANDIDATE
from ivadas_functions.deployments import DeploymentConflict, NotApproved, WrongModel, plan_deploy
from ivadas_functions.registry import APPROVED, ModelVersion, deployment, get_version
from ivadas_functions.results_query import ResultFilter, every_item, plan

TOLERANCE = 0.005
NO_WORSE = f"no metric worse by more than {TOLERANCE}"
#: Metrics compared per class (model cards, labelled comparisons, promotion).
METRICS = ("image_auroc", "pixel_auroc", "aupro", "recall_at_threshold")
FALSE_ALARM, ESCAPE = "false_alarm", "escape"


class EscapeCheck(Protocol):
    """How the gate learns whether a candidate misses a reviewed escape production catches."""

    def check(self, name: str, candidate: ModelVersion, production: ModelVersion) -> tuple[list[str], str]:
        """(refusals, what was checked) for class `name`'s reviewed escapes."""


class GateRefused(DeploymentConflict):
    """The candidate is worse than production somewhere (409); `refusals` names each class, metric, source."""

    def __init__(self, message: str, refusals: list[str]) -> None:
        super().__init__(message)
        self.refusals = refusals


class NoProduction(DeploymentConflict):
    """Production serves no registered version to compare the candidate with."""


def comparison_key(stage: str, class_name: str, baseline: str, candidate: str) -> str:
    """Where `ivadas compare --data-root` keeps a labelled comparison of two versions on a class."""
    return f"{stage}/comparisons/{class_name}/{baseline}--{candidate}.json"


def escapes_key(stage: str, class_name: str, production: str, candidate: str) -> str:
    """Where the CLI's gate keeps its scoring of a class's reviewed escapes by two versions."""
    return f"{stage}/comparisons/escapes/{class_name}/{production}--{candidate}.json"


def rescore_key(stage: str, class_name: str, version: str) -> str:
    """Where the latest re-scoring of `class_name`'s backlog by `version` is kept (`ivadas rescore`)."""
    return f"{stage}/comparisons/rescore/{class_name}/{version}.json"


def read_json(s3: Any, bucket: str, key: str) -> dict | None:
    """A JSON document of the model bucket, None when there is none (S3 says so only to a caller that may
    list the bucket: AccessDenied otherwise)."""
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
            return None
        raise


def rescore_summary(doc: dict) -> str:
    """One line of a stored re-scoring, for `compare` and `promote`."""
    changed, anomalies = len(doc["disagreements"]), (doc["baseline_anomalies"], doc["candidate_anomalies"])
    return (
        f"{doc['class_name']}: {doc['images']} stored results since {doc['since']} re-scored with "
        f"{doc['version']}: verdicts agree on {doc['agreement']:.1%}, {changed} would change; score "
        f"correlation Pearson {doc['pearson']}, Spearman {doc['spearman']}; anomalies {anomalies[0]} stored, "
        f"{anomalies[1]} re-scored"
    )


def quality(s3: Any, version: ModelVersion) -> dict[str, dict]:
    """Per-class metrics of `version`'s model cards (its registered quality document)."""
    bucket, key = (version.metrics_url or "").removeprefix("s3://").split("/", 1)
    doc = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return {name: c["metrics"] for name, c in doc["classes"].items()}


def worse(production: dict, candidate: dict) -> list[str]:
    """The metrics on which `candidate` falls more than TOLERANCE below `production` (both known)."""
    return [
        f"{m} {candidate[m]:.4f} < {production[m]:.4f} - {TOLERANCE}"
        for m in METRICS
        if production.get(m) is not None
        and candidate.get(m) is not None
        and candidate[m] < production[m] - TOLERANCE
    ]


def check(
    s3: Any, bucket: str, stage: str, candidate: ModelVersion, production: ModelVersion, escapes: EscapeCheck
) -> tuple[list[str], list[str]]:
    """(refusals, what was checked) of `candidate` against `production`."""
    refusals, checked = [], []
    cards, prod_cards = quality(s3, candidate), quality(s3, production)
    for name in sorted(prod_cards):
        if name not in cards:
            refusals.append(f"class {name}: served by {production.name}, missing from {candidate.name}")
            continue
        refusals += [f"class {name}: {w} (model cards)" for w in worse(prod_cards[name], cards[name])]
        checked.append(f"{name}: model cards: {NO_WORSE}")
        stored = read_json(s3, bucket, comparison_key(stage, name, production.name, candidate.name))
        if stored:
            base, cand = stored["baseline"]["metrics"], stored["candidate"]["metrics"]
            refusals += [
                f"class {name}: {w} (labelled comparison on {stored['data_root']})" for w in worse(base, cand)
            ]
            checked.append(f"{name}: labelled comparison on {stored['data_root']}: {NO_WORSE}")
        escaped, what = escapes.check(name, candidate, production)
        refusals += escaped
        checked.append(what)
        rescored = read_json(s3, bucket, rescore_key(stage, name, candidate.name))
        if (
            rescored
        ):  # what changes on the real backlog: for the record, not a gate (nothing says who is right)
            checked.append(rescore_summary(rescored))
    return refusals, checked


def escape_refusals(
    doc: dict, name: str, candidate: ModelVersion, production: ModelVersion
) -> tuple[list, str]:
    """Refusals from a scoring of class `name`'s reviewed escapes (infra.lifecycle.reviewed.escape_check)."""
    forgotten = doc["versions"].get(candidate.name, {}).get("forgotten", [])
    refusals = [f"class {name}: misses {len(forgotten)} reviewed escape(s) {production.name} catches: "
                + ", ".join(forgotten[:5])] if forgotten else []  # fmt: skip
    return refusals, f"{name}: {doc['escapes']} reviewed escapes, none caught by production and missed"


def reviewed_items(table: Any, class_name: str, kind: str, since: str | None = None) -> Iterator[dict]:
    """The class's results reviewed as `kind`: false alarms (flagged, reviewed good) or escapes (passed,
    reviewed defect), from the class's index (one partition: no months to walk, whatever the retention)."""
    flagged = kind == FALSE_ALARM
    p = plan(ResultFilter(class_name=class_name, anomalous=flagged, since=since), retention_days=0)
    p.filter = Attr("review.verdict").eq("good" if flagged else "defect")
    if not flagged:
        p.filter &= Attr("is_anomaly").eq(False)
    yield from every_item(table, p)


@dataclass
class StoredEscapes:
    """The escape check of the API (an EscapeCheck): the stored scoring of these two versions, when it
    covers every reviewed escape of the class; else a refusal saying how to score them (the Lambda cannot)."""

    s3: Any
    bucket: str
    stage: str
    table: Any  # the results table

    def check(self, name: str, candidate: ModelVersion, production: ModelVersion) -> tuple[list, str]:
        """(refusals, what was checked) from the stored scoring."""
        count = sum(1 for _ in reviewed_items(self.table, name, ESCAPE))
        if not count:
            return [], f"{name}: no reviewed escapes"
        doc = read_json(self.s3, self.bucket, escapes_key(self.stage, name, production.name, candidate.name))
        if doc is None or doc["escapes"] < count:
            scored = 0 if doc is None else doc["escapes"]
            how = f"ivadas compare --reviewed --class-name {name} --version {candidate.name}"
            refusal = f"class {name}: {count} reviewed escape(s), {scored} scored by both versions ({how})"
            return [refusal], f"{name}: {count} reviewed escapes, not all scored"
        return escape_refusals(doc, name, candidate, production)


def verdict(
    sagemaker: Any, ssm: Any, s3: Any, bucket: str, stage: str, name: str, escapes: EscapeCheck,
    model: str = CANDIDATE,
) -> dict:  # fmt: skip
    """The gate's verdict on promoting `name` (a `model` version) over what production serves, without acting:
    {candidate, production, refusals, checked, promotable}. Refuses outright (NotApproved, WrongModel,
    NoProduction) what cannot be compared at all."""
    candidate = get_version(sagemaker, stage, name)
    if candidate.model != model:
        raise WrongModel(f"{name} is a {candidate.model} version; --model is {model}")
    if candidate.status != APPROVED:
        raise NotApproved(f"{name} is {candidate.status}: only an approved version can be promoted")
    record = deployment(ssm, stage, BASELINE)
    if not record or not record.get("version"):
        raise NoProduction(
            "production serves no registered version: deploy one (ivadas deploy) to compare with"
        )
    production = get_version(sagemaker, stage, record["version"])
    refusals, checked = check(s3, bucket, stage, candidate, production, escapes)
    return {"candidate": name, "production": production.name, "endpoint_model": BASELINE,
            "refusals": refusals, "checked": checked, "promotable": not refusals}  # fmt: skip


def plan_promotion(
    sagemaker: Any, ssm: Any, s3: Any, bucket: str, stage: str, name: str, escapes: EscapeCheck,
    model: str = CANDIDATE,
) -> tuple[tuple[dict, list[dict]], dict]:  # fmt: skip
    """(the planned deployment of `name` on the baseline's endpoint, the gate's verdict); GateRefused when the
    gate refuses."""
    seen = verdict(sagemaker, ssm, s3, bucket, stage, name, escapes, model)
    if seen["refusals"]:
        message = f"{name} not promoted over {seen['production']}: " + "; ".join(seen["refusals"])
        raise GateRefused(message, seen["refusals"])
    return plan_deploy(sagemaker, ssm, stage, BASELINE, name, promoted=True), seen
