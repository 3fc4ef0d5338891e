"""`ivadas train --on sagemaker` through the local stack: each class a training job (moto keeps them, the
local runner runs each job's `train` entry point), merged, registered pending, approved, deployed and serving;
a class whose data cannot be read fails its job with the reason shown and nothing is registered unless
--allow-partial; a stopped job ends Stopped. Small synthetic classes at 64 px: a job takes seconds."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import boto3
import numpy as np
import pytest

from infra.cli import main
from infra.local.endpoints import download
from model_server.engine.artifact import class_files, load_artifact
from model_server.engine.predictor import Predictor
from tests.conftest import local_stack, make_mvtec
from tests.e2e.test_lifecycle_local import _serving
from tests.e2e.test_pipeline import put, wait_items

CLASSES = ("alpha", "beta", "gamma")
OPTIONS = ["--input-size", "64", "--coreset-ratio", "0.25", "--seed", "5", "--quiet"]


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("three")
    for seed, name in enumerate(CLASSES):
        make_mvtec(root, name, n_train=8, seed=seed)
    return root


def _jobs() -> list[dict]:
    sm = boto3.client("sagemaker")
    names = [j["TrainingJobName"] for j in sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]]
    return [sm.describe_training_job(TrainingJobName=n) for n in names]


def _most_at_once(jobs: list[dict]) -> int:
    edges = sorted([(j["TrainingStartTime"], 1) for j in jobs] + [(j["TrainingEndTime"], -1) for j in jobs])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def _scores(artifact: Path, root: Path) -> dict[tuple[str, str], float]:
    predictor = Predictor(artifact)
    out = {}
    for name in CLASSES:
        model = predictor.artifact.get(name)
        for path in sorted((root / name / "test").rglob("*.png")):
            (pred,) = predictor.score(model, [predictor.decode(path, name=str(path))])
            out[(name, path.name)] = pred.anomaly_score
    return out


def _versions(where: list[str], capsys: pytest.CaptureFixture) -> list[dict]:
    capsys.readouterr()
    assert main(["models", "--model", "patchcore", "--json", *where]) == 0
    return json.loads(capsys.readouterr().out)


def test_classes_train_as_jobs_merge_register_deploy_and_serve(
    three_classes: Path,
    trained_artifact: Path,
    trained_softpatch: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    state_dir = tmp_path / "stack"
    where = ["--state-dir", str(state_dir)]
    merged, local = tmp_path / "merged.tar.gz", tmp_path / "local.tar.gz"
    cloud = ["train", "--on", "sagemaker", "--data-root", str(three_classes), *OPTIONS, *where]
    with local_stack(state_dir, trained_artifact, trained_softpatch, []) as state:
        assert (
            main([*cloud, "--classes", ",".join(CLASSES), "--max-parallel", "2", "--out", str(merged)]) == 0
        )
        jobs = _jobs()
        assert sorted(j["HyperParameters"]["classes"] for j in jobs) == list(CLASSES)
        assert {j["TrainingJobStatus"] for j in jobs} == {"Completed"}
        assert _most_at_once(jobs) == 2  # three jobs, never more than two at a time
        metrics = {m["MetricName"] for m in jobs[0]["FinalMetricDataList"]}
        assert metrics == {"image_auroc", "training_seconds", "bank_patches"}
        _, merged_files = class_files(merged)
        for job in jobs:  # every class model is its job's output, byte for byte
            output = download(job["ModelArtifacts"]["S3ModelArtifacts"], tmp_path / "outputs")
            _, job_files = class_files(output)
            assert (
                merged_files[job["HyperParameters"]["classes"]]
                == job_files[job["HyperParameters"]["classes"]]
            )

        out = capsys.readouterr().out
        assert "training 3 classes as 3 jobs on ml.m5.xlarge, 2 at a time" in out
        for job in jobs:  # progress: each job's state as it changed, its metrics at the end
            assert f"{job['TrainingJobName']}" in out
        assert re.search(r"Completed/Completed +image_auroc=1 training_seconds=[0-9.]+ bank_patches=", out)
        assert "patchcore-1: PendingManualApproval, classes alpha, beta, gamma" in out
        assert main(["train", "--data-root", str(three_classes), *OPTIONS, "--out", str(local)]) == 0
        cloud_scores, local_scores = _scores(merged, three_classes), _scores(local, three_classes)
        assert cloud_scores.keys() == local_scores.keys()
        assert np.allclose(list(cloud_scores.values()), list(local_scores.values()), rtol=0, atol=1e-6)

        assert main(["approve", "patchcore-1", "--note", "cloud-trained", *where]) == 0
        assert main(["deploy", "--model", "patchcore", "--version", "patchcore-1", *where]) == 0
        version = load_artifact(merged).model_version
        _serving(state, version)
        image = (three_classes / "beta/test/scratch/000.png").read_bytes()
        scored = put(state, "line1/beta/after-cloud-training.png", image)
        assert wait_items(state, [scored])[scored]["model_version"] == version

        # one class retrained into a new version of this one; the others are copied from it untouched
        retrained = tmp_path / "retrained.tar.gz"
        again = [
            *cloud,
            "--classes",
            "beta",
            "--seed",
            "6",
            "--base-version",
            "patchcore-1",
            "--out",
            str(retrained),
        ]
        assert main(again) == 0
        assert "patchcore-2: PendingManualApproval, classes alpha, beta, gamma" in capsys.readouterr().out
        manifest, files = class_files(retrained)
        assert manifest["training"]["base_version"] == "patchcore-1"
        assert {n: files[n] for n in ("alpha", "gamma")} == {n: merged_files[n] for n in ("alpha", "gamma")}
        (beta_job,) = [j for j in _jobs() if j["TrainingJobName"] == manifest["training"]["jobs"]["beta"]]
        output = download(beta_job["ModelArtifacts"]["S3ModelArtifacts"], tmp_path / "outputs")
        assert files["beta"] == class_files(output)[1]["beta"] != merged_files["beta"]


def test_a_class_that_cannot_train_fails_its_job_and_blocks_registration(
    trained_artifact: Path,
    trained_softpatch: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    root = make_mvtec(tmp_path / "data", "alpha", n_train=8)
    make_mvtec(root, "broken", n_train=8, seed=9)
    (root / "broken/train/good/004.png").write_bytes(b"\x89PNG but not really")
    state_dir = tmp_path / "stack"
    where = ["--state-dir", str(state_dir)]
    cloud = [
        "train",
        "--on",
        "sagemaker",
        "--data-root",
        str(root),
        *OPTIONS,
        "--out",
        str(tmp_path / "m.tar.gz"),
    ]
    with local_stack(state_dir, trained_artifact, trained_softpatch, []):
        assert main([*cloud, *where]) == 1
        out = capsys.readouterr().out
        cores = len(os.sched_getaffinity(0))  # the local account's quota, by default how many run at once
        assert f"2 jobs on ml.m5.xlarge, {cores} at a time" in out
        broken = next(j for j in _jobs() if j["HyperParameters"]["classes"] == "broken")
        assert broken["TrainingJobStatus"] == "Failed" and "004.png" in broken["FailureReason"]
        assert f"class broken: job {broken['TrainingJobName']} Failed: AlgorithmError:" in out
        assert "nothing registered" in out and _versions(where, capsys) == []

        assert main([*cloud, "--allow-partial", *where]) == 0
        (version,) = _versions(where, capsys)
        assert version["classes"] == "alpha"
        sm, s3 = boto3.client("sagemaker"), boto3.client("s3")
        package = sm.list_model_packages(ModelPackageGroupName="ivadas-local-patchcore")[
            "ModelPackageSummaryList"
        ]
        desc = sm.describe_model_package(ModelPackageName=package[0]["ModelPackageArn"])
        assert desc["CustomerMetadataProperties"]["missing_classes"] == "broken"
        bucket, key = desc["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"][5:].split("/", 1)
        card = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert "004.png" in card["missing_classes"]["broken"]


def test_a_stopped_job_is_killed_and_ends_stopped(
    three_classes: Path, trained_artifact: Path, trained_softpatch: Path, tmp_path: Path
) -> None:
    from model_server.training_job import METRIC_DEFINITIONS

    state_dir = tmp_path / "stack"
    with local_stack(state_dir, trained_artifact, trained_softpatch, []) as state:
        bucket = state["resources"]["ModelBucket"]
        for path in (three_classes / "alpha").rglob("*.png"):
            key = f"training-data/stop/alpha/{path.relative_to(three_classes / 'alpha').as_posix()}"
            boto3.client("s3").upload_file(str(path), bucket, key)
        sm = boto3.client("sagemaker")
        channel = {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/training-data/stop/"}}
        sm.create_training_job(
            TrainingJobName="stopped-job",
            AlgorithmSpecification={
                "TrainingImage": "ivadas",
                "TrainingInputMode": "File",
                "MetricDefinitions": METRIC_DEFINITIONS,
            },  # fmt: skip
            RoleArn="arn:aws:iam::123456789012:role/ivadas-local-training",
            HyperParameters={"input-size": "64", "classes": "alpha"},  # the search: long enough to stop
            InputDataConfig=[{"ChannelName": "train", "DataSource": channel}],
            OutputDataConfig={"S3OutputPath": f"s3://{bucket}/local/training-jobs/"},
            ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            StoppingCondition={"MaxRuntimeInSeconds": 600},
        )
        deadline = time.monotonic() + 60
        while sm.describe_training_job(TrainingJobName="stopped-job")["SecondaryStatus"] != "Training":
            assert time.monotonic() < deadline, "the runner never started the job"
            time.sleep(0.2)
        sm.stop_training_job(TrainingJobName="stopped-job")
        while (d := sm.describe_training_job(TrainingJobName="stopped-job"))[
            "TrainingJobStatus"
        ] != "Stopped":
            assert d["TrainingJobStatus"] == "Stopping" and time.monotonic() < deadline
            time.sleep(0.2)
        assert d["SecondaryStatus"] == "Stopped" and "ModelArtifacts" not in d
        assert not (state_dir / "jobs/stopped-job").exists()  # killed, its folder gone
