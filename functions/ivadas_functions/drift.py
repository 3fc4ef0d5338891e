"""Drift Lambda (hourly): a class whose anomaly rate over the last full hour lies far from its rate over the
days before (a camera moved, the lighting changed, a bad batch) is reported: metric `AnomalyRateDrift` per
class (the distance in standard errors) and `ClassesDrifting` (how many), which the drift alarm watches.
Read from the stats table's counters of the production model, every line summed."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext

from ivadas_contract.stats import drift_z, per_class
from ivadas_functions.aws import Settings
from ivadas_functions.stats_query import read_slots

logger = Logger()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "IVADAS"))
settings = Settings.from_env()


def drifting(now: datetime, sigma: float, min_images: int, reference_hours: int) -> dict[str, dict]:
    """Per class with enough images in both windows: the hour's and the reference's rate and the distance."""
    hour = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H")
    since = (now - timedelta(hours=reference_hours + 1)).strftime("%Y-%m-%dT%H")
    items = read_slots(settings.stats_table, None, since, hour)
    out = {}
    for class_name, hours in per_class(items, settings.default_model).items():
        last = hours.get(hour, {"inspected": 0, "anomalies": 0})
        ref = [c for h, c in hours.items() if h != hour]
        ref_n, ref_k = sum(c["inspected"] for c in ref), sum(c["anomalies"] for c in ref)
        if last["inspected"] < min_images or ref_n < min_images:
            continue
        z = drift_z(last["anomalies"], last["inspected"], ref_k, ref_n)
        out[class_name] = {
            "hour": hour,
            "rate": last["anomalies"] / last["inspected"],
            "reference_rate": ref_k / ref_n,
            "images": last["inspected"],
            "z": round(z, 2),
            "drifting": abs(z) > sigma,
        }
    return out


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict:
    found = drifting(
        datetime.now(UTC),
        float(os.environ.get("DRIFT_SIGMA", "4")),
        int(os.environ.get("DRIFT_MIN_IMAGES", "50")),
        int(os.environ.get("DRIFT_REFERENCE_HOURS", "168")),
    )
    for class_name, d in found.items():
        with single_metric(
            name="AnomalyRateDrift", unit=MetricUnit.Count, value=d["z"], namespace=metrics.namespace
        ) as m:
            m.add_dimension(name="class_name", value=class_name)
        if d["drifting"]:
            logger.warning("anomaly rate drift", extra={"class_name": class_name, **d})
    metrics.add_metric(
        name="ClassesDrifting", unit=MetricUnit.Count, value=sum(d["drifting"] for d in found.values())
    )
    return {"classes": found}
