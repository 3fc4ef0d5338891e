"""What is deployed imports from what is deployed: each Lambda handler from a copy of its CodeUri folder alone
(torch and the rest of the repository unavailable, the template's environment set), and the model server from
what the Dockerfile copies into the image (no Lambda handlers, no local stack), where one image answers both
of SageMaker's commands: `serve` and `train` (a training job run from the image's files alone)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from infra.template import Stack, load_template

ROOT = Path(__file__).resolve().parents[2]

#: Run in a fresh interpreter: drop the project's editable install, block `blocked`, put `paths` first, import
#: each "module:attribute" of `targets`, and print whether the attribute is callable and where every module of
#: the project's `packages` came from.
_PROBE = r"""
import importlib, importlib.abc, json, sys
paths, blocked, targets, packages, call = json.loads(sys.argv[1])
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
if call:  # run one, e.g. the training job's entry point on an /opt/ml tree (its output goes to stderr)
    module, attribute = call.split(":")
    sys.stdout, out = sys.stderr, sys.stdout
    try:
        loaded["exit"] = getattr(importlib.import_module(module), attribute)()
    except SystemExit as exc:
        loaded["exit"] = exc.code
    sys.stdout = out
files = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items()) if n.split(".")[0] in packages}
leaked = sorted(set(sys.modules) & set(blocked))
print(json.dumps({"loaded": loaded, "files": files, "blocked_loaded": leaked}))
"""

#: Never in a Lambda package: the model server's numeric stack and the rest of the repository.
NOT_IN_LAMBDA = ["torch", "torchvision", "timm", "faiss", "numpy", "PIL", "scipy", "sklearn", "skimage",
                 "matplotlib", "starlette", "uvicorn", "moto", "model_server", "infra", "tests"]  # fmt: skip


def _probe(
    paths: list[Path], blocked: list[str], targets: list[str], packages: list[str], env: dict, call: str = ""
) -> dict:
    args = json.dumps([[str(p) for p in paths], blocked, targets, packages, call])
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


DOCKERFILE = ROOT / "model_server/Dockerfile"
#: What the image holds of infra/: `ivadas train`'s parser, which a training job reads its options with.
TRAIN_PARSER = ["infra/__init__.py", "infra/cli.py", "infra/template.py", "infra/local/__init__.py",
                "infra/local/args.py", "infra/local/users.py", "infra/lifecycle/__init__.py",
                "infra/lifecycle/context.py"]  # fmt: skip


def _image_sources() -> list[str]:
    """The repository paths the Dockerfile copies into the image, besides the build metadata."""
    dockerfile = DOCKERFILE.read_text()
    sources = [m.group(1).split()[:-1] for m in re.finditer(r"^COPY\s+(.+)$", dockerfile, re.MULTILINE)]
    return [s for group in sources for s in group if s not in ("pyproject.toml", "README.md")]


def _image(tmp_path: Path) -> Path:
    """The image's /opt/program: what the Dockerfile copies, at the same paths."""
    image = tmp_path / "opt/program"
    for src in _image_sources():
        if (ROOT / src).is_file():
            (image / src).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / src, image / src)
            continue
        shutil.copytree(ROOT / src, image / src, ignore=shutil.ignore_patterns("__pycache__"))
    return image


def test_model_server_image_holds_the_server_and_the_contract_only(tmp_path: Path) -> None:
    assert sorted(_image_sources()) == sorted(
        ["functions/ivadas_contract", "model_server", "openapi/model_server.yaml", *TRAIN_PARSER]
    )
    image = _image(tmp_path)
    targets = ["model_server.server.serve:main", "model_server.server.app:create_app"]
    blocked = ["infra", "ivadas_functions", "boto3", "aws_lambda_powertools", "moto", "tests"]
    # pyproject's package search: the repository root and functions/
    out = _probe([image, image / "functions"], blocked, targets, ["model_server", "ivadas_contract"], {})
    assert out["loaded"] == dict.fromkeys(targets, True)
    assert all(Path(f).is_relative_to(image) for f in out["files"].values() if f)
    assert "ivadas_contract.limits" in out["files"] and out["blocked_loaded"] == []


def test_one_image_answers_serve_and_train(tmp_path: Path) -> None:
    """SageMaker starts the image as `serve` or `train`: no ENTRYPOINT, so its argument is the program, and
    both are the package's scripts. `train` runs a job from the image's files (no boto3, no local stack)."""
    from tests.conftest import make_mvtec

    dockerfile = DOCKERFILE.read_text()
    assert not re.search(r"^ENTRYPOINT", dockerfile, re.MULTILINE)
    assert re.search(r'^CMD \["serve"\]$', dockerfile, re.MULTILINE)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"serve", "train"} <= set(scripts)
    ml = tmp_path / "ml"
    make_mvtec(ml / "input/data/train", "widget", n_train=6)
    (ml / "input/config").mkdir(parents=True)
    hyperparameters = {"input-size": "64", "no-evaluate": "true"}
    (ml / "input/config/hyperparameters.json").write_text(json.dumps(hyperparameters))
    image = _image(tmp_path)
    targets = [scripts["serve"], scripts["train"]]
    blocked = ["ivadas_functions", "boto3", "aws_lambda_powertools", "moto", "sagemaker", "tests"]
    env = {"IVADAS_ML_ROOT": str(ml)}
    packages = ["model_server", "ivadas_contract", "infra"]
    out = _probe([image, image / "functions"], blocked, targets, packages, env, call=scripts["train"])
    assert out["loaded"] == {**dict.fromkeys(targets, True), "exit": 0}
    assert all(Path(f).is_relative_to(image) for f in out["files"].values() if f)
    assert (ml / "model/manifest.json").exists() and not (ml / "output/failure").exists()
