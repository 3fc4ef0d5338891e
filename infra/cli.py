"""The `ivadas` console command: the parsers of every subcommand and the one table that says what runs each.

Heavy imports (torch, timm, faiss) happen only once a command runs, so `ivadas --help` stays instant. Input
problems (`IvadasError`) are printed as one line on stderr with exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from infra.local.args import DEFAULT_STATE_DIR, add_local_arguments
from infra.local.users import add_password_stdin_argument, add_user_arguments
from ivadas_contract.models import BASELINE, MODELS
from model_server import __version__, defaults
from model_server.server.serve import add_serve_arguments

#: What runs each command: (module, function), imported when the command runs. `local` takes its action.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("model_server.commands", "train"),
    "train --on sagemaker": ("infra.cloud.train", "train"),
    "rescore": ("infra.cloud.rescore", "rescore"),
    "evaluate": ("model_server.commands", "evaluate"),
    "predict": ("model_server.commands", "predict"),
    "serve": ("model_server.server.serve", "run"),
    "local up": ("infra.local.client", "up"),
    "local down": ("infra.local.client", "down"),
    "local add-user": ("infra.local.users", "add_user_command"),
    "inspect": ("infra.inspect_cli", "inspect"),
    "redrive": ("infra.local.redrive", "run"),
    "results": ("infra.inspect_cli", "results"),
    "publish-ui": ("infra.publish_ui", "run"),
    "deploy-stack": ("infra.deploy.command", "run"),
    "register": ("infra.lifecycle.commands", "register"),
    "models": ("infra.lifecycle.commands", "models"),
    "approve": ("infra.lifecycle.commands", "approve"),
    "reject": ("infra.lifecycle.commands", "reject"),
    "reopen": ("infra.lifecycle.commands", "reopen"),
    "deploy": ("infra.lifecycle.commands", "deploy"),
    "rollback": ("infra.lifecycle.commands", "rollback"),
    "compare": ("infra.lifecycle.commands", "compare"),
    "promote": ("infra.lifecycle.commands", "promote"),
    "update-model": ("infra.lifecycle.commands", "update_model"),
    "stats": ("infra.lifecycle.commands", "stats"),
}


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"layers are comma-separated stage indices, got {text}") from None


def _csv(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


def _add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train PatchCore or SoftPatch on good images and write model.tar.gz")
    p.add_argument("--data-root", help="MVTec-layout folder, or 'elpv' for the packaged demo (or --data-uri)")
    p.add_argument("--classes", help="comma-separated class names (default: every class in the data root)")
    p.add_argument("--model", choices=MODELS, default=BASELINE)
    g = p.add_argument_group(
        "how a class is configured (docs/model.md): a flag left out takes the profile's or preset's value"
    )
    g.add_argument(
        "--profile",
        choices=defaults.PROFILES,
        default=defaults.PROFILE,
        help=f"'quality': {defaults.BACKBONE}, its bank grown per class; 'fast': "
        f"{defaults.FAST_BACKBONE} with a fixed {defaults.CORESET_RATIO:g} bank, for a tight latency budget "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--preset",
        choices=("official",),
        help="'official': the PatchCore paper's configuration (timm:wide_resnet50_2, layers 2,3, unfold, "
        "1024-long features, 224 px, 10%% coreset); needs --weights",
    )
    g.add_argument(
        "--search",
        action="store_true",
        help="choose backbone, input size, layer weighting and pooling per class by the synthetic-anomaly "
        "proxy (off: its ranking was no better than chance on real defects, docs/benchmarks.md)",
    )
    g.add_argument(
        "--backbone",
        metavar="NAME",
        help=f"{', '.join(defaults.BACKBONE_NAMES)}, or timm:<model> with --weights (default: the profile's)",
    )
    g.add_argument("--weights", metavar="PATH|s3://...|hub", help="a timm: backbone's weights (state dict)")
    g.add_argument("--layers", type=_layers, help=f"backbone stages (default: {_csv(defaults.LAYERS)})")
    g.add_argument(
        "--input-size",
        type=int,
        help=f"long side of the network input in pixels (default: {defaults.INPUT_SIZE}, or less where the "
        f"images are smaller: at most {defaults.MAX_UPSAMPLE:g}x their long side)",
    )
    g.add_argument(
        "--layer-weighting",
        choices=defaults.LAYER_WEIGHTINGS,
        help=f"'equal': each layer weighs alike in a distance (default: {defaults.LAYER_WEIGHTING})",
    )
    g.add_argument(
        "--aggregation",
        choices=defaults.AGGREGATIONS,
        help="'unfold': the official PatchCore embedding (needs --feature-dim) "
        f"(default: {defaults.AGGREGATION})",
    )
    g.add_argument("--feature-dim", type=int, help="patch feature length (default: all channels)")
    g.add_argument(
        "--coreset-ratio",
        type=_ratio,
        help=f"a fixed memory bank of this share of the patches (default: grown from "
        f"{defaults.CORESET_RATIO:g} to at most {defaults.MAX_CORESET_RATIO:g} per class)",
    )
    g.add_argument(
        "--config-from",
        metavar="ARTIFACT",
        help="each class's features and pooling from this trained artifact: e.g. SoftPatch on the "
        "configuration a PatchCore model was trained with, so the two compare on the same features",
    )
    p.add_argument(
        "--noise-ratio",
        type=_ratio,
        default=0.0,
        help="move this fraction of defective test images into train",
    )
    p.add_argument(
        "--weight-method", choices=defaults.WEIGHT_METHODS, default=defaults.WEIGHT_METHOD, help="SoftPatch"
    )
    p.add_argument("--lof-k", type=int, default=defaults.LOF_K, help="SoftPatch LOF neighbours")
    p.add_argument(
        "--filter-fraction",
        type=_ratio,
        default=defaults.FILTER_FRACTION,
        help="SoftPatch: most outlying patches dropped",
    )
    p.add_argument(
        "--image-score",
        choices=defaults.IMAGE_SCORES,
        default=defaults.IMAGE_SCORE,
        help="'map': the highest value of the smoothed anomaly map (flagged exactly when a region is); "
        "'patch': the highest patch score, as the official code (default: %(default)s)",
    )
    p.add_argument(
        "--score-top-fraction",
        type=_ratio,
        help="image score: mean of this fraction of the highest patch scores "
        f"(default: {defaults.SCORE_TOP_FRACTION:g}, the highest)",
    )
    p.add_argument(
        "--target-false-alarm-rate",
        type=_ratio,
        default=defaults.TARGET_FALSE_ALARM_RATE,
        help="share of good parts the threshold may flag",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-evaluate", action="store_true", help="skip the test-split metrics in the model card")
    p.add_argument(
        "--report-dir", help="also write the evaluation report here, as `ivadas evaluate` does (one pass)"
    )
    p.add_argument("--out", required=True, help="artifact path, e.g. model.tar.gz")
    _add_runtime(p)
    _add_cloud_train(p)


#: `ivadas train` options that start SageMaker training jobs rather than say how a model is trained: no job
#: takes them as hyperparameters.
CLOUD_OPTIONS = ("on", "data_uri", "instance_type", "max_parallel", "max_run_hours", "allow_partial",
                 "base_version", "role_arn", "stage", "state_dir", "model_bucket", "image_uri")  # fmt: skip


def _add_cloud_train(p: argparse.ArgumentParser) -> None:
    from infra.lifecycle.context import add_context_arguments

    g = p.add_argument_group("training in the cloud: a SageMaker training job per class (docs/operating.md)")
    g.add_argument("--on", choices=("local", "sagemaker"), default="local", help="where to train")
    g.add_argument("--data-uri", help="s3:// MVTec-layout root (instead of uploading --data-root)")
    g.add_argument("--instance-type", default="ml.m5.xlarge", help="training instance type")
    g.add_argument(
        "--max-parallel", type=int, help="jobs at once (default: the account's quota for the instance type)"
    )
    g.add_argument("--max-run-hours", type=float, default=4.0, help="a job running longer is stopped")
    g.add_argument("--allow-partial", action="store_true", help="register the classes that trained")
    g.add_argument("--base-version", help="retrain --classes into a new version of this, e.g. patchcore-3")
    g.add_argument("--role-arn", help="the training role (default: the stack's ivadas-<stage>-training)")
    add_context_arguments(g)


def train_parser() -> argparse.ArgumentParser:
    """`ivadas train`'s parser alone: a SageMaker training job reads its hyperparameters with it."""
    sub = argparse.ArgumentParser(prog="ivadas").add_subparsers()
    _add_train(sub)
    return sub.choices["train"]


