"""What CloudFormation says about a deployed stack: whether it exists, its parameters and its outputs. The
CLI reads a stage's settings here instead of falling back to template defaults, which name no real bucket; a
deployment (ivadas_functions.deployments) reads the parameters to update the stack with them unchanged."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError


def describe(cloudformation: Any, name: str) -> dict | None:
    """The stack `name` as DescribeStacks gives it, or None when there is none (CloudFormation answers a
    ValidationError "does not exist")."""
    try:
        return cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise


def parameters(stack: dict) -> dict[str, str]:
    """ParameterKey -> the value given (for an SSM parameter type, the parameter's name)."""
    return {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}


def outputs(stack: dict) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
