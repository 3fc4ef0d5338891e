"""template.yaml as `sam deploy` hands it to CloudFormation: SAM's own translator (samtranslator) expands the
Serverless resources locally into the API's stages, methods and gateway responses, the functions' roles and
permissions. Tests read what AWS would be asked to create, not what the SAM shorthand suggests."""

from __future__ import annotations

import copy
from functools import cache

from infra.template import ACCOUNT, REGION, load_template


@cache
def translated() -> dict:
    """The template as SAM transforms it (function code as an S3 URI, which the transform requires)."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    template = copy.deepcopy(load_template())
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://bucket/code.zip"
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    params = {"AWS::AccountId": ACCOUNT, "AWS::Partition": "aws", "AWS::Region": REGION}
    return translator.translate(template, params, get_managed_policy_map=dict)


def of_type(template: dict, kind: str) -> dict[str, dict]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}
