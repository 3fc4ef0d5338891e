"""What is deployed imports from what is deployed: each Lambda handler from a copy of its CodeUri folder alone
(torch and the rest of the repository unavailable, the template's environment set), and the model server from
what the Dockerfile copies into the image (no Lambda handlers, no local stack)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.template import Stack, load_template

ROOT = Path(__file__).resolve().parents[2]

#: Run in a fresh interpreter: drop the project's editable install, block `blocked`, put `paths` first, import
#: each "module:attribute" of `targets`, and print whether the attribute is callable and where every module of
#: the project's `packages` came from.
_PROBE = r"""
import importlib, importlib.abc, json, sys
paths, blocked, targets, packages = json.loads(sys.argv[1])
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
sys.path[:] = paths + [p for p in sys.path if "__editable__" not in p]

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"{name} is not in this package", name=name)
        return None

sys.meta_path.insert(0, Blocker())
loaded = {}
for target in targets:
    module, attribute = target.split(":")
    loaded[target] = callable(getattr(importlib.import_module(module), attribute, None))
files = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items()) if n.split(".")[0] in packages}
leaked = sorted(set(sys.modules) & set(blocked))
print(json.dumps({"loaded": loaded, "files": files, "blocked_loaded": leaked}))
"""

#: Never in a Lambda package: the model server's numeric stack and the rest of the repository.
NOT_IN_LAMBDA = ["torch", "torchvision", "timm", "faiss", "numpy", "PIL", "scipy", "sklearn", "skimage",
                 "matplotlib", "starlette", "uvicorn", "moto", "model_server", "infra", "tests"]  # fmt: skip


def _probe(paths: list[Path], blocked: list[str], targets: list[str], packages: list[str], env: dict) -> dict:
    args = json.dumps([[str(p) for p in paths], blocked, targets, packages])
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _PROBE, args], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _functions(stack: Stack) -> dict[str, dict]:
    return {
        k: r["Properties"] for k, r in stack.resources.items() if r["Type"] == "AWS::Serverless::Function"
    }


@pytest.mark.parametrize("logical_id", sorted(_functions(Stack(load_template()))))
def test_handler_imports_from_its_code_uri_alone(logical_id: str, tmp_path: Path) -> None:
    stack = Stack(load_template(), {"Stage": "local"})
    props = _functions(stack)[logical_id]
    package = tmp_path / "package"  # what `sam build` zips: the CodeUri folder
    shutil.copytree(ROOT / props["CodeUri"], package, ignore=shutil.ignore_patterns("__pycache__"))
    module, function = props["Handler"].rsplit(".", 1)
    env = {
        **stack.function_environment(logical_id),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    target = f"{module}:{function}"
    out = _probe([package], NOT_IN_LAMBDA, [target], ["ivadas_functions", "ivadas_contract"], env)
    assert out["loaded"] == {target: True}
    assert out["files"] and all(Path(f).is_relative_to(package) for f in out["files"].values()), out["files"]
    assert out["blocked_loaded"] == []


def _image_sources() -> list[str]:
    """The repository paths the Dockerfile copies into the image, besides the build metadata."""
    dockerfile = (ROOT / "model_server/Dockerfile").read_text()
    sources = [m.group(1).split()[:-1] for m in re.finditer(r"^COPY\s+(.+)$", dockerfile, re.MULTILINE)]
    return [s for group in sources for s in group if s not in ("pyproject.toml", "README.md")]


def test_model_server_image_holds_the_server_and_the_contract_only(tmp_path: Path) -> None:
    sources = _image_sources()
    assert sorted(sources) == ["functions/ivadas_contract", "model_server", "openapi/model_server.yaml"]
    image = tmp_path / "opt/program"
    for src in sources:
        if (ROOT / src).is_file():  # the server's OpenAPI document
            (image / src).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / src, image / src)
            continue
        shutil.copytree(ROOT / src, image / src, ignore=shutil.ignore_patterns("__pycache__"))
    targets = ["model_server.server.serve:main", "model_server.server.app:create_app"]
    blocked = ["infra", "ivadas_functions", "boto3", "aws_lambda_powertools", "moto", "tests"]
    # pyproject's package search: the repository root and functions/
    out = _probe([image, image / "functions"], blocked, targets, ["model_server", "ivadas_contract"], {})
    assert out["loaded"] == dict.fromkeys(targets, True)
    assert all(Path(f).is_relative_to(image) for f in out["files"].values() if f)
    assert "ivadas_contract.limits" in out["files"] and out["blocked_loaded"] == []
