"""Baseline against candidate: from the results the stack stored in shadow mode (verdict agreement, score
correlation, the images where they disagree), and on a labelled test folder (both deployed versions' metrics
side by side, kept in the model bucket for `ivadas promote`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from boto3.dynamodb.conditions import Key
from scipy.stats import pearsonr, spearmanr

from infra.lifecycle.context import Context
from infra.lifecycle.rollout import deployment
from ivadas_contract.models import BASELINE, CANDIDATE
from ivadas_contract.results_table import BY_CLASS_INDEX, SORT_KEY, from_dynamo
from ivadas_functions.promotion import METRICS, comparison_key
from model_server.errors import IvadasError

__all__ = ["METRICS", "agreement", "comparison_key", "labelled", "shadowed_results"]


def shadowed_results(ctx: Context, class_name: str, since: str | None, until: str | None) -> list[dict]:
    """Stored results of `class_name` that carry a candidate answer, oldest first."""
    import boto3

    table = boto3.resource("dynamodb").Table(ctx.stack.ref("ResultsTable"))
    condition = Key("class_name").eq(class_name)
    if since or until:
        condition &= Key(SORT_KEY).between(since or "0", until or "9")
    kwargs: dict = {"IndexName": BY_CLASS_INDEX, "KeyConditionExpression": condition}
    items: list[dict] = []
    while True:
        resp = table.query(**kwargs)
        items += [from_dynamo(i) for i in resp.get("Items", []) if "shadow_agrees" in i]
        if "LastEvaluatedKey" not in resp:
            return items
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def _corr(fn, a: list[float], b: list[float]) -> float | None:  # noqa: ANN001 - a scipy statistic
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    value = float(fn(a, b)[0])
    return None if math.isnan(value) else round(value, 4)


def _verdict(answer: dict) -> dict:
    return {k: answer.get(k) for k in ("is_anomaly", "normalized_score", "model_version")}


def agreement(items: list[dict]) -> dict:
    """Verdict agreement, score correlation (normalised scores: 0.5 is each model's threshold) and the
    disagreements, the ones nearest a flip last."""
    base = [float(i["normalized_score"]) for i in items]
    cand = [float(i["shadow"]["normalized_score"]) for i in items]
    disagree = [i for i in items if not i["shadow_agrees"]]
    disagree.sort(key=lambda i: -abs(float(i["normalized_score"]) - float(i["shadow"]["normalized_score"])))
    rows = [
        {
            "inspection_id": i["inspection_id"],
            "key": i["key"],
            "created_at": i["created_at"],
            "baseline": _verdict(i),
            "candidate": _verdict(i["shadow"]),
        }
        for i in disagree
    ]
    return {
        "images": len(items),
        "agreement": round(1 - len(disagree) / len(items), 4) if items else None,
        "pearson": _corr(pearsonr, base, cand),
        "spearman": _corr(spearmanr, base, cand),
        "baseline_anomalies": sum(bool(i["is_anomaly"]) for i in items),
        "candidate_anomalies": sum(bool(i["shadow"]["is_anomaly"]) for i in items),
        "disagreements": rows,
    }


def deployed_artifact(ctx: Context, model: str, cache: Path) -> tuple[str, Path]:
    from infra.local.endpoints import download

    record = deployment(ctx, model)
    if not record or not record.get("version"):
        raise IvadasError(f"no registered {model} version is deployed: ivadas deploy --model {model} ...")
    return record["version"], download(record["model_data_url"], cache)


def labelled(ctx: Context, class_name: str, data_root: str, cache: Path) -> dict:
    """Both deployed versions evaluated on the labelled test split of `class_name`; stored for promotion."""
    from infra.lifecycle.registry import class_metrics
    from model_server.engine.artifact import load_artifact
    from model_server.engine.predictor import Predictor
    from model_server.training.datasets import load_split
    from model_server.training.evaluation import evaluate_class

    split = load_split(data_root, class_name)
    doc: dict = {"class_name": class_name, "data_root": str(data_root), "n_test": len(split.test)}
    for role, model in (("baseline", BASELINE), ("candidate", CANDIDATE)):
        version, path = deployed_artifact(ctx, model, cache)
        artifact = load_artifact(path)
        class_model = artifact.get(class_name)
        extractor = Predictor(artifact).extractor(class_model.config.features)
        ev = evaluate_class(class_model, extractor, split, progress=False)
        card = {"metrics": ev.metrics, "threshold": class_model.card.get("threshold")}
        doc[role] = {"version": version, "metrics": class_metrics(card)}
    key = comparison_key(ctx.stage, class_name, doc["baseline"]["version"], doc["candidate"]["version"])
    body = json.dumps(doc, indent=2).encode()
    ctx.s3.put_object(Bucket=ctx.model_bucket, Key=key, Body=body, ContentType="application/json")
    doc["stored_at"] = f"s3://{ctx.model_bucket}/{key}"
    return doc
