"""The model families one deployment serves (PatchCore is the production baseline, SoftPatch the candidate),
and the names their endpoints, registry groups, versions and deployment records go by."""

from __future__ import annotations

import re

BASELINE = "patchcore"
CANDIDATE = "softpatch"
MODELS = (BASELINE, CANDIDATE)
#: The one production variant of every endpoint (auto scaling targets it by name, so updates keep it).
VARIANT = "AllTraffic"
#: A registered version: `<model>-<n>`, n the package's version in its group (unique across the families).
_VERSION = re.compile(rf"^({'|'.join(MODELS)})-([1-9][0-9]*)$")


def _check(model: str) -> str:
    if model not in MODELS:
        raise ValueError(f"unknown model '{model}' (choose from {', '.join(MODELS)})")
    return model


def endpoint_variable(model: str) -> str:
    """The environment variable that names `model`'s SageMaker endpoint (set by template.yaml)."""
    return f"{_check(model).upper()}_ENDPOINT"


def endpoint_name(stage: str, model: str) -> str:
    """`model`'s SageMaker endpoint in `stage` (template.yaml: `ivadas-${Stage}-<model>`)."""
    return f"ivadas-{stage}-{_check(model)}"


def package_group(stage: str, model: str) -> str:
    """The Model Registry group holding `model`'s versions in `stage`."""
    return f"ivadas-{stage}-{_check(model)}"


def deployed_url_parameter(stage: str, model: str) -> str:
    """SSM parameter holding the S3 URI of `model`'s deployed artifact: `ivadas deploy` writes it and
    template.yaml reads it, so a later `sam deploy` keeps what was rolled out."""
    return f"/ivadas/{stage}/{_check(model)}/model-data-url"


def deployment_parameter(stage: str, model: str) -> str:
    """SSM parameter holding the JSON deployment record (version, endpoint config, the previous ones)."""
    return f"/ivadas/{stage}/{_check(model)}/deployment"


def version_name(model: str, number: int) -> str:
    return f"{_check(model)}-{int(number)}"


def parse_version(name: str) -> tuple[str, int]:
    """(model, n) of `patchcore-3`; ValueError for anything else."""
    match = _VERSION.match(name)
    if not match:
        raise ValueError(f"'{name}' is not a model version (e.g. {BASELINE}-3 or {CANDIDATE}-1)")
    return match.group(1), int(match.group(2))