def _add_engine_commands(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    p = sub.add_parser("evaluate", help="score the test split: metrics.json, report.md, figures")
    p.add_argument("--artifact", required=True)
    p.add_argument("--data-root", required=True, help="MVTec-layout folder, or 'elpv'")
    p.add_argument("--classes", help="comma-separated (default: every class in the artifact)")
    p.add_argument("--report-dir", required=True)
    _add_runtime(p)

    p = sub.add_parser("predict", help="score images; one JSON line per image")
    p.add_argument("--artifact", required=True)
    p.add_argument("--class-name", required=True)
    p.add_argument("--heatmap-dir", help="write <image>_heatmap.png and <image>_overlay.png here")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    _add_runtime(p)

    p = sub.add_parser(
        "serve", help="run the model server (SageMaker container contract) on one or more artifacts"
    )
    add_serve_arguments(p)


def _add_stack_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("local", help="the whole stack on this machine: moto, model server, poller, API shim")
    p.add_argument("action", choices=("up", "down", "add-user"))
    add_local_arguments(p)
    add_user_arguments(p)

    p = sub.add_parser("inspect", help="put a folder of images into the local inbox and wait for the results")
    p.add_argument("folder", nargs="?", help="folder of images (or use --data-root)")
    p.add_argument("--data-root", help="upload the test split of --class-name from this data set (or elpv)")
    p.add_argument("--class-name", required=True)
    p.add_argument("--line", default="line1", help="production line (first part of the inbox key)")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for results after the uploads")
    p.add_argument("--rate", type=float, help="images uploaded a second, as cameras do (default: at once)")
    p.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))

    p = sub.add_parser("redrive", help="local dead-letter queue back to the inspection queue, saying why")
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for the redriven images' results")
    p.add_argument("--json", action="store_true")
    p.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))

    p = sub.add_parser("publish-ui", help="upload ui/ and its config.json to the deployed UI bucket")
    p.add_argument("--stack-name", help="read bucket, API URL, user pool and client from the stack's outputs")
    p.add_argument("--bucket")
    p.add_argument("--api-url")
    p.add_argument("--user-pool-id")
    p.add_argument("--user-pool-client-id")

    from infra.deploy.command import add_arguments as add_deploy_arguments

    p = sub.add_parser(
        "deploy-stack", help="deploy a stage to AWS end to end (make deploy); --dry-run shows it"
    )
    add_deploy_arguments(p)

    p = sub.add_parser("results", help="query inspection results of the local stack (as a signed-in user)")
    p.add_argument("--user", help="who signs in (default $IVADAS_USER; password $IVADAS_PASSWORD or asked)")
    add_password_stdin_argument(p)
    p.add_argument("--class-name")
    p.add_argument("--line")
    p.add_argument("--anomalous", action="store_true")
    p.add_argument("--reviewed", choices=("true", "false"))
    p.add_argument("--since", help="ISO time, e.g. 2026-11-27T00:00:00Z")
    p.add_argument("--until", help="ISO time")
    p.add_argument("--next-token")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))


