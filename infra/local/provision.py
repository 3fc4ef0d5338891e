"""Create what template.yaml declares, in moto: buckets, queues (dead-letter queue first), tables with their
indexes and TTL, and the inbox's notification to the queue. Names and settings all come from the template."""

from __future__ import annotations

import json
from collections.abc import Callable

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


def provision(
    stack: Stack, before_notifications: Callable[[dict[str, str]], None] | None = None
) -> dict[str, str]:
    """Create everything; returns physical names (queue URLs for queues) by logical id.

    `before_notifications(names)` runs once everything exists but S3 does not notify yet (a restore must not
    announce old images as new ones).
    """
    names = {**create_buckets(stack), **create_queues(stack), **create_tables(stack)}
    if before_notifications is not None:
        before_notifications(names)
    configure_notifications(stack, names)
    return names
