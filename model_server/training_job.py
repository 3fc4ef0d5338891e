"""`train`: the model server's image answering SageMaker's training contract (`docker run IMAGE train`).

SageMaker lays out /opt/ml before it starts the container and reads it back afterwards:

    input/config/hyperparameters.json  `ivadas train`'s options: {"input-size": "256", "profile": "fast"}
    input/data/train/                  the channel: an MVTec-layout root (class folders) or one class's folder
    input/data/config/                 optional: the artifact `config-from` names (one file, any name)
    model/                             the artifact, unpacked: SageMaker tars it into model.tar.gz, which is
                                       then itself a loadable artifact
    output/failure                     why the job failed: DescribeTrainingJob's FailureReason

The options go through `ivadas train`'s own parser, so a job accepts exactly what the command does, and a
metric line per class and metric (`METRIC_DEFINITIONS`) lets SageMaker put them in CloudWatch.
`IVADAS_ML_ROOT` moves /opt/ml (the local stack's runner and the tests run jobs in a temporary folder).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tarfile
import tempfile
import traceback
from pathlib import Path

ML_ROOT_ENV = "IVADAS_ML_ROOT"
CHANNEL, CONFIG_CHANNEL = "train", "config"
#: Options the job sets itself: where the data is and where the artifact goes.
SET_BY_JOB = ("data-root", "out", "report-dir")
#: SageMaker keeps at most this much of output/failure as the job's FailureReason.
FAILURE_CHARS = 1024
METRIC_PREFIX = "ivadas-metric"
#: What each class reports, from its model card: (metric, where in the card).
METRICS = {
    "search_proxy": ("search", "chosen", "proxy"),
    "image_auroc": ("metrics", "image_auroc"),
    "training_seconds": ("training", "total_seconds"),
    "bank_patches": ("training", "bank_patches"),
}
#: The training job's MetricDefinitions: one regex per metric over the job's log lines.
METRIC_DEFINITIONS = [
    {"Name": name, "Regex": rf"{METRIC_PREFIX} \S+ {name}=([-+0-9.eE]+)"} for name in METRICS
]


class JobError(Exception):
    """Bad input to a job (hyperparameters, channels): its message becomes the failure reason."""


def to_argv(hyperparameters: dict[str, str]) -> list[str]:
    """`ivadas train` arguments from hyperparameters: "true" is a flag given, "false" a flag left out."""
    argv: list[str] = []
    for key, value in sorted(hyperparameters.items()):
        if key in SET_BY_JOB:
            raise JobError(f"hyperparameter '{key}' is set by the job itself")
        text = str(value)
        if text.lower() == "true":
            argv.append(f"--{key}")
        elif text.lower() != "false":
            argv += [f"--{key}", text]
    return argv


def _text(value: object) -> str:
    if value is True:
        return "true"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def to_hyperparameters(
    args: argparse.Namespace, parser: argparse.ArgumentParser, leave_out: set[str]
) -> dict[str, str]:
    """Every option of `parser` whose value in `args` differs from its default, as a hyperparameter (its long
    name without the dashes); `leave_out` names destinations the caller sets per job or not at all."""
    out = {}
    for action in parser._actions:  # noqa: SLF001 - argparse keeps no public list of a parser's options
        if not action.option_strings or action.dest in leave_out or action.dest == "help":
            continue
        value = getattr(args, action.dest, action.default)
        if value != action.default and value is not None and value is not False:
            out[action.option_strings[-1].lstrip("-")] = _text(value)
    return out


def _data_root(channel: Path, classes: str | None, scratch: Path) -> Path:
    """The MVTec root to train from: the channel itself, or (a channel holding one class's folder, e.g. the
    class's own prefix of a larger data set) a folder that links to it under the class's name."""
    if not channel.is_dir():
        raise JobError(f"no '{CHANNEL}' channel: the job needs its data in input/data/{CHANNEL}")
    if not (channel / "train").is_dir():
        return channel
    names = [c for c in (classes or "").split(",") if c.strip()]
    if len(names) != 1:
        raise JobError("the channel is one class's folder (train/...): name it with hyperparameter 'classes'")
    root = scratch / "data"
    root.mkdir()
    (root / names[0].strip()).symlink_to(channel.resolve(), target_is_directory=True)
    return root


def _config_artifact(ml: Path) -> str:
    found = sorted(p for p in (ml / "input/data" / CONFIG_CHANNEL).glob("**/*") if p.is_file())
    if len(found) != 1:
        raise JobError(f"'config-from' needs one artifact in channel '{CONFIG_CHANNEL}', found {len(found)}")
    return str(found[0])


def parse(ml: Path, scratch: Path) -> argparse.Namespace:
    """`ivadas train`'s arguments for this job."""
    from infra.cli import CLOUD_OPTIONS, train_parser

    try:
        hyperparameters = json.loads((ml / "input/config/hyperparameters.json").read_text() or "{}")
    except FileNotFoundError:
        hyperparameters = {}
    except ValueError as exc:
        raise JobError(f"hyperparameters.json is not JSON: {exc}") from None
    if "config-from" in hyperparameters:
        hyperparameters["config-from"] = _config_artifact(ml)
    root = _data_root(ml / "input/data" / CHANNEL, hyperparameters.get("classes"), scratch)
    out = scratch / "model.tar.gz"
    argv = ["--data-root", str(root), "--out", str(out), "--quiet", *to_argv(hyperparameters)]
    parser, errors = train_parser(), io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = parser.parse_args(argv)
    except SystemExit:
        raise JobError(errors.getvalue().strip().splitlines()[-1]) from None
    starts_jobs = [d for d in CLOUD_OPTIONS if getattr(args, d) != parser.get_default(d)]
    if starts_jobs:
        raise JobError(f"hyperparameters {', '.join(starts_jobs)} start jobs; a job does not take them")
    return args


def _card_value(card: dict, path: tuple[str, ...]) -> object:
    for key in path:
        card = card.get(key) if isinstance(card, dict) else None
    return card


def metric_lines(cards: dict[str, dict]) -> list[str]:
    """One line per class and metric the class has (no test split: no image AUROC)."""
    lines = []
    for name, card in sorted(cards.items()):
        for metric, path in METRICS.items():
            value = _card_value(card, path)
            if isinstance(value, int | float) and not isinstance(value, bool):
                lines.append(f"{METRIC_PREFIX} {name} {metric}={value}")
    return lines


def run(ml: Path) -> int:
    """Train as the hyperparameters say: the artifact unpacked into model/, or why not in output/failure."""
    from model_server.commands import train
    from model_server.engine.artifact import read_cards
    from model_server.errors import IvadasError

    (ml / "output").mkdir(parents=True, exist_ok=True)
    model_dir = ml / "model"
    try:
        with tempfile.TemporaryDirectory(prefix="ivadas-job-") as tmp:
            scratch = Path(tmp)
            args = parse(ml, scratch)
            train(args)
            _, cards = read_cards(args.out)
            model_dir.mkdir(parents=True, exist_ok=True)
            with tarfile.open(args.out) as tar:
                tar.extractall(model_dir, filter="data")
    except (JobError, IvadasError) as exc:
        return _fail(ml, str(exc))
    except Exception as exc:  # noqa: BLE001 - any other failure is still the job's, with its reason
        traceback.print_exc()
        return _fail(ml, f"internal error: {type(exc).__name__}: {exc}")
    for line in metric_lines(cards):
        print(line, flush=True)
    return 0


def _fail(ml: Path, reason: str) -> int:
    (ml / "output/failure").write_text(reason[:FAILURE_CHARS])
    print(f"training failed: {reason}", file=sys.stderr, flush=True)
    return 1


def main() -> None:
    """The image's `train` program: SageMaker runs it with no arguments."""
    sys.exit(run(Path(os.environ.get(ML_ROOT_ENV, "/opt/ml"))))


if __name__ == "__main__":
    main()