def _add_lifecycle_commands(sub: argparse._SubParsersAction) -> None:
    from infra.lifecycle.context import add_context_arguments

    p = sub.add_parser("register", help="register an artifact as a model version (pending approval)")
    p.add_argument("--artifact", required=True)
    p.add_argument("--model", choices=MODELS, required=True)
    add_context_arguments(p)

    p = sub.add_parser("models", help="the registry: versions, status, metrics, what is deployed")
    p.add_argument("--model", choices=MODELS)
    p.add_argument("--json", action="store_true")
    add_context_arguments(p)

    p = sub.add_parser("approve", help="approve a version for deployment, e.g. patchcore-3")
    p.add_argument("version")
    p.add_argument("--note", help="why (kept with the decision)")
    add_context_arguments(p)

    p = sub.add_parser("reject", help="reject a version")
    p.add_argument("version")
    p.add_argument("--why", required=True)
    add_context_arguments(p)

    p = sub.add_parser("reopen", help="make a decided version pending again, so it can be decided anew")
    p.add_argument("version")
    p.add_argument("--why", required=True, help="why the decision is re-opened (kept in its history)")
    add_context_arguments(p)

    for name, text in (("deploy", "point a model's endpoint at an approved version"),
                       ("rollback", "put a model's endpoint back on its previous deployment")):  # fmt: skip
        p = sub.add_parser(name, help=text)
        p.add_argument("--model", choices=MODELS, required=True)
        if name == "deploy":
            p.add_argument("--version", required=True, help="e.g. patchcore-3")
        p.add_argument("--timeout", type=float, default=1800, help="seconds to wait for InService")
        add_context_arguments(p)


