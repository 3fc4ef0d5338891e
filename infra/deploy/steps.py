"""The steps of `make deploy` (`ivadas deploy-stack`), in order; each looks first and changes only what is
missing or different, so running it again changes nothing (docs/deploying.md walks through them)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from infra.deploy import image, stack
from infra.deploy.recorder import Recorder, absent
from infra.lifecycle.context import Context
from infra.template import stack_name
from ivadas_contract.models import MODELS, deployed_url_parameter
from ivadas_functions import stack as deployed_stack
from model_server.errors import IvadasError

#: API Gateway's CloudWatch role, one per account and region, made only where the account has none.
API_GATEWAY_LOGS_ROLE = "ivadas-apigateway-cloudwatch"
_API_GATEWAY_LOGS_POLICY = "iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
#: The group of the first user, who then adds the others (docs/deploying.md).
FIRST_USER_GROUP = "ml-engineers"


@dataclass
class Request:
    """What the person deploying asked for."""

    stage: str
    region: str
    artifacts: dict[str, Path]
    alarm_email: str = ""
    admin_user: str = ""
    admin_email: str = ""
    image_tag: str = ""
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass
class Deploy:
    request: Request
    aws: Recorder
    account: str = "ACCOUNT"  # a name botocore accepts in a bucket name, until the caller is known
    web_acl: str = ""
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def stage(self) -> str:
        return self.request.stage

    @property
    def region(self) -> str:
        return self.request.region

    @property
    def image_uri(self) -> str:
        return image.image_uri(self.account, self.region, self.request.image_tag)

    @property
    def model_bucket(self) -> str:
        return stack.model_bucket(self.stage, self.account, self.region)

    def find(self, call: Callable[..., Any], **kwargs: Any) -> Any | None:
        """A read's answer, or None when the thing is not there."""
        try:
            return call(**kwargs)
        except ClientError as exc:
            if absent(exc):
                return None
            raise


def _stack(d: Deploy, name: str, region: str | None = None) -> dict | None:
    """The stack `name` as it is now, or None (none yet, or a dry run that could not ask)."""
    return d.find(lambda: deployed_stack.describe(d.aws.client("cloudformation", region), name))


def caller_account(d: Deploy) -> None:
    answer = d.find(d.aws.client("sts").get_caller_identity)
    if answer:
        d.account = answer["Account"]
    else:
        d.aws.note("the account is unknown without credentials: ACCOUNT stands for it below")


def repository(d: Deploy) -> None:
    ecr = d.aws.client("ecr")
    if d.find(ecr.describe_repositories, repositoryNames=[image.REPOSITORY]):
        d.aws.note(f"repository {image.REPOSITORY} exists (every stage of the account pushes here)")
        return
    ecr.create_repository(
        repositoryName=image.REPOSITORY,
        imageTagMutability="IMMUTABLE",  # a tag always means one build
        imageScanningConfiguration={"scanOnPush": True},
        encryptionConfiguration={"encryptionType": "AES256"},
    )


def model_image(d: Deploy) -> None:
    ecr, tag = d.aws.client("ecr"), d.request.image_tag
    found = d.find(ecr.describe_images, repositoryName=image.REPOSITORY, imageIds=[{"imageTag": tag}])
    if found and found["imageDetails"]:
        d.aws.note(f"{d.image_uri} is already pushed")
        return
    token = ecr.get_authorization_token()["authorizationData"]
    password = base64.b64decode(token[0]["authorizationToken"]).decode().split(":", 1)[1] if token else ""
    d.aws.run(image.login_argv(d.account, d.region), stdin=password)
    d.aws.run(image.build_argv(d.image_uri))
    pushed = d.find(ecr.describe_images, repositoryName=image.REPOSITORY, imageIds=[{"imageTag": tag}])
    if d.aws.dry_run:
        return
    kind = pushed["imageDetails"][0].get("imageManifestMediaType") if pushed else "nothing"
    if kind != image.MANIFEST_TYPE:
        raise IvadasError(f"{d.image_uri} was pushed as {kind}; SageMaker needs {image.MANIFEST_TYPE}")


def model_bucket(d: Deploy) -> None:
    s3, bucket = d.aws.client("s3"), d.model_bucket
    if d.find(s3.head_bucket, Bucket=bucket, ExpectedBucketOwner=d.account):
        d.aws.note(f"bucket {bucket} exists")
        return
    where = {} if d.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": d.region}}
    s3.create_bucket(Bucket=bucket, **where)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={k: True for k in (
            "BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")},
    )  # fmt: skip
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    tls_only = {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}}  # fmt: skip
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [tls_only]}))


def first_artifacts(d: Deploy) -> None:
    """Each model's first artifact, registered (pending approval) and named by the SSM parameter the stack
    resolves; a stage whose parameter exists keeps what it serves (`ivadas deploy` changes it)."""
    from infra.lifecycle import registry

    ctx = Context(d.stage, d.model_bucket, d.image_uri, client=d.aws.client)
    for model in MODELS:
        name = deployed_url_parameter(d.stage, model)
        if d.find(ctx.ssm.get_parameter, Name=name):
            d.aws.note(f"{name} exists: the {model} endpoint keeps what it serves")
            continue
        artifact = d.request.artifacts[model]
        if not artifact.is_file():
            raise IvadasError(f"{artifact} does not exist: `make demo` trains it, or pass --{model} PATH")
        url = registry.upload_version(ctx, artifact, model)
        ctx.ssm.put_parameter(
            Name=name, Value=url, Type="String", Description=f"{model} artifact its endpoint serves"
        )


