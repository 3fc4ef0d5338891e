"""The lifecycle's `ivadas` commands: register, models, approve, reject, deploy, rollback."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from infra.lifecycle import registry, rollout
from infra.lifecycle.context import context_from_args
from ivadas_contract.models import BASELINE, MODELS
from ivadas_functions import promotion
from model_server.errors import IvadasError


def register(args: argparse.Namespace) -> int:
    ctx = context_from_args(args)
    version, created = registry.register(ctx, args.artifact, args.model)
    state = "registered" if created else "already registered (same content) as"
    print(f"{state} {version.name}: {version.status}, classes {', '.join(version.classes)}")
    print(f"  package  {version.arn}")
    print(f"  artifact {version.model_data_url}")
    print(f"  metrics  {version.metrics_url}")
    return 0


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _rows(ctx, model: str) -> list[list[str]]:  # noqa: ANN001 - Context
    record = rollout.deployment(ctx, model) or {}
    rows = []
    for v in reversed(registry.versions(ctx, model)):
        decided = v.metadata.get("decided_at")
        who = v.metadata.get("decided_by", "").rsplit("/", 1)[-1]
        rows.append(
            [
                v.name,
                v.status,
                ",".join(v.classes),
                *(_fmt(v.summary(m)) for m in registry.SUMMARY_METRICS),
                "deployed" if record.get("version") == v.name else "",
                v.created.strftime("%Y-%m-%d %H:%M") if hasattr(v.created, "strftime") else str(v.created),
                f"{decided} {who}" if decided else "",
            ]
        )
    return rows


def models(args: argparse.Namespace) -> int:
    ctx = context_from_args(args)
    header = ["version", "status", "classes", "image AUROC", "pixel AUROC", "AUPRO", "recall@thr",
              "endpoint", "created", "decided (by)"]  # fmt: skip
    rows = [row for model in ([args.model] if args.model else MODELS) for row in _rows(ctx, model)]
    if args.json:
        print(json.dumps([dict(zip(header, r, strict=True)) for r in rows], indent=2))
        return 0
    _print_table(header, rows)
    if not rows:
        print(f"(no versions registered in stage {ctx.stage})")
    return 0


def approve(args: argparse.Namespace) -> int:
    v = registry.decide(context_from_args(args), args.version, registry.APPROVED, args.note)
    print(f"{v.name} approved by {v.metadata['decided_by']} at {v.metadata['decided_at']}")
    return 0


def reject(args: argparse.Namespace) -> int:
    v = registry.decide(context_from_args(args), args.version, registry.REJECTED, args.why)
    print(f"{v.name} rejected by {v.metadata['decided_by']}: {args.why}")
    return 0


def reopen(args: argparse.Namespace) -> int:
    v = registry.reopen(context_from_args(args), args.version, args.why)
    print(f"{v.name} re-opened ({v.status}): {args.why}")
    return 0


def deploy(args: argparse.Namespace) -> int:
    record = rollout.deploy(context_from_args(args), args.model, args.version, args.timeout)
    before = record["previous"][0] if record["previous"] else None
    print(
        f"{record['endpoint']} now serves {record['version']} (endpoint config {record['endpoint_config']})"
    )
    if before:
        print(f"  previous: {before['version'] or before['model_data_url']}")
    return 0


def rollback(args: argparse.Namespace) -> int:
    record = rollout.rollback(context_from_args(args), args.model, args.timeout)
    what = record["version"] or record["model_data_url"]
    print(f"{record['endpoint']} rolled back from {record['rolled_back_from']} to {what}")
    return 0


def compare(args: argparse.Namespace) -> int:
    from infra.lifecycle import compare as cmp

    ctx = context_from_args(args)
    if args.reviewed:
        return _compare_reviewed(ctx, args.class_name, args.version or [])
    if args.rescored:
        return _compare_rescored(ctx, args.class_name, args.rescored, args.json, args.limit)
    if args.data_root:
        doc = cmp.labelled(ctx, args.class_name, args.data_root, Path(args.state_dir) / "artifacts")
        b, c = doc["baseline"], doc["candidate"]
        print(f"{args.class_name} on {args.data_root} ({doc['n_test']} test images)")
        print(f"{'metric':<34}{b['version']:>16}{c['version']:>16}")
        for key in b["metrics"]:
            print(f"{key:<34}{_fmt(b['metrics'][key]):>16}{_fmt(c['metrics'][key]):>16}")
        print(f"stored {doc['stored_at']}")
        return 0
    view = cmp.agreement(cmp.shadowed_results(ctx, args.class_name, args.since, args.until))
    if args.json:
        print(json.dumps(view, indent=2, default=str))
        return 0
    if not view["images"]:
        print(f"no results of {args.class_name} with a candidate answer (is ShadowCandidate on?)")
        return 0
    print(
        f"{args.class_name}: {view['images']} images scored by both; verdicts agree on "
        f"{view['agreement']:.1%}; score correlation Pearson {view['pearson']}, Spearman {view['spearman']}; "
        f"anomalies: baseline {view['baseline_anomalies']}, candidate {view['candidate_anomalies']}"
    )
    for row in view["disagreements"][: args.limit]:
        b, c = row["baseline"], row["candidate"]
        print(f"  {row['key']}  baseline {_says(b)}  candidate {_says(c)}  ({row['inspection_id']})")
    return 0


def _compare_rescored(ctx, class_name: str, version: str, as_json: bool, limit: int) -> int:  # noqa: ANN001
    """The stored re-scoring of the class's backlog by `version` (ivadas rescore)."""
    from infra.cloud.rescore import stored, summary

    doc = stored(ctx, class_name, version)
    if doc is None:
        raise IvadasError(
            f"no re-scoring of {class_name} by {version}: ivadas rescore --version {version} ..."
        )
    if as_json:
        print(json.dumps(doc, indent=2))
        return 0
    print(summary(doc))
    for row in doc["disagreements"][:limit]:
        print(f"  {row['key']}  stored {_says(row['baseline'])}  {version} {_says(row['candidate'])}")
    return 0


