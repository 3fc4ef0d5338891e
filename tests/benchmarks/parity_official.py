"""`make parity-official`: this engine's patch features against the official PatchCore code's, same weights,
same input tensors, its WideResNet50 configuration.

A WideResNet50-2 is made with random weights (seeded; every BatchNorm's scale and shift drawn, its running
statistics measured on random inputs, so a wrong or partial load would show and the features have the scale
of pretrained ones) and its state dict written to a file. Both sides read that one file:
- the official code (a checkout of github.com/amazon-science/patchcore-inspection, --official-src or
  IVADAS_PATCHCORE_OFFICIAL_SRC) through tests/benchmarks/peers/official_side.py in a venv of its own
  (build/official-venv, made once from the package registries), which never imports this project: its
  PatchCore object on torchvision's wide_resnet50_2, layer2 + layer3, patch size 3, pre-train and target
  embedding dimension 1024, 224 px input;
- this engine's FeatureExtractor with FeatureConfig(backbone="timm:wide_resnet50_2", layers=(2, 3),
  input_size=224, aggregation="unfold", feature_dim=1024) and the file's SHA-256 as its weights, on each
  runtime installed here (torch, the reference, and OpenVINO, the server's default).
The inputs are the same normalised tensors for both: seeded random images, and one real MVTec AD bottle
image where $IVADAS_MVTEC_ROOT has it, each placed on the 224 px canvas and normalised by the engine (the
official ImageNet constants are checked to be the engine's).

Printed: each runtime's largest absolute difference over every patch feature, with the shapes and the largest
feature value (the gate holds the torch runtime, the reference that runs the engine's feature code as written;
OpenVINO compiles that code into kernels of its own, which round differently: its difference is printed, and
tests hold it to torch), and the weights' SHA-256 that the model card of a class trained on this backbone
carries (hyperparameters.features.weights_sha256). Exit 1 when the torch runtime's difference exceeds
--tolerance (1e-5), or the normalisation constants or the card disagree; exit 0 as
skipped, saying how to get the official code, without a checkout, or where the registries cannot be reached.
Run: .venv/bin/python tests/benchmarks/parity_official.py --official-src PATH [--images 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.peer_venv import ensure_venv, peer_env  # noqa: E402

MVTEC = Path(os.environ.get("IVADAS_MVTEC_ROOT", ROOT.parent / "shared/data/mvtec"))
WORK = ROOT / "build/parity-official"
SIDE_SCRIPT = Path(__file__).resolve().parent / "peers/official_side.py"
OFFICIAL_VENV = ROOT / "build/official-venv"
#: What the official modules it imports need (patchcore.common: faiss, scipy; patchcore.backbones: timm).
OFFICIAL_PINS = ("torch==2.14.1", "torchvision==0.29.1", "timm", "faiss-cpu", "scipy", "tqdm", "pillow")
OFFICIAL_STAMP = OFFICIAL_VENV / ".installed-official-1"
TIMM_NAME = "wide_resnet50_2"
INPUT_SIZE = 224
FEATURE_DIM = 1024
CALIBRATION_BATCHES = 2
#: BatchNorm scales drawn from these ranges; a block's last one small, as in trained ResNets (timm starts it
#: at zero), so the residual stream keeps the scale of pretrained features rather than growing block by block.
BN_SCALE, LAST_BN_SCALE = (0.5, 1.5), (0.1, 0.3)
BOTTLE_IMAGE = "bottle/train/good/000.png"
HOW_TO_GET = (
    "git clone https://github.com/amazon-science/patchcore-inspection and pass its folder as --official-src "
    "or IVADAS_PATCHCORE_OFFICIAL_SRC"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--official-src",
        type=Path,
        default=os.environ.get("IVADAS_PATCHCORE_OFFICIAL_SRC") or None,
        help="checkout of github.com/amazon-science/patchcore-inspection",
    )
    parser.add_argument("--images", type=int, default=2, help="seeded random images (plus one bottle image)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-5, help="largest absolute difference allowed")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def skip_reason(src: Path | None) -> str | None:
    if src is None:
        return f"no official PatchCore code given: {HOW_TO_GET}"
    if not (src / "src/patchcore/patchcore.py").is_file():
        return f"{src} is not a checkout of the official PatchCore code (no src/patchcore): {HOW_TO_GET}"
    return ensure_venv(OFFICIAL_VENV, OFFICIAL_PINS, OFFICIAL_STAMP, "faiss-cpu")


def random_weights(path: Path, seed: int) -> Path:
    """A seeded random WideResNet50-2's full state dict, in the key names timm and torchvision share.

    Every BatchNorm's scale and shift are drawn (timm starts each block's last one at zero, which would leave
    the residual branches out) and its running statistics measured on seeded random inputs, so each layer's
    output has the scale it has in a trained network (the largest feature is printed beside the difference:
    float32 resolves 1e-5 only below 128)."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(TIMM_NAME, pretrained=False)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(*(LAST_BN_SCALE if name.endswith(".bn3") else BN_SCALE))
                module.bias.uniform_(-0.2, 0.2)
                module.momentum = None  # a cumulative average over the calibration batches
        model.train()
        for _ in range(CALIBRATION_BATCHES):
            model(torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.eval().state_dict(), path)
    return path


