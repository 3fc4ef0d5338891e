"""Sizing and cost of a deployment, worked out from bench-server's record (one model server on 2 cores, as an
ml.m5.large has 2 vCPUs) and published prices: the section "Sizing" of docs/deploying.md is rendered from it,
and template.yaml's scaling defaults are held to it (tests/unit/test_docs.py)."""

from __future__ import annotations

import math

from tests.benchmarks.tables import Table

#: ml.m5.large real-time inference, us-east-1: half the ml.m5.xlarge price of $0.269/h (m5 sizes are priced
#: linearly). Lambda: per million requests and per GB-second (AWS, "How AWS Pricing Works").
INSTANCE_DOLLARS_PER_HOUR = 0.134
LAMBDA_DOLLARS_PER_MILLION_REQUESTS = 0.20
LAMBDA_DOLLARS_PER_GB_SECOND = 0.0000166667
WORKER_GB = 0.5
WORKER_BATCH = 10
#: S3 and DynamoDB calls of one inspection in the worker, beside the endpoint's latency.
WORKER_AWS_MS = 50.0
#: Target tracking starts a new instance before the others saturate: each is run at this share of its
#: measured throughput.
UTILISATION = 0.75
#: Requests in flight per instance the worker keeps (bench-server's concurrency 4 level).
IN_FLIGHT_PER_INSTANCE = 4
#: The example load: 100 cameras at one image per second each.
EXAMPLE_IMAGES_PER_SECOND = 100.0


def _level(server: dict, concurrency: int) -> dict:
    return next(r for r in server["server"] if r["concurrency"] == concurrency)


def sizing(server: dict) -> dict:
    """The scaling settings and cost per million images that bench-server's figures give."""
    c16, c4 = _level(server, 16), _level(server, IN_FLIGHT_PER_INSTANCE)
    per_instance = UTILISATION * c16["throughput_img_s"]
    instances = math.ceil(EXAMPLE_IMAGES_PER_SECOND / per_instance)
    instance_hours = 1e6 / per_instance / 3600
    worker_seconds = (c4["p50_ms"] + WORKER_AWS_MS) / 1000
    worker_dollars = 1e6 * WORKER_GB * worker_seconds * LAMBDA_DOLLARS_PER_GB_SECOND
    request_dollars = 1e6 / WORKER_BATCH * LAMBDA_DOLLARS_PER_MILLION_REQUESTS / 1e6
    instance_dollars = instance_hours * INSTANCE_DOLLARS_PER_HOUR
    return {
        "throughput_c16": c16["throughput_img_s"],
        "throughput_c4": c4["throughput_img_s"],
        "latency_c4_ms": c4["p50_ms"],
        "per_instance": round(per_instance, 2),
        "invocations_per_instance_target": int(per_instance * 60 // 10 * 10),
        "instances_for_example": instances,
        "worker_concurrency_for_example": IN_FLIGHT_PER_INSTANCE * instances,
        "instance_dollars_per_million": round(instance_dollars, 2),
        "worker_dollars_per_million": round(worker_dollars + request_dollars, 2),
        "dollars_per_million": round(instance_dollars + worker_dollars + request_dollars, 2),
        "dollars_per_million_with_shadow": round(2 * instance_dollars + worker_dollars + request_dollars, 2),
        "floor_dollars_per_month": round(INSTANCE_DOLLARS_PER_HOUR * 24 * 30, 0),
    }


def sizing_tables(server: dict) -> list[Table]:
    s = sizing(server)
    example = f"{EXAMPLE_IMAGES_PER_SECOND:g} images/s (100 cameras at one image per second)"
    return [
        Table(
            "Sizing one endpoint",
            ["setting", "value", "from"],
            [
                ["one instance, measured", f"{s['throughput_c16']} images/s", "bench-server, concurrency 16"],
                [
                    "one instance, planned",
                    f"{s['per_instance']} images/s",
                    f"{UTILISATION:.0%} of it: target tracking starts an instance before the others saturate",
                ],
                [
                    "`InvocationsPerInstanceTarget`",
                    s["invocations_per_instance_target"],
                    "per minute: the planned rate x 60, rounded down to 10",
                ],
                ["`EndpointMaxInstances` for " + example, s["instances_for_example"], "load / planned rate"],
                [
                    "`WorkerMaxConcurrency` for the same",
                    s["worker_concurrency_for_example"],
                    f"{IN_FLIGHT_PER_INSTANCE} requests in flight per instance ({s['throughput_c4']} "
                    "images/s "
                    "at "
                    "concurrency 4): more only queue at the endpoint",
                ],
            ],
        ),
        Table(
            "Cost per million images",
            ["part", "dollars", "how"],
            [
                [
                    "endpoint instances",
                    s["instance_dollars_per_million"],
                    f"1,000,000 / {s['per_instance']} images/s in instance-hours "
                    f"x ${INSTANCE_DOLLARS_PER_HOUR}",
                ],
                [
                    "worker Lambda",
                    s["worker_dollars_per_million"],
                    f"{WORKER_GB:g} GB for the endpoint's p50 at concurrency 4 ({s['latency_c4_ms']} ms) + "
                    f"{WORKER_AWS_MS:g} ms of S3 and DynamoDB, plus one request per batch of {WORKER_BATCH}",
                ],
                ["total", s["dollars_per_million"], "without shadow scoring"],
                [
                    "total with shadow",
                    s["dollars_per_million_with_shadow"],
                    "the candidate's endpoint costs as much",
                ],
            ],
            notes=[
                f"Only while traffic keeps the instances at {UTILISATION:.0%}: the floor of one instance per "
                f"endpoint costs ${s['floor_dollars_per_month']:g} a month whatever the traffic.",
                f"Prices: ml.m5.large ${INSTANCE_DOLLARS_PER_HOUR}/h (us-east-1, half the ml.m5.xlarge's "
                f"$0.269/h); Lambda ${LAMBDA_DOLLARS_PER_GB_SECOND:.10f} per GB-second and "
                f"${LAMBDA_DOLLARS_PER_MILLION_REQUESTS:.2f} per million requests. S3, DynamoDB and SQS "
                "requests are left out.",
            ],
        ),
    ]
