"""The shared contract (functions/ivadas_contract) and everything that must agree with it: template.yaml, the
CLI, the model server's limits, the Lambda settings."""

from __future__ import annotations

import pytest

from infra.cli import build_parser
from infra.template import Stack, load_template
from ivadas_contract import images, inspection, limits, models, results_table, reviews, stats
from model_server.server.config import ServerConfig


@pytest.fixture(scope="module")
def stack() -> Stack:
    return Stack(load_template(), {"Stage": "local"})


def test_the_inbox_notifies_on_every_object(stack: Stack) -> None:
    """No suffix filter: S3 matches suffixes case-sensitively, so `.png` would drop `IMG_0001.PNG`."""
    configs = stack.props("InboxBucket")["NotificationConfiguration"]["QueueConfigurations"]
    assert [c["Event"] for c in configs] == ["s3:ObjectCreated:*"]
    assert "Filter" not in configs[0]


def test_results_table_is_declared_as_the_contract_says(stack: Stack) -> None:
    props = stack.props("ResultsTable")
    for key in ("AttributeDefinitions", "KeySchema"):
        assert props[key] == results_table.SCHEMA[key]
    by_name = {i["IndexName"]: i for i in props["GlobalSecondaryIndexes"]}
    assert by_name == {i["IndexName"]: i for i in results_table.SCHEMA["GlobalSecondaryIndexes"]}
    assert set(by_name) == {i.name for i in results_table.INDEXES}


def test_stats_and_reviews_tables_are_declared_as_the_contract_says(stack: Stack) -> None:
    for logical, contract in (("StatsTable", stats.SCHEMA), ("ReviewsTable", reviews.SCHEMA)):
        props = stack.props(logical)
        assert {k: props[k] for k in ("AttributeDefinitions", "KeySchema")} == contract
    assert stack.props("StatsTable")["TimeToLiveSpecification"]["AttributeName"] == stats.TTL_ATTRIBUTE


def test_size_limits_are_one_number(stack: Stack) -> None:
    assert int(stack.template["Parameters"]["MaxImageBytes"]["Default"]) == limits.MAX_IMAGE_BYTES
    assert ServerConfig(endpoints={}).max_body_bytes == limits.MAX_REQUEST_BYTES
    assert ServerConfig(endpoints={}).max_pixels == limits.MAX_PIXELS
    serve = build_parser().parse_args(["serve"])
    assert serve.max_body_bytes == limits.MAX_REQUEST_BYTES


def test_every_model_has_its_endpoint_and_cli_choice(stack: Stack) -> None:
    env = stack.function_environment("WorkerFunction")
    for model in models.MODELS:
        assert env[models.endpoint_variable(model)] == f"ivadas-local-{model}"
    assert env["DEFAULT_MODEL"] == models.BASELINE
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # noqa: SLF001 - argparse has no public API
    (model_arg,) = [a for a in train._actions if a.dest == "model"]
    assert tuple(model_arg.choices) == models.MODELS
    local = parser.parse_args(["local", "up", *[f"--{m}=x.tar.gz" for m in models.MODELS]])
    assert all(getattr(local, m) == "x.tar.gz" for m in models.MODELS)
    with pytest.raises(ValueError):
        models.endpoint_variable("resnet")


def test_lifecycle_names_match_the_template(stack: Stack) -> None:
    """The endpoints, the deployed-artifact SSM parameters the template resolves, and the version names."""
    params = stack.template["Parameters"]
    for model, logical in zip(models.MODELS, ("PatchCore", "SoftPatch"), strict=True):
        assert stack.resolve(stack.props(f"{logical}Endpoint")["EndpointName"]) == models.endpoint_name(
            "local", model
        )
        spec = params[f"{logical}ModelDataUrl"]
        assert spec["Type"] == "AWS::SSM::Parameter::Value<String>"
        assert stack.values[f"{logical}ModelDataUrl"] == models.deployed_url_parameter("local", model)
        variants = stack.props(f"{logical}EndpointConfig")["ProductionVariants"]
        assert [v["VariantName"] for v in variants] == [models.VARIANT]
    assert models.parse_version(models.version_name("softpatch", 12)) == ("softpatch", 12)
    for bad in ("patchcore", "patchcore-0", "resnet-1", "softpatch-1a", "patchcore-3 "):
        with pytest.raises(ValueError):
            models.parse_version(bad)


def test_lambda_settings_name_what_the_template_creates(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ivadas_functions.aws import Settings

    for name, value in stack.function_environment("WorkerFunction").items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.inbox_bucket == stack.ref("InboxBucket")
    assert settings.results_bucket == stack.ref("ResultsBucket")
    assert settings.results_table == stack.ref("ResultsTable")
    assert settings.endpoints == {m: f"ivadas-local-{m}" for m in models.MODELS}
    monkeypatch.delenv("RESULTS_BUCKET")
    with pytest.raises(RuntimeError, match="RESULTS_BUCKET"):
        Settings.from_env()  # no default that could name another stage's bucket


def test_image_suffixes_match_any_case() -> None:
    assert images.has_image_suffix("IMG_0001.JPG") and images.has_image_suffix("a.tiff")
    assert not images.has_image_suffix("notes.txt") and not images.has_image_suffix("png")


def test_key_layout_and_folder_markers() -> None:
    key = inspection.inbox_key("line 1", "bottle", "Prüfteil 7.PNG")
    assert inspection.class_from_key(key) == ("line 1", "bottle")
    assert inspection.class_from_key("loose.png") == (None, None)
    assert inspection.class_from_metadata({"Class-Name": "bottle", "LINE": "l2"}) == ("l2", "bottle")
    assert inspection.is_folder_marker("line1/bottle/") and not inspection.is_folder_marker("line1/bottle/x")
    a = inspection.inspection_id("b", key, '"abc"')
    assert a == inspection.inspection_id("b", key, "abc") and a != inspection.inspection_id("b", key, "abd")


def test_records_keep_the_model_fields_and_the_sparse_index_key() -> None:
    obj = {"inspection_id": "i1", "bucket": "b", "key": "l/c/x.png", "etag": "e", "line": "l", "size": 5}
    result = {"model_version": "patchcore-1", "anomaly_score": 2.5, "is_anomaly": True, "threshold": 2.0}
    record = inspection.inspected_record(obj, "c", "patchcore", "ep", (result, 12.3456), "heatmaps/c/i1.png")
    assert record["status"] == inspection.INSPECTED and record["model"] == "patchcore"
    assert record["anomaly_class"] == "c" and record["endpoint_latency_ms"] == 12.346
    assert record["result_key"] == inspection.result_key("c", "i1")
    good = inspection.inspected_record(
        obj, "c", "patchcore", "ep", ({**result, "is_anomaly": False}, 1.0), None
    )
    assert "anomaly_class" not in good
    rejected = inspection.rejected_record(obj, None, "empty file (0 bytes)", "patchcore")
    assert rejected["status"] == inspection.REJECTED and rejected["class_name"] == inspection.UNASSIGNED_CLASS
    stored = results_table.to_dynamo(record)
    assert "heatmap_key" in stored and results_table.from_dynamo(stored)["anomaly_score"] == 2.5
