"""`ivadas publish-ui`: put `ui/` and its `config.json` (API base URL and key) into the deployed UI bucket.

With `--stack-name` the bucket, API URL and API key id come from the CloudFormation stack's outputs (what
`sam deploy` created); each can also be given directly.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
from pathlib import Path

UI = Path(__file__).resolve().parent.parent / "ui"


def stack_outputs(stack_name: str) -> dict[str, str]:
    import boto3

    stacks = boto3.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def publish(bucket: str, api_url: str, api_key: str, ui_dir: Path = UI) -> list[str]:
    """Upload every UI file and a fresh config.json; returns the keys written."""
    import boto3

    s3 = boto3.client("s3")
    written = []
    for path in sorted(p for p in ui_dir.rglob("*") if p.is_file()):
        key = path.relative_to(ui_dir).as_posix()
        if key == "config.json":
            continue  # a local leftover must never overwrite the deployed configuration
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=path.read_bytes(),
            ContentType=content_type,
            CacheControl="no-cache" if key == "index.html" else "max-age=300",
        )
        written.append(key)
    config = {"apiBaseUrl": api_url, "apiKey": api_key}
    s3.put_object(
        Bucket=bucket,
        Key="config.json",
        Body=json.dumps(config).encode(),
        ContentType="application/json",
        CacheControl="no-cache",
    )
    written.append("config.json")
    return written


def run(args: argparse.Namespace) -> int:
    outputs = stack_outputs(args.stack_name) if args.stack_name else {}
    bucket = args.bucket or outputs.get("UiBucketName")
    api_url = args.api_url or outputs.get("ApiUrl")
    api_key = args.api_key
    if not api_key and outputs.get("ApiKeyId"):
        import boto3

        api_key = boto3.client("apigateway").get_api_key(apiKey=outputs["ApiKeyId"], includeValue=True)[
            "value"
        ]
    missing = [n for n, v in (("bucket", bucket), ("API URL", api_url), ("API key", api_key)) if not v]
    if missing:
        print(
            f"ivadas publish-ui: error: no {', '.join(missing)} (give --stack-name or the options)",
            file=sys.stderr,
        )
        return 2
    keys = publish(bucket, api_url, api_key)
    print(
        f"published {len(keys)} files to s3://{bucket}/ (UI: {outputs.get('UiUrl', 'see the stack outputs')})"
    )
    return 0