def _add_monitoring_commands(sub: argparse._SubParsersAction) -> None:
    from infra.lifecycle.context import add_context_arguments

    p = sub.add_parser("compare", help="baseline against candidate: stored shadow results, or a labelled set")
    p.add_argument("--class-name", required=True)
    p.add_argument("--since", help="ISO time")
    p.add_argument("--until", help="ISO time")
    p.add_argument(
        "--data-root", help="labelled test folder (MVTec layout, or 'elpv'): both deployed versions"
    )
    p.add_argument(
        "--reviewed", action="store_true", help="the deployed versions on the class's reviewed escapes"
    )
    p.add_argument("--version", action="append", help="with --reviewed: a registered version to score too")
    p.add_argument(
        "--rescored", metavar="VERSION", help="the stored backlog re-scoring by VERSION (ivadas rescore)"
    )
    p.add_argument("--limit", type=int, default=20, help="disagreements listed")
    p.add_argument("--json", action="store_true")
    add_context_arguments(p)

    p = sub.add_parser("update-model", help="teach the deployed version its reviewed false alarms (pending)")
    p.add_argument("--model", choices=MODELS, required=True)
    p.add_argument("--class-name", required=True)
    p.add_argument("--since", help="ISO time: reviews of results from then on")
    p.add_argument("--out", required=True, help="where the updated artifact is written")
    p.add_argument("--no-register", action="store_true", help="write the artifact only")
    p.add_argument(
        "--threshold", choices=("keep", "pooled"), default="keep",
        help="keep the training threshold (default), or refit it on training and out-of-fold review scores",
    )  # fmt: skip
    add_context_arguments(p)

    p = sub.add_parser("promote", help="make an approved candidate version the production model, if no worse")
    p.add_argument("--model", choices=MODELS, required=True)
    p.add_argument("--version", required=True, help="e.g. softpatch-2")
    p.add_argument("--timeout", type=float, default=1800)
    add_context_arguments(p)

    p = sub.add_parser("stats", help="images inspected, anomaly rate, rejects, latency, agreement, DLQ depth")
    p.add_argument("--class-name")
    p.add_argument("--line")
    p.add_argument("--since", help="ISO time")
    p.add_argument("--until", help="ISO time")
    p.add_argument("--json", action="store_true")
    add_context_arguments(p)


def _add_rescore(sub: argparse._SubParsersAction) -> None:
    from infra.lifecycle.context import add_context_arguments

    p = sub.add_parser("rescore", help="score stored results' images again with a version (Batch Transform)")
    p.add_argument("--version", required=True, help="the registered version to score with, e.g. patchcore-4")
    p.add_argument("--since", required=True, help="ISO time: results from then on")
    p.add_argument("--until", help="ISO time")
    p.add_argument("--class-name", help="one class (default: every class the version serves)")
    p.add_argument("--instance-type", default="ml.m5.xlarge", help="batch transform instance type")
    p.add_argument("--concurrency", type=int, default=4, help="images in flight per transform job")
    p.add_argument("--role-arn", help="the transform role (default: the stack's ivadas-<stage>-transform)")
    p.add_argument("--limit", type=int, default=20, help="changed verdicts listed per class")
    p.add_argument("--json", action="store_true")
    add_context_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ivadas", description="Industrial Visual Anomaly Detection as a Service"
    )
    parser.add_argument("--version", action="version", version=f"ivadas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_engine_commands(sub)
    _add_stack_commands(sub)
    _add_lifecycle_commands(sub)
    _add_monitoring_commands(sub)
    _add_rescore(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    name = f"local {args.action}" if args.command == "local" else args.command
    if getattr(args, "on", "local") != "local":
        name = f"{name} --on {args.on}"
    module, function = COMMANDS[name]
    run = getattr(importlib.import_module(module), function)
    from infra import cli_errors
    from model_server.errors import IvadasError

    as_json = bool(getattr(args, "json", False))
    try:
        return run(args)
    except IvadasError as exc:
        return cli_errors.report(args.command, exc, as_json)
    except (Exception, SystemExit) as exc:  # with --json, a script still gets the one error document
        if not as_json or (isinstance(exc, SystemExit) and not isinstance(exc.code, str)):
            raise
        return cli_errors.report(args.command, exc, as_json)
    except KeyboardInterrupt:
        print(f"ivadas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