def ui_web_acl(d: Deploy) -> None:
    """The UI's CloudFront web ACL in its own us-east-1 stack (AWS makes those nowhere else)."""
    parameters = {"Stage": d.stage, **{k: v for k, v in d.request.parameters.items() if k == "WafRateLimit"}}
    d.aws.run(stack.waf_deploy_argv(d.stage, parameters))
    name = stack.waf_stack_name(d.stage)
    found = _stack(d, name, stack.WAF_REGION)
    d.web_acl = deployed_stack.outputs(found or {}).get("UiWebAclArn", f"OUTPUT.{name}.UiWebAclArn")


def api_gateway_logging(d: Deploy) -> None:
    """API Gateway writes access logs with the account's CloudWatch role (one per account and region, no
    stack's to own): set one only where there is none, and wait until IAM has propagated it."""
    apigateway, iam = d.aws.client("apigateway"), d.aws.client("iam")
    account = d.find(apigateway.get_account) or {}
    if account.get("cloudwatchRoleArn"):
        d.aws.note(f"API Gateway already logs with {account['cloudwatchRoleArn']}")
        return
    role = d.find(iam.get_role, RoleName=API_GATEWAY_LOGS_ROLE)
    if role is None:
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                 "Principal": {"Service": "apigateway.amazonaws.com"}}]}  # fmt: skip
        role = iam.create_role(RoleName=API_GATEWAY_LOGS_ROLE, AssumeRolePolicyDocument=json.dumps(trust))
        partition = d.aws.session.get_partition_for_region(d.region)
        iam.attach_role_policy(
            RoleName=API_GATEWAY_LOGS_ROLE, PolicyArn=f"arn:{partition}:{_API_GATEWAY_LOGS_POLICY}"
        )
    arn = role["Role"]["Arn"]
    for attempt in range(1 if d.aws.dry_run else 12):  # a new role takes seconds to reach API Gateway
        try:
            apigateway.update_account(
                patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": arn}]
            )
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "BadRequestException" or attempt == 11:
                raise
            d.aws.note("the role has not reached API Gateway yet: again in 10 s")
            _sleep(10)


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def main_stack(d: Deploy) -> None:
    existing = _stack(d, stack_name(d.stage))
    wanted = {**stack.stage_parameters(d.stage, d.image_uri, d.model_bucket), "UiWebAclArn": d.web_acl}
    if d.request.alarm_email:
        wanted["AlarmEmail"] = d.request.alarm_email
    wanted.update(d.request.parameters)
    passes = stack.deploy_passes(deployed_stack.parameters(existing) if existing else None, wanted)
    if existing is None:
        d.aws.note("no stack yet: created with the user pool's deletion protection off, then turned on")
    elif len(passes) == 2:
        d.aws.note("a new instance type: auto scaling off first, then the type changed with scaling back on")
    d.aws.run(stack.build_argv())
    for parameters in passes:
        d.aws.run(stack.deploy_argv(d.stage, d.region, parameters))
    done = _stack(d, stack_name(d.stage))
    d.outputs = deployed_stack.outputs(done) if done else {}
    if not d.outputs:
        d.aws.note("the stack's outputs are not known before it exists: OUTPUT.<name> stands for each below")


def output(d: Deploy, key: str) -> str:
    """A stack output; before the stack exists (a dry run), OUTPUT.<key>: a name botocore accepts."""
    return d.outputs.get(key) or f"OUTPUT.{key}"


def publish_ui(d: Deploy) -> None:
    from infra.publish_ui import cognito_endpoint, publish, ui_config

    pool = output(d, "UserPoolId")
    config = ui_config(output(d, "ApiUrl"), d.region, pool, output(d, "UserPoolClientId"),
                       cognito_endpoint(d.region), d.stage)  # fmt: skip
    publish(output(d, "UiBucketName"), config, s3=d.aws.client("s3"))
    d.aws.note(f"the UI: {output(d, 'UiUrl')}")


def first_user(d: Deploy) -> None:
    """The first ML engineer (Cognito mails a temporary password); they add everyone else."""
    if not d.request.admin_user:
        d.aws.note("no --admin-user: add the first ML engineer later (docs/deploying.md)")
        return
    cognito, pool, user = d.aws.client("cognito-idp"), output(d, "UserPoolId"), d.request.admin_user
    if d.find(cognito.admin_get_user, UserPoolId=pool, Username=user) is None:
        cognito.admin_create_user(
            UserPoolId=pool,
            Username=user,
            UserAttributes=[{"Name": "email", "Value": d.request.admin_email},
                            {"Name": "email_verified", "Value": "true"}],
            DesiredDeliveryMediums=["EMAIL"],
        )  # fmt: skip
    groups = d.find(cognito.admin_list_groups_for_user, UserPoolId=pool, Username=user) or {"Groups": []}
    if FIRST_USER_GROUP not in {g["GroupName"] for g in groups["Groups"]}:
        cognito.admin_add_user_to_group(UserPoolId=pool, Username=user, GroupName=FIRST_USER_GROUP)


#: What `make deploy` does, in order (docs/deploying.md lists the same steps).
STEPS: list[tuple[str, Callable[[Deploy], None]]] = [
    ("who is deploying", caller_account),
    ("image repository (ECR)", repository),
    ("model server image, linux/amd64", model_image),
    ("model bucket", model_bucket),
    ("first artifacts and their SSM parameters", first_artifacts),
    ("UI web ACL (us-east-1)", ui_web_acl),
    ("API Gateway logging role", api_gateway_logging),
    ("the stack (sam build, sam deploy)", main_stack),
    ("the UI", publish_ui),
    ("first ML engineer", first_user),
]
