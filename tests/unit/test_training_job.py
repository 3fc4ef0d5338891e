"""The training image's `train` contract without Docker: the entry point run on an /opt/ml tree in a temporary
folder, as SageMaker lays it out (hyperparameters, a data channel) and reads it back (model/, output/failure,
metric lines its MetricDefinitions pick up)."""

from __future__ import annotations

import argparse
import json
import re
import tarfile
from pathlib import Path

import pytest

from infra.cli import CLOUD_OPTIONS, train_parser
from model_server.engine.artifact import load_artifact, read_cards
from model_server.training_job import METRIC_DEFINITIONS, JobError, parse, run, to_argv, to_hyperparameters
from tests.conftest import make_mvtec

FAST = {"input-size": "64", "coreset-ratio": "0.25", "seed": "3"}


def _job(tmp_path: Path, hyperparameters: dict, data: str = "root") -> Path:
    ml = tmp_path / "ml"
    channel = ml / "input/data/train"
    if data == "root":
        make_mvtec(channel, "widget", n_train=8)
    elif data == "class":  # the channel is the class's own folder (its prefix of a larger data set)
        make_mvtec(tmp_path / "src", "widget", n_train=8)
        channel.parent.mkdir(parents=True)
        (tmp_path / "src/widget").rename(channel)
    (ml / "input/config").mkdir(parents=True)
    (ml / "input/config/hyperparameters.json").write_text(json.dumps(hyperparameters))
    return ml


def _sagemaker_tar(model_dir: Path, out: Path) -> Path:
    """What SageMaker uploads: model/ tarred as model.tar.gz, its entries relative to the folder."""
    with tarfile.open(out, "w:gz") as tar:
        for p in sorted(model_dir.rglob("*")):
            tar.add(p, arcname=p.relative_to(model_dir).as_posix(), recursive=False)
    return out


def test_a_job_writes_a_loadable_model_and_its_metrics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ml = _job(tmp_path, FAST)
    assert run(ml) == 0
    assert not (ml / "output/failure").exists()
    uploaded = load_artifact(_sagemaker_tar(ml / "model", tmp_path / "model.tar.gz"))
    assert sorted(uploaded.classes) == ["widget"]
    config = uploaded.get("widget").config
    assert (config.features.input_size, config.coreset_ratio, config.seed) == (64, 0.25, 3)
    log = capsys.readouterr().out
    found = {d["Name"]: re.findall(d["Regex"], log) for d in METRIC_DEFINITIONS}
    _, cards = read_cards(ml / "model")
    card = cards["widget"]
    assert found["image_auroc"] == [str(card["metrics"]["image_auroc"])]
    assert found["training_seconds"] == [str(card["training"]["total_seconds"])]
    assert found["bank_patches"] == [str(card["training"]["bank_patches"])]
    assert found["search_proxy"] == []  #: nothing was searched


def test_a_channel_holding_one_class_folder_trains_that_class(tmp_path: Path) -> None:
    ml = _job(tmp_path, {**FAST, "classes": "widget"}, data="class")
    assert run(ml) == 0
    assert sorted(load_artifact(ml / "model").classes) == ["widget"]


def _failure(ml: Path) -> str:
    assert run(ml) == 1
    assert not (ml / "model/manifest.json").exists()
    return (ml / "output/failure").read_text()


def test_unreadable_data_fails_the_job_with_its_reason(tmp_path: Path) -> None:
    ml = _job(tmp_path, FAST)
    bad = ml / "input/data/train/widget/train/good/003.png"
    bad.write_bytes(b"not an image")
    assert "003.png" in _failure(ml)


@pytest.mark.parametrize(
    ("hyperparameters", "reason"),
    [
        ({"bogus": "1"}, "unrecognized arguments: --bogus 1"),
        ({"out": "/tmp/elsewhere"}, "hyperparameter 'out' is set by the job itself"),
        ({"input-size": "huge"}, "invalid int value: 'huge'"),
        ({"on": "sagemaker"}, "hyperparameters on start jobs"),
        ({"classes": "nosuch"}, "class 'nosuch' not found"),
    ],
)
def test_bad_hyperparameters_fail_the_job_with_their_reason(
    tmp_path: Path, hyperparameters: dict, reason: str
) -> None:
    ml = _job(tmp_path, {**FAST, **hyperparameters})
    assert reason in _failure(ml)


def test_a_job_without_data_says_so(tmp_path: Path) -> None:
    ml = _job(tmp_path, FAST, data="none")
    assert "no 'train' channel" in _failure(ml)


def test_every_train_option_reaches_a_job_unchanged(tmp_path: Path) -> None:
    """`ivadas train`'s options, set to other than their defaults, become hyperparameters that the job parses
    back to the same values: one list of options for both."""
    parser = train_parser()
    argv = ["--data-root", "d", "--out", "o", "--model", "softpatch", "--backbone", "efficientnet_lite1",
            "--layers", "1,2", "--input-size", "96", "--layer-weighting", "equal", "--search",
            "--profile", "fast", "--preset", "official", "--weights", "s3://b/w.pth",
            "--aggregation", "unfold", "--feature-dim", "64", "--coreset-ratio", "0.3",
            "--image-score", "patch", "--noise-ratio", "0.1",
            "--weight-method", "gaussian", "--lof-k", "5", "--filter-fraction", "0.2",
            "--score-top-fraction", "0.05", "--target-false-alarm-rate", "0.02", "--seed", "7",
            "--no-evaluate"]  # fmt: skip
    given = parser.parse_args(argv)
    leave_out = {"data_root", "out", "report_dir", "classes", "threads", "quiet", "config_from"}
    leave_out |= set(CLOUD_OPTIONS)
    hyperparameters = to_hyperparameters(given, parser, leave_out)
    assert set(hyperparameters) == {a.lstrip("-") for a in argv[4:] if a.startswith("--")}
    ml = _job(tmp_path, hyperparameters)
    back = parse(ml, tmp_path)
    compared = [a.dest for a in parser._actions if a.option_strings and a.dest not in leave_out | {"help"}]  # noqa: SLF001
    assert len(hyperparameters) == len(compared), "an option of ivadas train is missing from this test's argv"
    assert {d: getattr(back, d) for d in compared} == {d: getattr(given, d) for d in compared}


def test_flags_are_true_or_false_and_options_take_their_text() -> None:
    assert to_argv({"search": "true", "no-evaluate": "False", "seed": "4"}) == ["--search", "--seed", "4"]
    with pytest.raises(JobError, match="data-root"):
        to_argv({"data-root": "/elsewhere"})
    assert to_hyperparameters(argparse.Namespace(seed=0), train_parser(), set()) == {}


def test_config_from_names_the_artifact_in_the_config_channel(tmp_path: Path) -> None:
    """`ivadas train --config-from A` sends A as the job's second channel: the job reads it from there."""
    ml = _job(tmp_path, {**FAST, "config-from": "model.tar.gz"})
    config = ml / "input/data/config"
    config.mkdir(parents=True)
    (config / "model.tar.gz").write_bytes(b"the artifact")
    assert parse(ml, tmp_path).config_from == str(config / "model.tar.gz")
    (config / "other.tar.gz").write_bytes(b"a second one")
    with pytest.raises(JobError, match="one artifact in channel 'config', found 2"):
        parse(ml, tmp_path)
