"""`ivadas update-model`: a new version of the deployed artifact, taught from reviews. The class's confirmed
false alarms (flagged by the model, reviewed good) go into its memory bank where they are new
(model_server/training/feedback.py); the result is registered as a pending version, never deployed by itself:
approval, compare and promote decide, with the reviewed escapes as one of their checks."""

from __future__ import annotations

from pathlib import Path

from infra.lifecycle.context import Context
from infra.lifecycle.registry import register
from infra.lifecycle.reviewed import FALSE_ALARM, reviewed
from infra.lifecycle.rollout import deployment
from model_server.errors import IvadasError


def _learned(artifact: Path, class_name: str) -> set[str]:
    """Review ids the artifact's class has learned already (its card's update records)."""
    from model_server.engine.artifact import read_cards

    card = read_cards(artifact)[1].get(class_name, {})
    return {rid for update in card.get("updates", []) for rid in update.get("review_ids", [])}


def update_model(
    ctx: Context, model: str, class_name: str, out: Path, since: str | None = None, register_it: bool = True,
    threshold: str = "keep",
) -> dict:  # fmt: skip
    """Build (and register) the update; what went in and what came out."""
    from infra.local.endpoints import download
    from model_server.training.feedback import update_artifact

    record = deployment(ctx, model)
    if not record or not record.get("version"):
        raise IvadasError(f"no registered {model} version is deployed: there is nothing to update")
    source = download(record["model_data_url"], ctx.cache_dir)
    alarms, missing = reviewed(ctx, class_name, FALSE_ALARM, since)
    known = _learned(source, class_name)
    alarms = [a for a in alarms if a.review_id not in known]
    if not alarms:
        raise IvadasError(
            f"no reviewed false alarms of {class_name} that {record['version']} has not learned"
            + (f" since {since}" if since else "")
            + (f" ({missing} reviewed without an image left)" if missing else "")
        )  # fmt: skip
    report = update_artifact(
        source, class_name, [a.image for a in alarms], [a.review_id for a in alarms], out, threshold=threshold
    )
    doc = {"base_version": record["version"], "class_name": class_name, "reviews": len(alarms),
           "without_image": missing, "artifact": str(out), "update": report}  # fmt: skip
    if register_it:
        version, created = register(ctx, out, model)
        doc.update(version=version.name, status=version.status, new=created)
    return doc