def _compare_reviewed(ctx, class_name: str, names: list[str]) -> int:  # noqa: ANN001 - Context
    """Deployed versions (and any named ones) on the class's reviewed escapes."""
    from infra.lifecycle.compare import deployed_artifact
    from infra.lifecycle.registry import get_version
    from infra.lifecycle.reviewed import escape_check
    from infra.local.endpoints import download

    paths = {}
    for model in MODELS:
        try:
            name, path = deployed_artifact(ctx, model, ctx.cache_dir)
        except IvadasError:
            continue  # nothing registered is deployed there
        paths[name] = path
    for name in names:
        paths[name] = download(get_version(ctx, name).model_data_url, ctx.cache_dir)
    doc = escape_check(ctx, class_name, paths)
    production = (rollout.deployment(ctx, BASELINE) or {}).get("version")
    for name in names if production else []:  # kept for the promotion gate the API runs (it cannot score)
        key = promotion.escapes_key(ctx.stage, class_name, production, name)
        ctx.s3.put_object(Bucket=ctx.model_bucket, Key=key, Body=json.dumps(doc).encode())
    print(f"{class_name}: {doc['escapes']} reviewed escapes ({doc['without_image']} without an image left)")
    for name, v in doc["versions"].items():
        print(
            f"  {name}: catches {v['caught']} of {doc['escapes']}; "
            f"misses {len(v['forgotten'])} that another version catches"
        )
    return 0


def update_model(args: argparse.Namespace) -> int:
    from infra.lifecycle.update_model import update_model as run

    doc = run(context_from_args(args), args.model, args.class_name, Path(args.out), args.since,
              not args.no_register, args.threshold)  # fmt: skip
    print(json.dumps(doc, indent=2, default=str))
    return 0


def promote(args: argparse.Namespace) -> int:
    from infra.lifecycle.promote import promote as run

    record, checked = run(context_from_args(args), args.model, args.version, args.timeout)
    print(f"{args.version} promoted: {record['endpoint']} now serves it (previous: "
          f"{record['previous'][0]['version'] if record['previous'] else '-'})")  # fmt: skip
    for line in checked:
        print(f"  checked {line}")
    return 0


def stats(args: argparse.Namespace) -> int:
    from ivadas_functions.stats_query import stats_view

    ctx = context_from_args(args)
    tables = ctx.stack.ref("StatsTable"), ctx.stack.ref("InspectionDeadLetterQueue")
    view = stats_view(*tables, args.class_name, args.line, args.since, args.until)
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    header = ["class", "line", "model", "inspected", "anomaly rate", "rejected", "p50 ms", "p90 ms", "p99 ms",
              "candidate agreement", "candidate errors"]  # fmt: skip
    rows = [_stats_row(g) for g in view["groups"]]
    _print_table(header, rows)
    t = view["total"]
    reasons = (
        f"({', '.join(f'{k} {v}' for k, v in t['rejected_by_reason'].items())})" if t["rejected"] else ""
    )
    print(
        f"total: {t['inspected']} inspected, anomaly rate {_pct(t['anomaly_rate'])}, "
        f"{t['rejected']} rejected{' ' + reasons if reasons else ''}, DLQ depth {view['dlq_depth']}"
    )
    reviewed = [c for c in view["by_class"] if c["reviewed"]]
    if reviewed:
        print("model against reviewers (results of the period that were reviewed):")
        _print_table(
            ["class", "reviewed", "model right", "false alarms", "escapes"],
            [[c["class_name"], str(c["reviewed"]), _pct(c["review_agreement"]), str(c["false_alarms"]),
              str(c["escapes"])] for c in reviewed],
        )  # fmt: skip
    return 0


def _says(answer: dict) -> str:
    return f"{'NG' if answer['is_anomaly'] else 'OK'} {answer['normalized_score']:.3f}"


def _stats_row(g: dict) -> list[str]:
    latency = [_ms(g["latency_ms"][p]) for p in ("p50", "p90", "p99")]
    counts = [str(g["inspected"]), _pct(g["anomaly_rate"]), str(g["rejected"])]
    shadow = [_pct(g["candidate_agreement"]), str(g["candidate_errors"])]
    return [g["class_name"], g["line"], g["model"], *counts, *latency, *shadow]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else ("> max" if value == float("inf") else f"<= {value:.0f}")


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
