"""The model families one deployment serves: PatchCore is the production baseline, SoftPatch the candidate."""

BASELINE = "patchcore"
CANDIDATE = "softpatch"
MODELS = (BASELINE, CANDIDATE)


def endpoint_variable(model: str) -> str:
    """The environment variable that names `model`'s SageMaker endpoint (set by template.yaml)."""
    if model not in MODELS:
        raise ValueError(f"unknown model '{model}' (choose from {', '.join(MODELS)})")
    return f"{model.upper()}_ENDPOINT"
