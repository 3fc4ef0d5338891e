"""One scale per class, aspect kept, padding masked: engine/geometry.py and how fit and predict use it."""

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from model_server.engine.artifact import Artifact
from model_server.engine.class_model import ClassModel
from model_server.engine.config import FeatureConfig, ModelConfig
from model_server.engine.features import FeatureExtractor
from model_server.engine.geometry import canvas_shape, placed_shape, resize_to, valid_cells
from model_server.engine.predictor import DecodedImage, Predictor
from model_server.training.fit import train_class, with_class_geometry
from model_server.training.samples import ClassSplit, Sample


def test_canvas_follows_the_class_box_with_the_long_side_at_the_input_size() -> None:
    assert canvas_shape(384, None) == (384, 384)
    assert canvas_shape(384, (900, 900)) == (384, 384)
    assert canvas_shape(384, (403, 632)) == (256, 384)  # 244.9 rounded up to a multiple of 16
    assert canvas_shape(64, (300, 100)) == (64, 32)


def test_every_image_of_a_class_gets_the_same_scale_and_keeps_its_aspect() -> None:
    cfg = FeatureConfig(input_size=64, source_size=(100, 200))  # scale 0.32, canvas 32 x 64
    assert cfg.canvas == (32, 64)
    assert placed_shape((100, 200), cfg) == (32, 64)
    assert placed_shape((50, 50), cfg) == (16, 16)  # a smaller part stays smaller: not upsampled to fill
    assert placed_shape((400, 200), cfg) == (32, 16)  # larger than the box: shrunk to fit, aspect kept
    legacy = FeatureConfig(input_size=64)
    assert placed_shape((50, 300), legacy) == (64, 64)  # older artifacts: stretched, as before


@pytest.mark.parametrize(
    ("source", "target"), [((900, 900), (384, 384)), ((301, 517), (64, 111)), ((40, 60), (64, 96))]
)
def test_resizing_gives_pils_antialiased_bilinear_result(source, target) -> None:
    """The canvas resize (torch's uint8 kernel) against PIL's, which earlier models were trained with."""
    image = np.random.default_rng(3).integers(0, 256, (*source, 3), dtype=np.uint8)
    image[source[0] // 3 :, : source[1] // 2] = 17  # edges as well as noise
    reference = np.asarray(Image.fromarray(image).resize(target[::-1], Image.BILINEAR)).astype(int)
    got = resize_to(image, target)
    assert got.shape == (*target, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - reference).max() <= 1


def test_valid_cells_cover_the_image_and_not_the_padding() -> None:
    cfg = FeatureConfig(input_size=64, source_size=(64, 64))  # grid 8 x 8 (stride 8)
    valid = valid_cells([(64, 64), (20, 64), (64, 9)], cfg)
    assert valid[0].all()
    assert valid[1, :3].all() and not valid[1, 3:].any()  # 20 px = 2.5 cells: the partial one counts
    assert valid[2, :, :2].all() and not valid[2, :, 2:].any()


def _stripes(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, ::6] = 200
    return np.clip(img.astype(int) + rng.integers(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def elongated_model() -> tuple[ClassModel, list[Sample]]:
    """Trained on parts 40 px high and 120 to 160 px wide, so every training canvas has padding."""
    train = [
        Sample(f"train/good/{i}.png", 0, "good", loader=lambda i=i: _stripes(40, 120 + 10 * (i % 5), i))
        for i in range(6)
    ]
    split = ClassSplit("wide", train, [], "synthetic")
    config = with_class_geometry(ModelConfig(features=FeatureConfig(input_size=64), coreset_ratio=0.5), train)
    model = train_class(split, config, FeatureExtractor(config.features), progress=False)
    return model, train


def test_padding_never_enters_the_memory_bank(elongated_model) -> None:
    model, train = elongated_model
    cfg = model.config.features
    assert cfg.source_size == (40, 160) and cfg.canvas == (16, 64)
    extractor = FeatureExtractor(cfg)
    canvases, placed = zip(*(extractor.place(s.load_rgb()) for s in train), strict=True)
    feats = extractor.embed(extractor.normalise(canvases)).numpy()
    valid = extractor.valid(placed)
    assert not valid.all()
    padding = {tuple(np.round(f, 4)) for f in feats[~valid]}
    assert not padding & {tuple(np.round(f, 4)) for f in model.bank}
    assert len(model.bank) == round(0.5 * valid.sum())  # the coreset ratio applies to image patches only


def test_maps_cover_only_the_image_and_padding_scores_zero(elongated_model) -> None:
    model, _ = elongated_model
    predictor = Predictor(Artifact("patchcore", "patchcore-test", "", None, {"wide": model}))
    image = _stripes(40, 80, 99)  # half the box's width: half the canvas is padding
    features, placed = FeatureExtractor(model.config.features).preprocess([image])
    assert placed == [(16, 32)]
    (pred,) = predictor.score(model, [DecodedImage(image)])
    assert pred.anomaly_map.shape == (16, 32)  # cropped to the image, so the heatmap is not squashed
    feats = predictor.extractor(model.config.features).embed(features)
    patch = model.patch_scores(feats, predictor.extractor(model.config.features).valid(placed))
    assert (patch[0][:, 4:] == 0).all() and (patch[0][:, :4] > 0).any()


def test_the_heatmap_is_at_the_maps_resolution_and_never_larger_than_the_image(elongated_model) -> None:
    """The map holds nothing finer than the model's input grid: the PNG has the map's size over a larger image
    (clients scale it, as the UI does) and the image's size over a smaller one."""
    model, _ = elongated_model
    predictor = Predictor(Artifact("patchcore", "patchcore-test", "", None, {"wide": model}))
    (pred,) = predictor.score(model, [DecodedImage(_stripes(80, 240, 1))])  # shrunk onto 16 x 48 cells
    assert pred.anomaly_map.shape == (16, 48)
    with Image.open(io.BytesIO(predictor.render(pred))) as png:
        assert png.size == (48, 16)
    upsampled = replace(pred, anomaly_map=np.kron(pred.anomaly_map, np.ones((8, 8), np.float32)))  # 128 x 384
    with Image.open(io.BytesIO(predictor.render(upsampled))) as png:
        assert png.size == (240, 80)  # the image's own size, not the map's
