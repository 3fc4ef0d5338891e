"""publish-ui uploads the UI and writes its config.json from the stack outputs: the pool and client people
sign in to, and no credential (the API key never goes to the browser)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
from moto import mock_aws

from infra.cli import main

ROOT = Path(__file__).resolve().parents[2]


@mock_aws
def test_publish_from_stack_outputs(monkeypatch, capsys) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="ui-bucket")
    key = boto3.client("apigateway").create_api_key(
        name="k", enabled=True, value="secret-key-0123456789abcdef"
    )
    import infra.publish_ui as publish_ui

    outputs = {
        "UiBucketName": "ui-bucket",
        "ApiUrl": "https://api.example/dev",
        "ApiKeyId": key["id"],
        "UserPoolId": "eu-west-1_AbCdEf123",
        "UserPoolClientId": "client123",
        "UiUrl": "https://d1.cloudfront.net",
    }
    monkeypatch.setattr(publish_ui, "stack_outputs", lambda name: outputs)
    assert main(["publish-ui", "--stack-name", "ivadas-dev"]) == 0
    objects = {o["Key"] for o in s3.list_objects_v2(Bucket="ui-bucket")["Contents"]}
    # every ES module index.html loads (main.js imports the rest), and nothing of the JavaScript linter's
    shipped = {p.name for p in (ROOT / "ui").iterdir() if p.is_file()} - {"config.json"}
    assert {"index.html", "main.js", "state.js", "api.js", "style.css"} <= shipped
    assert objects == shipped | {"config.json"}
    assert not any(k.startswith("node_modules") or k.startswith("package") for k in objects)
    assert s3.get_object(Bucket="ui-bucket", Key="main.js")["ContentType"] == "text/javascript"
    raw = s3.get_object(Bucket="ui-bucket", Key="config.json")["Body"].read().decode()
    assert json.loads(raw) == {
        "apiBaseUrl": "https://api.example/dev",
        "stage": "dev",
        "auth": {
            "region": "eu-west-1",  # the pool's own region, from its id
            "userPoolId": "eu-west-1_AbCdEf123",
            "clientId": "client123",
            "cognitoEndpoint": "https://cognito-idp.eu-west-1.amazonaws.com/",
        },
    }
    assert "secret-key" not in raw and key["id"] not in raw
    assert s3.get_object(Bucket="ui-bucket", Key="index.html")["ContentType"] == "text/html"
    assert main(["publish-ui"]) == 2 and "no bucket" in capsys.readouterr().err
