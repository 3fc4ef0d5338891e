"""Read `template.yaml` for the local stack: the names and settings of what it creates come from here, so the
template stays the only place they are declared.

Only what the local stack needs is resolved: parameters (defaults or overrides), pseudo parameters, !Ref,
!Sub, !If on the template's conditions, and !GetAtt of buckets, queues, tables and endpoints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ivadas_contract.models import deployed_url_parameter

TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
#: Each model's part of its resources' logical ids: PatchCoreModel, PatchCoreEndpointConfig, ...
LOGICAL_PREFIX = {"patchcore": "PatchCore", "softpatch": "SoftPatch"}
#: The template parameter naming each model's SSM parameter of its artifact's S3 URI.
MODEL_DATA_URL_PARAMETERS = {model: f"{prefix}ModelDataUrl" for model, prefix in LOGICAL_PREFIX.items()}


def stack_name(stage: str) -> str:
    """The CloudFormation stack of `stage` (make deploy names it so; the CLI finds it by this name)."""
    return f"ivadas-{stage}"


#: The model server image the local stack's endpoints name (it runs the server from the repository).
LOCAL_IMAGE = "ivadas-model-server:local"


def local_parameters(stage: str) -> dict[str, str]:
    """The parameters with no default, as the local stack sets them (on AWS `make deploy` passes them)."""
    urls = {name: deployed_url_parameter(stage, model) for model, name in MODEL_DATA_URL_PARAMETERS.items()}
    return {"ModelBucketName": "ivadas-models", "ModelImageUri": LOCAL_IMAGE, **urls}


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_template(path: Path = TEMPLATE) -> dict:
    return yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass (CloudFormation tags only)  # nosec B506


@dataclass
class Stack:
    """The template with parameters bound, able to name its resources as deployed locally."""

    template: dict
    parameters: dict[str, str] = field(default_factory=dict)
    #: what `Ref` of a created resource resolves to where that is known only once it exists (a queue's URL,
    #: as CloudFormation's Ref gives it): set by the local stack after provisioning
    physical: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        declared = self.template.get("Parameters", {})
        unknown = set(self.parameters) - set(declared)
        if unknown:
            raise ValueError(f"unknown template parameters: {', '.join(sorted(unknown))}")
        stage = str(self.parameters.get("Stage", declared.get("Stage", {}).get("Default", "local")))
        given = {**local_parameters(stage), **self.parameters}
        self.values = {name: str(given.get(name, spec.get("Default"))) for name, spec in declared.items()}
        self.values.update(
            {
                "AWS::Region": REGION,
                "AWS::AccountId": ACCOUNT,
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::StackName": stack_name(self.values.get("Stage", "local")),
            }
        )

    @property
    def resources(self) -> dict:
        return self.template["Resources"]

    def props(self, logical_id: str) -> dict:
        return self.resources[logical_id].get("Properties", {})

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            ((fn, arg),) = value.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::Sub":
                return self.sub(arg)
            if fn == "Fn::GetAtt":
                return self.get_att(*arg)
            if fn == "Fn::If":
                name, then, otherwise = arg
                return self.resolve(then if self.condition(name) else otherwise)
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    def condition(self, name: str) -> bool:
        return self._truth(self.template["Conditions"][name])

    def _truth(self, expression: dict) -> bool:
        ((fn, arg),) = expression.items()
        if fn == "Fn::Equals":
            return str(self.resolve(arg[0])) == str(self.resolve(arg[1]))
        if fn == "Fn::Not":
            return not self._truth(arg[0])
        if fn == "Fn::And":
            return all(self._truth(a) for a in arg)
        if fn == "Fn::Or":
            return any(self._truth(a) for a in arg)
        if fn == "Condition":
            return self.condition(arg)
        raise KeyError(f"condition function {fn} is not resolved locally")

    def sub(self, text: str) -> str:
        def one(match: re.Match) -> str:
            name = match.group(1)
            if "." in name and name.split(".", 1)[0] in self.resources:
                return str(self.get_att(*name.split(".", 1)))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def ref(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        resource = self.resources[name]
        kind, props = resource["Type"], resource.get("Properties", {})
        if kind == "AWS::S3::Bucket":
            return self.resolve(props["BucketName"])
        if kind == "AWS::SQS::Queue":  # the URL once the queue exists; until then its name
            return self.physical.get(name) or self.resolve(props["QueueName"])
        if kind == "AWS::DynamoDB::Table":
            return self.resolve(props["TableName"])
        if kind == "AWS::SageMaker::Endpoint":
            return self.resolve(props["EndpointName"])
        return name

    def get_att(self, name: str, attribute: str) -> Any:
        kind = self.resources[name]["Type"]
        if kind == "AWS::SQS::Queue" and attribute in ("Arn", "QueueName"):
            queue = self.resolve(self.props(name)["QueueName"])
            return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}" if attribute == "Arn" else queue
        if attribute == "Arn" and kind == "AWS::S3::Bucket":
            return f"arn:aws:s3:::{self.ref(name)}"
        if attribute == "EndpointName":
            return self.ref(name)
        raise KeyError(f"{name}.{attribute} is not resolved locally")

    def function_environment(self, logical_id: str) -> dict[str, str]:
        env = dict(
            self.template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        )
        env.update(self.props(logical_id).get("Environment", {}).get("Variables", {}))
        return {k: str(self.resolve(v)) for k, v in env.items()}

    def functions_environment(self) -> dict[str, str]:
        """Every function's environment in one: the local stack runs them all in one process, so a variable
        two functions set differently would make one of them wrong (refused)."""
        merged: dict[str, str] = {}
        for logical_id, resource in self.resources.items():
            if resource["Type"] != "AWS::Serverless::Function":
                continue
            for name, value in self.function_environment(logical_id).items():
                if merged.setdefault(name, value) != value:
                    raise ValueError(f"{name} differs between functions ({merged[name]!r} and {value!r})")
        return merged

    def api_routes(self) -> list[tuple[str, str, str]]:
        """(method, path, function logical id) of each API event: ("POST", "/predict", "PredictFunction")."""
        routes = []
        for logical_id, resource in self.resources.items():
            if resource["Type"] != "AWS::Serverless::Function":
                continue
            for event in resource["Properties"].get("Events", {}).values():
                if event["Type"] == "Api":
                    routes.append(
                        (event["Properties"]["Method"].upper(), event["Properties"]["Path"], logical_id)
                    )
        return routes

    def stage_variables(self) -> dict[str, str]:
        """The API stage's variables (template.yaml, Api.Variables), as API Gateway passes them on."""
        variables = self.resolve(self.props("Api").get("Variables", {}))
        return {k: str(v) for k, v in variables.items()}

    def mapping_value(self, expression: str) -> str | None:
        """What an API Gateway header mapping expression gives: 'static' or stageVariables.NAME (None when the
        stage has no such variable)."""
        if expression.startswith("'") and expression.endswith("'"):
            return expression[1:-1]
        if expression.startswith("stageVariables."):
            return self.stage_variables().get(expression.removeprefix("stageVariables."))
        raise ValueError(f"mapping expression {expression!r} is not resolved locally")

    def gateway_response_headers(self, response_type: str, status: int) -> dict[str, str]:
        """The headers API Gateway adds to an answer of its own: its GatewayResponses entry, else the
        DEFAULT_4XX or DEFAULT_5XX one."""
        responses = self.props("Api").get("GatewayResponses", {})
        default = "DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX"
        spec = responses.get(response_type) or responses.get(default) or {}
        headers = spec.get("ResponseParameters", {}).get("Headers", {})
        values = {name: self.mapping_value(str(expr)) for name, expr in headers.items()}
        return {name: value for name, value in values.items() if value is not None}

    def sqs_event(self, logical_id: str) -> dict:
        for event in self.props(logical_id).get("Events", {}).values():
            if event["Type"] == "SQS":
                return self.resolve(event["Properties"])
        raise KeyError(f"{logical_id} has no SQS event")
