"""The official PatchCore code's side of `make parity-official`: its patch features on given inputs.

It runs in a venv of its own (build/official-venv: torch, torchvision and what the official modules import)
and never imports this project: the features are the official code's, imported from a checkout of
github.com/amazon-science/patchcore-inspection (--official-src). The backbone is torchvision's
wide_resnet50_2, as the official backbone table builds it, with the given state dict loaded strictly instead
of the ImageNet download; the official PatchCore object is loaded with its WideResNet50 configuration
(layer2 + layer3, patch size 3, pre-train and target embedding dimension 1024, 3 x 224 x 224 input), and its
own embedding method turns the normalised input tensors into patch features.

Writes --out (.npy, float32 [images * patches, dimension]) and --facts (JSON: patch grid, the official
ImageNet normalisation constants, versions).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision

LAYERS = ["layer2", "layer3"]
PATCH_SIZE = 3
EMBED_DIM = 1024  # pretrain_embed_dimension and target_embed_dimension of the official WideResNet50 runs
INPUT_SHAPE = (3, 224, 224)


def official_modules(src: Path) -> tuple[object, object]:
    """The official package's patchcore and MVTec dataset modules, imported from the checkout's src/."""
    sys.path.insert(0, str(src / "src"))
    import patchcore.datasets.mvtec as mvtec
    import patchcore.patchcore as official

    return official, mvtec


def backbone(weights: Path) -> torch.nn.Module:
    """torchvision's wide_resnet50_2 (the official "wideresnet50") with these weights, every key used."""
    model = torchvision.models.wide_resnet50_2(weights=None)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-src", type=Path, required=True, help="checkout of patchcore-inspection")
    parser.add_argument("--weights", type=Path, required=True, help="state dict of wide_resnet50_2")
    parser.add_argument("--inputs", type=Path, required=True, help=".npy [N, 3, 224, 224], normalised")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--facts", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    official, mvtec = official_modules(args.official_src)
    device = torch.device("cpu")
    model = official.PatchCore(device)
    model.load(
        backbone=backbone(args.weights),
        layers_to_extract_from=LAYERS,
        device=device,
        input_shape=INPUT_SHAPE,
        pretrain_embed_dimension=EMBED_DIM,
        target_embed_dimension=EMBED_DIM,
        patchsize=PATCH_SIZE,
    )
    x = torch.from_numpy(np.load(args.inputs))
    with torch.no_grad():
        features, shapes = model._embed(x, provide_patch_shapes=True)
    out = np.asarray(features, dtype=np.float32)
    np.save(args.out, out)
    facts = {
        "patch_shapes": [list(map(int, s)) for s in shapes],
        "shape": list(out.shape),
        "imagenet_mean": list(mvtec.IMAGENET_MEAN),
        "imagenet_std": list(mvtec.IMAGENET_STD),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    args.facts.write_text(json.dumps(facts, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
