"""The Deployments API (deploy, rollback, the promotion gate's verdict, promote) and the endpoint state GET
/models shows, against moto: who may call, 202 with the record once the stack update started, 409 for each
conflict and 404 for what does not exist, chosen by the refusal's type. The stack is the local stack's
stand-in (infra.local.moto_extensions): an update stays in progress until it is ended, as CloudFormation's."""

from __future__ import annotations

import importlib
import json

import boto3
import pytest
from moto.cloudformation.models import cloudformation_backends
from moto.cloudformation.responses import CloudFormationResponse
from moto.sagemaker.models import SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse

from infra.local import moto_extensions
from ivadas_contract.models import deployed_url_parameter, deployment_parameter
from tests.unit.test_handlers import Context, api_event, aws, claims_of  # noqa: F401 - `aws` is a fixture

STAGE, STACK = "test", "ivadas-test"
MODEL_BUCKET = "models-b"
CARDS = {"bottle": {"image_auroc": 0.99, "pixel_auroc": 0.97, "aupro": 0.9, "recall_at_threshold": 0.95}}


def _version(model: str, n: int, status: str, metrics: dict) -> str:
    """Register `<model>-<n>` with its quality document; returns its artifact's URI."""
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    url = f"s3://{MODEL_BUCKET}/{STAGE}/{model}/v{n}"
    doc = {"classes": {c: {"metrics": m} for c, m in metrics.items()}}
    s3.put_object(
        Bucket=MODEL_BUCKET, Key=f"{STAGE}/{model}/v{n}/metrics.json", Body=json.dumps(doc).encode()
    )
    sm.create_model_package(
        ModelPackageGroupName=f"ivadas-{STAGE}-{model}",
        InferenceSpecification={
            "Containers": [{"Image": "img", "ModelDataUrl": f"{url}/model.tar.gz"}],
            "SupportedContentTypes": ["image/png"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelMetrics={
            "ModelQuality": {
                "Statistics": {"ContentType": "application/json", "S3Uri": f"{url}/metrics.json"}
            }
        },  # fmt: skip
        CustomerMetadataProperties={"classes": ",".join(metrics)},
        ModelApprovalStatus=status,
    )
    return f"{url}/model.tar.gz"


def _endpoint(model: str, url: str) -> None:
    sm, name = boto3.client("sagemaker"), f"ivadas-{STAGE}-{model}"
    role = "arn:aws:iam::123456789012:role/m"
    sm.create_model(
        ModelName=f"{name}-0", PrimaryContainer={"Image": "img", "ModelDataUrl": url}, ExecutionRoleArn=role
    )
    variant = {"VariantName": "AllTraffic", "ModelName": f"{name}-0", "InstanceType": "ml.m5.large",
               "InitialInstanceCount": 1}  # fmt: skip
    sm.create_endpoint_config(EndpointConfigName=f"{name}-0", ProductionVariants=[variant])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-0")


def _serve_on_endpoint(model: str, url: str, n: int) -> None:
    """What CloudFormation's update does to the endpoint: a new model and config, the endpoint updated."""
    sm, name = boto3.client("sagemaker"), f"ivadas-{STAGE}-{model}"
    role = "arn:aws:iam::123456789012:role/m"
    sm.create_model(ModelName=f"{name}-{n}", PrimaryContainer={"Image": "img", "ModelDataUrl": url},
                    ExecutionRoleArn=role)  # fmt: skip
    variant = {"VariantName": "AllTraffic", "ModelName": f"{name}-{n}", "InstanceType": "ml.m5.large",
               "InitialInstanceCount": 1}  # fmt: skip
    sm.create_endpoint_config(EndpointConfigName=f"{name}-{n}", ProductionVariants=[variant])
    sm.update_endpoint(EndpointName=name, EndpointConfigName=f"{name}-{n}")


def _finish(status: str = "UPDATE_COMPLETE", reason: str | None = None) -> None:
    moto_extensions.finish_stack_update(
        cloudformation_backends["123456789012"]["us-east-1"], STACK, status, reason
    )


@pytest.fixture
def deployments(aws, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201, F811 - the fixture above
    """patchcore-1 approved and deployed, patchcore-2 approved, patchcore-3 pending, softpatch-4 approved (no
    worse than production); the stack's stand-in and both endpoints."""
    monkeypatch.setattr(CloudFormationResponse, "update_stack",
                        moto_extensions._stand_in_update(CloudFormationResponse.update_stack))  # fmt: skip
    monkeypatch.setattr(
        SageMakerModelBackend, "update_endpoint", moto_extensions._update_endpoint, raising=False
    )
    monkeypatch.setattr(
        SageMakerResponse, "update_endpoint", moto_extensions._update_endpoint_response, raising=False
    )
    for key, value in {"STAGE": STAGE, "STACK_NAME": STACK, "MODEL_BUCKET": MODEL_BUCKET}.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket=MODEL_BUCKET)
    sm, ssm = boto3.client("sagemaker"), boto3.client("ssm")
    for model in ("patchcore", "softpatch"):
        sm.create_model_package_group(ModelPackageGroupName=f"ivadas-{STAGE}-{model}")
    urls = {
        "patchcore-1": _version("patchcore", 1, "Approved", CARDS),
        "patchcore-2": _version("patchcore", 2, "Approved", CARDS),
        "patchcore-3": _version("patchcore", 3, "PendingManualApproval", CARDS),
        "softpatch-1": _version("softpatch", 1, "Approved", CARDS),
    }
    ssm.put_parameter(
        Name=deployed_url_parameter(STAGE, "patchcore"), Value=urls["patchcore-1"], Type="String"
    )
    record = {"version": "patchcore-1", "model_data_url": urls["patchcore-1"], "previous": []}
    ssm.put_parameter(Name=deployment_parameter(STAGE, "patchcore"), Value=json.dumps(record), Type="String")
    _endpoint("patchcore", urls["patchcore-1"])
    template = {
        "Description": moto_extensions.STAND_IN,
        "Parameters": {"Stage": {"Type": "String"}},
        "Resources": {},
    }
    given = [{"ParameterKey": "Stage", "ParameterValue": STAGE}]
    boto3.client("cloudformation").create_stack(
        StackName=STACK, TemplateBody=json.dumps(template), Parameters=given
    )
    api = importlib.import_module("ivadas_functions.deployments_api")
    models = importlib.import_module("ivadas_functions.models_api")

    def call(method: str, path: str, params: dict, **who) -> tuple[int, dict]:  # noqa: ANN003
        resp = api.handler(
            api_event(method, path, {} if method == "POST" else None, params=params, **who), Context()
        )
        return resp["statusCode"], json.loads(resp["body"])

    def state(model: str = "patchcore") -> dict:
        view = json.loads(models.handler(api_event("GET", "/models"), Context())["body"])
        return view["models"][model]

    return call, state, urls


def test_only_an_ml_engineer_deploys_rolls_back_or_promotes(deployments) -> None:  # noqa: ANN001
    call, _, _ = deployments
    operator = claims_of("oli", "operators")
    for method, path, params in (
        ("POST", "/models/patchcore-2/deploy", {"version": "patchcore-2"}),
        ("POST", "/deployments/patchcore/rollback", {"model": "patchcore"}),
        ("GET", "/models/softpatch-1/promotion", {"version": "softpatch-1"}),
        ("POST", "/models/softpatch-1/promote", {"version": "softpatch-1"}),
    ):
        status, body = call(method, path, params, claims=operator)
        assert status == 403 and body["type"] == "forbidden", (path, body)
        assert call(method, path, params, signed_in=False)[0] == 401
    assert (
        boto3.client("ssm")
        .get_parameter(Name=deployed_url_parameter(STAGE, "patchcore"))["Parameter"]["Value"]
        .endswith("v1/model.tar.gz")
    )  # fmt: skip - nothing was changed


def test_deploy_answers_202_and_models_follows_the_endpoint_to_in_service(deployments) -> None:  # noqa: ANN001
    call, state, urls = deployments
    assert state()["state"]["state"] == "in_service"
    status, body = call("POST", "/models/patchcore-2/deploy", {"version": "patchcore-2"})
    assert status == 202, body
    assert (
        body["deployment"]["version"] == "patchcore-2" and body["deployment"]["deployed_by"] == "cognito:ana"
    )
    assert body["deployment"]["previous"][0] == {
        "version": "patchcore-1",
        "model_data_url": urls["patchcore-1"],
    }
    assert body["endpoint"]["state"] == "updating" and body["deployment"]["endpoint_config"] is None
    ssm = boto3.client("ssm")
    assert (
        ssm.get_parameter(Name=deployed_url_parameter(STAGE, "patchcore"))["Parameter"]["Value"]
        == urls["patchcore-2"]
    )
    following = state()
    assert following["state"]["state"] == "updating" and following["deployed"]["version"] == "patchcore-2"
    assert following["deployed"]["previous"]["version"] == "patchcore-1"  # what Roll back names
    status, busy = call("POST", "/deployments/patchcore/rollback", {"model": "patchcore"})
    assert status == 409 and busy["type"] == "conflict"  # one stack update at a time
    _serve_on_endpoint("patchcore", urls["patchcore-2"], 2)
    _finish()
    assert state()["state"]["state"] == "in_service"
    status, again = call("POST", "/models/patchcore-2/deploy", {"version": "patchcore-2"})
    assert status == 409 and again["type"] == "conflict" and "already deployed" in again["error"]


def test_a_rolled_back_update_shows_failed(deployments) -> None:  # noqa: ANN001
    call, state, _ = deployments
    assert call("POST", "/models/patchcore-2/deploy", {"version": "patchcore-2"})[0] == 202
    _finish("UPDATE_ROLLBACK_COMPLETE", "ModelError: the container failed its ping")
    failed = state()["state"]
    assert failed["state"] == "failed" and "ModelError" in failed["reason"]
    status, back = call("POST", "/deployments/patchcore/rollback", {"model": "patchcore"})  # what serves
    assert status == 202 and back["deployment"]["version"] == "patchcore-1"
    _finish()
    assert state()["state"]["state"] == "in_service"
    assert call("POST", "/models/patchcore-2/deploy", {"version": "patchcore-2"})[0] == 202  # and again


def test_rollback_goes_to_the_previous_deployment_and_refuses_when_there_is_none(deployments) -> None:  # noqa: ANN001
    call, state, urls = deployments
    for model, status_and_kind, words in (
        ("patchcore", (409, "conflict"), "no earlier deployment"),
        ("mystery", (404, "not_found"), "no model mystery"),
    ):
        status, body = call("POST", f"/deployments/{model}/rollback", {"model": model})
        assert (status, body["type"]) == status_and_kind and words in body["error"]
    assert call("POST", "/models/patchcore-2/deploy", {"version": "patchcore-2"})[0] == 202
    _serve_on_endpoint("patchcore", urls["patchcore-2"], 2)
    _finish()
    status, body = call("POST", "/deployments/patchcore/rollback", {"model": "patchcore"})
    assert status == 202, body
    assert (
        body["deployment"]["version"] == "patchcore-1"
        and body["deployment"]["rolled_back_from"] == "patchcore-2"
    )
    assert body["endpoint"]["state"] == "updating"


def test_deploy_refuses_what_is_not_approved_and_what_does_not_exist(deployments) -> None:  # noqa: ANN001
    call, _, _ = deployments
    for version, status_and_kind in (
        ("patchcore-3", (409, "conflict")),  # pending: only an approved version is deployed
        ("patchcore-9", (404, "not_found")),
        ("patchcore-deployed", (404, "not_found")),  # the type, not the words, sets the status
    ):
        status, body = call("POST", f"/models/{version}/deploy", {"version": version})
        assert (status, body["type"]) == status_and_kind, body
    assert (
        "only an approved version"
        in call("POST", "/models/patchcore-3/deploy", {"version": "patchcore-3"})[1]["error"]
    )


def test_the_gate_verdict_comes_before_the_promotion(deployments) -> None:  # noqa: ANN001
    call, _, urls = deployments
    status, verdict = call("GET", "/models/softpatch-1/promotion", {"version": "softpatch-1"})
    assert status == 200 and verdict["promotable"] and verdict["refusals"] == []
    assert verdict["production"] == "patchcore-1" and verdict["candidate"] == "softpatch-1"
    assert verdict["checked"] == [
        "bottle: model cards: no metric worse by more than 0.005",
        "bottle: no reviewed escapes",
    ]
    assert (
        boto3.client("ssm").get_parameter(Name=deployed_url_parameter(STAGE, "patchcore"))["Parameter"][
            "Value"
        ]
        == urls["patchcore-1"]
    )  # fmt: skip - a verdict acts on nothing
    status, body = call("GET", "/models/patchcore-2/promotion", {"version": "patchcore-2"})
    assert status == 409 and body["type"] == "conflict"  # not a candidate version
    status, body = call("GET", "/models/softpatch-7/promotion", {"version": "softpatch-7"})
    assert status == 404 and body["type"] == "not_found"
    status, body = call("POST", "/models/softpatch-1/promote", {"version": "softpatch-1"})
    assert status == 202, body
    assert body["deployment"]["version"] == "softpatch-1" and body["deployment"]["promoted"] is True
    assert (
        body["deployment"]["endpoint"] == f"ivadas-{STAGE}-patchcore"
        and body["checked"] == verdict["checked"]
    )


def test_a_refusing_gate_is_a_409_that_names_the_class_and_metric(deployments) -> None:  # noqa: ANN001
    call, _, urls = deployments
    worse = {"bottle": {**CARDS["bottle"], "recall_at_threshold": 0.90}}
    _version("softpatch", 2, "Approved", worse)
    status, verdict = call("GET", "/models/softpatch-2/promotion", {"version": "softpatch-2"})
    assert status == 200 and not verdict["promotable"]
    assert verdict["refusals"] == ["class bottle: recall_at_threshold 0.9000 < 0.9500 - 0.005 (model cards)"]
    status, body = call("POST", "/models/softpatch-2/promote", {"version": "softpatch-2"})
    assert status == 409 and body["type"] == "conflict" and "recall_at_threshold" in body["error"]
    assert boto3.client("ssm").get_parameter(Name=deployed_url_parameter(STAGE, "patchcore"))["Parameter"][
        "Value"] == urls["patchcore-1"]  # fmt: skip