def inputs(extractor: object, n_random: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Normalised [N, 3, 224, 224] float32: seeded random RGB images, and the bottle image where it is."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8) for _ in range(n_random)]
    names = [f"random {i}" for i in range(n_random)]
    bottle = MVTEC / BOTTLE_IMAGE
    if bottle.is_file():
        from PIL import Image

        with Image.open(bottle) as img:
            images.append(np.asarray(img.convert("RGB")))
        names.append(f"MVTec AD {BOTTLE_IMAGE}")
    x, _ = extractor.preprocess(images)
    return x.numpy().astype(np.float32), names


def run_official(src: Path, weights: Path, x_path: Path, threads: int) -> tuple[np.ndarray, dict]:
    out, facts = WORK / "official_features.npy", WORK / "official_facts.json"
    argv = [str(OFFICIAL_VENV / "bin/python"), str(SIDE_SCRIPT), "--official-src", str(src.resolve()),
            "--weights", str(weights), "--inputs", str(x_path), "--out", str(out), "--facts", str(facts),
            "--threads", str(threads)]  # fmt: skip
    proc = subprocess.run(argv, cwd=WORK, env=peer_env(), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"the official side failed:\n{(proc.stderr or proc.stdout)[-3000:]}")
    return np.load(out), json.loads(facts.read_text())


def runtimes() -> list[str]:
    from model_server.engine.backends import RUNTIMES, default_runtime

    return [r for r in RUNTIMES if r == "torch" or default_runtime() == r]


def main() -> int:
    args = parse_args()
    reason = skip_reason(args.official_src)
    if reason:
        print(f"parity-official skipped: {reason}")
        return 0
    from model_server.engine import weights as brought
    from model_server.engine.backbones import get_spec
    from model_server.engine.config import FeatureConfig, ModelConfig
    from model_server.engine.features import FeatureExtractor
    from model_server.engine.model_card import model_card_markdown
    from model_server.engine.runtime import set_threads

    set_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    weights = random_weights(WORK / f"{TIMM_NAME}_seed{args.seed}.pth", args.seed)
    sha, path = brought.fetch(str(weights), TIMM_NAME)
    config = FeatureConfig(backbone=f"timm:{TIMM_NAME}", layers=(2, 3), input_size=INPUT_SIZE,
                           aggregation="unfold", feature_dim=FEATURE_DIM, weights_sha256=sha)  # fmt: skip
    x, names = inputs(FeatureExtractor(config, runtime="torch"), args.images, args.seed)
    np.save(WORK / "inputs.npy", x)
    theirs, facts = run_official(args.official_src, path, WORK / "inputs.npy", args.threads)
    spec = get_spec(config.backbone)
    print(f"inputs: {', '.join(names)}; weights {path.name}, SHA-256 {sha}")
    print(f"official: features {tuple(theirs.shape)}, patch grids {facts['patch_shapes']}, "
          f"torch {facts['torch']}, torchvision {facts['torchvision']}")  # fmt: skip
    failed = []
    if not np.allclose(spec.mean, facts["imagenet_mean"]) or not np.allclose(spec.std, facts["imagenet_std"]):
        failed.append(f"normalisation: ours {spec.mean}/{spec.std}, official {facts['imagenet_mean']}/"
                      f"{facts['imagenet_std']}")  # fmt: skip
    for runtime in runtimes():
        ours = FeatureExtractor(config, runtime=runtime).embed(torch.from_numpy(x)).numpy()
        flat = ours.reshape(-1, ours.shape[-1])
        if flat.shape != theirs.shape:
            failed.append(f"{runtime}: features {ours.shape} ({flat.shape} flat) vs official {theirs.shape}")
            continue
        diff = float(np.abs(flat - theirs).max())
        gated = runtime == "torch"
        note = "" if gated else "; reported, not gated: its compiled kernels round differently"
        print(f"ours ({runtime}): features {tuple(ours.shape)}; max |ours - official| = {diff:.3g} "
              f"(largest |feature| {float(np.abs(theirs).max()):.3g}){note}")  # fmt: skip
        if gated and not diff <= args.tolerance:
            failed.append(f"{runtime}: max abs difference {diff:.3g} > {args.tolerance:g}")
    card = model_card_markdown({"hyperparameters": ModelConfig(features=config).to_dict()})
    if f'"weights_sha256": "{sha}"' not in card:
        failed.append("the model card does not carry the weights' SHA-256")
    print(f"model card: hyperparameters.features.weights_sha256 = {config.weights_sha256}")
    for line in failed:
        print(f"MISSED {line}")
    print("parity-official: " + ("FAILED" if failed else f"equal within {args.tolerance:g}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
