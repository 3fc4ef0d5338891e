"""What reviewers said, as data for the model: confirmed false alarms (flagged, reviewed good) that teach a
class its good variation (`ivadas update-model`), and escapes (passed, reviewed defect) kept as a labelled
set that `ivadas compare --reviewed` and `ivadas promote` score every new version on, so one that forgets
them is refused. Images come from the copy the review made (results bucket, `reviewed/`), since the inbox
expires them; the inbox object is the fallback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from infra.lifecycle.context import Context
from ivadas_functions.promotion import ESCAPE, FALSE_ALARM, reviewed_items
from model_server.errors import IvadasError

__all__ = ["ESCAPE", "FALSE_ALARM", "NoResults", "Reviewed", "escape_check", "reviewed"]


class NoResults(IvadasError):
    """The stage has no results table to read reviews from."""


@dataclass
class Reviewed:
    item: dict
    image: bytes

    @property
    def review_id(self) -> str:
        return self.item["review"]["review_id"]


def _items(ctx: Context, class_name: str, kind: str, since: str | None) -> Iterator[dict]:
    import boto3

    table = boto3.resource("dynamodb").Table(ctx.stack.ref("ResultsTable"))
    yield from reviewed_items(table, class_name, kind, since)


def _image(ctx: Context, item: dict) -> bytes | None:
    copy = (item.get("review") or {}).get("image_copy")
    places = [(ctx.stack.ref("ResultsBucket"), copy)] if copy else []
    places.append((item["bucket"], item["key"]))
    for bucket, key in places:
        try:
            return ctx.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ctx.s3.exceptions.NoSuchKey, ctx.s3.exceptions.ClientError):
            continue
    return None


def reviewed(
    ctx: Context, class_name: str, kind: str, since: str | None = None
) -> tuple[list[Reviewed], int]:
    """(the reviewed results of a kind with their images, how many had no image left). A stage with no
    results table (a registry alone) has no reviews: NoResults says so rather than passing in silence."""
    found, missing = [], 0
    try:
        items = list(_items(ctx, class_name, kind, since))
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        raise NoResults(f"stage {ctx.stage} has no results table: no reviews to read") from None
    for item in items:
        image = _image(ctx, item)
        if image is None:
            missing += 1
        else:
            found.append(Reviewed(item, image))
    return found, missing


def escape_check(ctx: Context, class_name: str, versions: dict[str, Path | str]) -> dict:
    """Every version's verdicts on the class's reviewed escapes: {version: {"caught": n, "missed": [keys]}},
    and the images each version misses that another one catches ("forgotten"). A version is an artifact path
    or its s3:// URL, downloaded only when there are escapes to score."""
    from infra.local.endpoints import download
    from model_server.engine.predictor import Predictor

    escapes, missing = reviewed(ctx, class_name, ESCAPE)
    doc: dict = {"class_name": class_name, "escapes": len(escapes), "without_image": missing, "versions": {}}
    if not escapes:
        return doc
    caught: dict[str, set[str]] = {}
    for name, where in versions.items():
        path = download(where, ctx.cache_dir) if str(where).startswith("s3://") else Path(where)
        predictor = Predictor(path)
        if class_name not in predictor.artifact.classes:
            raise IvadasError(f"{name} does not serve class {class_name}")
        found = set()
        for e in escapes:
            if predictor.predict(class_name, [e.image])[0].is_anomaly:
                found.add(e.item["key"])
        caught[name] = found
        doc["versions"][name] = {
            "caught": len(found),
            "missed": sorted(e.item["key"] for e in escapes if e.item["key"] not in found),
        }
    everyone = set().union(*caught.values())
    for name, found in caught.items():
        doc["versions"][name]["forgotten"] = sorted(everyone - found)
    return doc
