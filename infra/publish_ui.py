"""`ivadas publish-ui`: put `ui/` and its `config.json` into the deployed UI bucket.

config.json tells the UI where the API is and which Cognito user pool and app client people sign in to, and
where cognito-idp answers (the regional endpoint on AWS, moto locally). It carries no credential: anyone can
read it (CloudFront serves it), and the API key, which machines use, never goes there.

With `--stack-name` the bucket, API URL, pool and client ids come from the CloudFormation stack's outputs
(what `sam deploy` created); each can also be given directly.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
from pathlib import Path
from typing import Any

from model_server.errors import IvadasError

UI = Path(__file__).resolve().parent.parent / "ui"


def stack_outputs(stack_name: str) -> dict[str, str]:
    import boto3

    from ivadas_functions import stack as deployed_stack

    stack = deployed_stack.describe(boto3.client("cloudformation"), stack_name)
    if stack is None:
        raise IvadasError(f"stack {stack_name} does not exist (make deploy creates it)")
    return deployed_stack.outputs(stack)


def cognito_endpoint(region: str) -> str:
    """Where the browser calls InitiateAuth on AWS (public, unsigned)."""
    return f"https://cognito-idp.{region}.amazonaws.com/"


def ui_config(api_url: str, region: str, pool_id: str, client_id: str, endpoint: str, stage: str) -> dict:
    """The UI's config.json: public facts only (no key, no secret)."""
    auth = {"region": region, "userPoolId": pool_id, "clientId": client_id, "cognitoEndpoint": endpoint}
    return {"apiBaseUrl": api_url, "stage": stage, "auth": auth}


def publish(bucket: str, config: dict, ui_dir: Path = UI, s3: Any = None) -> list[str]:
    """Upload every UI file and a fresh config.json; returns the keys written. `s3`: a client of the
    caller's (make deploy's, whose dry run only prints the calls)."""
    import boto3

    s3 = s3 or boto3.client("s3")
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
    import boto3

    outputs = stack_outputs(args.stack_name) if args.stack_name else {}
    bucket = args.bucket or outputs.get("UiBucketName")
    api_url = args.api_url or outputs.get("ApiUrl")
    pool_id = args.user_pool_id or outputs.get("UserPoolId")
    client_id = args.user_pool_client_id or outputs.get("UserPoolClientId")
    named = {"bucket": bucket, "API URL": api_url, "user pool id": pool_id, "app client id": client_id}
    missing = [n for n, v in named.items() if not v]
    if missing:
        print(
            f"ivadas publish-ui: error: no {', '.join(missing)} (give --stack-name or the options)",
            file=sys.stderr,
        )
        return 2
    region = pool_id.split("_", 1)[0] if "_" in pool_id else boto3.session.Session().region_name
    stage = args.stack_name.removeprefix("ivadas-") if args.stack_name else ""
    config = ui_config(api_url, region, pool_id, client_id, cognito_endpoint(region), stage)
    keys = publish(bucket, config)
    print(
        f"published {len(keys)} files to s3://{bucket}/ (UI: {outputs.get('UiUrl', 'see the stack outputs')})"
    )
    return 0
