"""Create what template.yaml declares, in moto: buckets, queues (dead-letter queue first), tables with their
indexes and TTL, the user pool with its app client and groups, and the inbox's notification to the queue.
Names and settings all come from the template."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3

from infra.template import Stack

_QUEUE_ATTRIBUTES = (
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds",
)


def _of_type(stack: Stack, kind: str) -> list[str]:
    return [k for k, r in stack.resources.items() if r["Type"] == kind]


def create_buckets(stack: Stack) -> dict[str, str]:
    s3 = boto3.client("s3")
    names = {}
    for logical in _of_type(stack, "AWS::S3::Bucket"):
        names[logical] = stack.ref(logical)
        s3.create_bucket(Bucket=names[logical])
    names["ModelBucket"] = stack.values["ModelBucketName"]  # made outside the stack on AWS; here with it
    s3.create_bucket(Bucket=names["ModelBucket"])
    return names


def create_queues(stack: Stack) -> dict[str, str]:
    """Queue URLs by logical id; a queue with a redrive policy after its dead-letter queue."""
    sqs = boto3.client("sqs")
    urls = {}
    for logical in sorted(
        _of_type(stack, "AWS::SQS::Queue"), key=lambda k: "RedrivePolicy" in stack.props(k)
    ):
        props = stack.resolve(stack.props(logical))
        attrs = {k: str(props[k]) for k in _QUEUE_ATTRIBUTES if k in props}
        if "RedrivePolicy" in props:
            attrs["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        urls[logical] = sqs.create_queue(QueueName=props["QueueName"], Attributes=attrs)["QueueUrl"]
    stack.physical.update(urls)
    return urls


def create_tables(stack: Stack) -> dict[str, str]:
    ddb = boto3.client("dynamodb")
    names = {}
    for logical in _of_type(stack, "AWS::DynamoDB::Table"):
        props = stack.resolve(stack.props(logical))
        kwargs = {
            "TableName": props["TableName"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        ddb.create_table(**kwargs)
        if props.get("TimeToLiveSpecification"):
            ddb.update_time_to_live(
                TableName=props["TableName"], TimeToLiveSpecification=props["TimeToLiveSpecification"]
            )
        names[logical] = props["TableName"]
    return names


def configure_notifications(stack: Stack, names: dict[str, str]) -> None:
    """S3 -> SQS notifications as declared (a configuration without a filter: every object)."""
    s3 = boto3.client("s3")
    for logical in _of_type(stack, "AWS::S3::Bucket"):
        notification = stack.props(logical).get("NotificationConfiguration")
        if not notification:
            continue
        queue_configs = []
        for q in stack.resolve(notification).get("QueueConfigurations", []):
            config = {"QueueArn": q["Queue"], "Events": [q["Event"]]}
            if "Filter" in q:
                config["Filter"] = {"Key": {"FilterRules": q["Filter"]["S3Key"]["Rules"]}}
            queue_configs.append(config)
        s3.put_bucket_notification_configuration(
            Bucket=names[logical], NotificationConfiguration={"QueueConfigurations": queue_configs}
        )


def _resolve(stack: Stack, value: Any) -> Any:
    """stack.resolve plus what the user pool uses: Fn::If on the template's Fn::Equals conditions and
    AWS::NoValue (the property dropped)."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        name, then, otherwise = value["Fn::If"]
        left, right = (stack.resolve(v) for v in stack.template["Conditions"][name]["Fn::Equals"])
        return _resolve(stack, then if str(left) == str(right) else otherwise)
    if value == {"Ref": "AWS::NoValue"}:
        return _NO_VALUE
    if isinstance(value, dict) and not ({"Ref", "Fn::Sub", "Fn::GetAtt"} & set(value)):
        resolved = {k: _resolve(stack, v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}
    if isinstance(value, list):
        return [v for v in (_resolve(stack, v) for v in value) if v is not _NO_VALUE]
    return stack.resolve(value)


_NO_VALUE = object()
#: CreateUserPool and CreateUserPoolClient take these template properties under the same names
_POOL_PROPERTIES = (
    *("Policies", "MfaConfiguration", "AdminCreateUserConfig", "UsernameConfiguration"),
    *("AutoVerifiedAttributes", "Schema", "AccountRecoverySetting", "UserAttributeUpdateSettings"),
)
_CLIENT_PROPERTIES = (
    *("ClientName", "GenerateSecret", "ExplicitAuthFlows", "PreventUserExistenceErrors", "ReadAttributes"),
    *("EnableTokenRevocation", "AuthSessionValidity", "IdTokenValidity", "AccessTokenValidity"),
    *("RefreshTokenValidity", "TokenValidityUnits"),
)


def create_user_pools(stack: Stack) -> dict[str, str]:
    """The user pools, their app clients and groups (moto's cognito-idp): pool and client ids by logical id.
    moto checks the password policy and issues RS256 id tokens with the groups, as Cognito does."""
    idp = boto3.client("cognito-idp")
    ids: dict[str, str] = {}
    for logical in _of_type(stack, "AWS::Cognito::UserPool"):
        props = _resolve(stack, stack.props(logical))
        kwargs = {k: props[k] for k in _POOL_PROPERTIES if k in props}
        ids[logical] = idp.create_user_pool(PoolName=props["UserPoolName"], **kwargs)["UserPool"]["Id"]
    for logical in _of_type(stack, "AWS::Cognito::UserPoolClient"):
        props = stack.props(logical)
        pool_id = ids[props["UserPoolId"]["Ref"]]
        kwargs = {k: v for k, v in _resolve(stack, props).items() if k in _CLIENT_PROPERTIES}
        kwargs.update({k: int(v) for k, v in kwargs.items() if k.endswith("Validity")})  # !Ref gives text
        ids[logical] = idp.create_user_pool_client(UserPoolId=pool_id, **kwargs)["UserPoolClient"]["ClientId"]
    for logical in _of_type(stack, "AWS::Cognito::UserPoolGroup"):
        props = _resolve(stack, {k: v for k, v in stack.props(logical).items() if k != "UserPoolId"})
        pool_id = ids[stack.props(logical)["UserPoolId"]["Ref"]]
        idp.create_group(UserPoolId=pool_id, **props)
    return ids


def create_stand_in_stack(stack: Stack) -> str:
    """The stack as CloudFormation would describe it, in moto: its parameters (as given: an SSM parameter type
    by the parameter's name) and no resources. The Deployments API updates it as it updates the real stack;
    the local stack applies the update to the endpoints (moto_extensions, endpoints.EndpointFollower)."""
    from infra.local.moto_extensions import STAND_IN

    declared = stack.template.get("Parameters", {})
    template = {"Description": STAND_IN, "Parameters": {name: {"Type": "String"} for name in declared},
                "Resources": {}}  # fmt: skip
    given = [{"ParameterKey": k, "ParameterValue": stack.values[k]} for k in declared]
    name = str(stack.values["AWS::StackName"])
    boto3.client("cloudformation").create_stack(
        StackName=name, TemplateBody=json.dumps(template), Parameters=given
    )
    return name


def provision(
    stack: Stack, before_notifications: Callable[[dict[str, str]], None] | None = None
) -> dict[str, str]:
    """Create everything; returns physical names (queue URLs for queues) by logical id, and tells `stack` the
    queues' URLs (what `!Ref` of a queue gives a function's environment).

    `before_notifications(names)` runs once everything exists but S3 does not notify yet (a restore must not
    announce old images as new ones).
    """
    names = {**create_buckets(stack), **create_queues(stack), **create_tables(stack)}
    names.update(create_user_pools(stack))
    if before_notifications is not None:
        before_notifications(names)
    configure_notifications(stack, names)
    return names
