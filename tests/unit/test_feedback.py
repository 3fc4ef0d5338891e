"""Learning from reviews (training/feedback.py): the bank grows only by what is new, the threshold never sees
an image whose patches just entered the bank, and the rest of the artifact is left as it was."""

from __future__ import annotations

import io
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_server.engine.artifact import load_artifact, save_artifact
from model_server.engine.calibration import Calibration
from model_server.engine.class_model import ClassModel
from model_server.engine.config import FeatureConfig, ModelConfig
from model_server.engine.features import FeatureExtractor
from model_server.engine.predictor import Predictor
from model_server.errors import DataError
from model_server.training import feedback
from model_server.training.fit import train_class, with_class_geometry
from model_server.training.samples import ClassSplit, Sample
from model_server.training.threshold import calibrate


def _part(seed: int, size: int = 96) -> np.ndarray:
    """The synthetic good part of tests/conftest.py: a textured grey disc on a dark background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size * 0.38) ** 2
    img = np.where(disc, 150 + 30 * np.sin(xx / 3.0), 30).astype(np.float32)
    img = img + rng.normal(scale=4.0, size=img.shape)
    return np.clip(np.stack([img, img * 0.9, img * 0.8], axis=-1), 0, 255).astype(np.uint8)


def _novel(seed: int, size: int = 96) -> np.ndarray:
    """The same part under a texture training never showed: a bright blue checkerboard on the disc."""
    img = _part(seed, size)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size * 0.38) ** 2
    checks = ((yy // 8 + xx // 8) % 2).astype(bool) & disc
    img[checks] = (40, 90, 250)
    return img


TRAIN_SEEDS = range(12)


def _train(model: str) -> tuple[ClassModel, FeatureExtractor]:
    images = {f"train/good/{i:03d}.png": _part(i) for i in TRAIN_SEEDS}
    samples = [Sample(n, 0, "good", loader=lambda im=im: im) for n, im in images.items()]
    split = ClassSplit("widget", samples, [], "synthetic parts")
    features = FeatureConfig(backbone="efficientnet_lite0", input_size=64)
    config = ModelConfig(model=model, features=features, coreset_ratio=0.25, lof_k=4)
    config = with_class_geometry(config, samples)
    extractor = FeatureExtractor(config.features)
    class_model = train_class(split, config, extractor, progress=False)
    class_model.card["metrics"] = {"image_auroc": 1.0}  # as `ivadas train` adds them
    return class_model, extractor


@pytest.fixture(scope="module")
def patchcore() -> tuple[ClassModel, FeatureExtractor]:
    return _train("patchcore")


def _scores(model: ClassModel, extractor: FeatureExtractor, images: list[np.ndarray]) -> np.ndarray:
    x, placed = extractor.preprocess(images)
    return model.image_scores(model.patch_scores(extractor.embed(x), extractor.valid(placed)))


def test_select_new_patches_continues_the_coreset_at_the_radius() -> None:
    """Ten patches a few hundredths apart, far from the bank: one of them covers the rest; five near the
    bank (score 0.5) are never chosen at radius 1, and covered by one of their own at radius 0.4."""
    rng = np.random.default_rng(0)
    cluster = 50.0 + rng.normal(scale=0.02, size=(10, 4))
    near = rng.normal(scale=0.1, size=(5, 4))
    feats = np.concatenate([cluster, near]).astype(np.float32)
    scores = np.concatenate([np.full(10, 100.0), np.full(5, 0.5)])
    chosen = feedback.select_new_patches(feats, scores, radius=1.0)
    assert len(chosen) == 1 and chosen[0] < 10
    cluster_pick, near_pick = sorted(feedback.select_new_patches(feats, scores, radius=0.4))
    assert cluster_pick < 10 <= near_pick
    assert len(feedback.select_new_patches(feats, scores, radius=1e-4)) == 15  # everything is new


def test_coverage_radius_is_the_spacing_of_the_bank() -> None:
    bank = np.stack([np.arange(20.0), np.zeros(20)], axis=1).astype(np.float32)  # points 1 apart
    model = ClassModel("c", ModelConfig(), bank, None, Calibration(5.0, 1.0, 0.99, 3))
    assert feedback.coverage_radius(model) == pytest.approx(1.0)


def test_bank_grows_only_by_what_is_new(patchcore: tuple[ClassModel, FeatureExtractor]) -> None:
    model, extractor = patchcore
    before_bank, before_card = model.bank.copy(), dict(model.card)
    _, same = feedback.update_class_model(model, extractor, [_part(3)], ["r-same"])
    new_model, novel = feedback.update_class_model(model, extractor, [_novel(100)], ["r-novel"])
    assert same["patches_added"] <= 1  # a training image is covered already
    assert novel["patches_added"] >= 3
    assert novel["bank_after"] == novel["bank_before"] + novel["patches_added"] == len(new_model.bank)
    # greedy continuation: the checkerboard is covered, not copied whole
    n_cells = int(np.prod(model.config.features.grid))
    assert novel["patches_added"] < n_cells
    assert max(novel["scores_after"]) <= novel["coverage_radius"] < min(novel["scores_before"])
    # the input model is untouched
    np.testing.assert_array_equal(model.bank, before_bank)
    assert model.card == before_card and "updates" not in model.card


def test_added_patches_name_their_reviewed_image(patchcore: tuple[ClassModel, FeatureExtractor]) -> None:
    model, extractor = patchcore
    novel = _novel(100)
    new_model, report = feedback.update_class_model(model, extractor, [_part(3), novel], ["r-same", "r-new"])
    before, after = model.provenance, new_model.provenance
    assert before is not None and after is not None and report["patches_added"] >= 3
    np.testing.assert_array_equal(after.patches[: len(model.bank)], before.patches)
    added = after.patches[len(model.bank) :]
    assert {after.images[i].id for i in added[:, 0]} == {"review:r-new"}
    # each added bank patch is the reviewed image's patch at the stated cell
    feats = extractor([novel]).numpy()[0]
    for k, (_, row, col) in enumerate(added):
        np.testing.assert_allclose(new_model.bank[len(model.bank) + k], feats[row, col], atol=1e-4)
    assert after.images[-1].thumbnail is not None
    # a model without provenance gains none: half known would mislead
    bare, _ = feedback.update_class_model(replace(model, provenance=None), extractor, [novel], ["r"])
    assert bare.provenance is None


def test_out_of_fold_scores_never_see_the_images_own_patches(
    patchcore: tuple[ClassModel, FeatureExtractor],
) -> None:
    """Two shots of the same novel part: in one group (one fold) each is scored against the original bank
    only; in two folds each is scored against the other's patches, never its own."""
    model, extractor = patchcore
    images, ids = [_novel(200), _novel(201)], ["r1", "r2"]
    _, one_fold = feedback.update_class_model(model, extractor, images, ids, groups=["part", "part"])
    assert one_fold["folds"] == 1
    np.testing.assert_allclose(one_fold["out_of_fold_scores"], one_fold["scores_before"], rtol=1e-5)
    new, two = feedback.update_class_model(model, extractor, images, ids, folds=2, threshold="pooled")
    assert two["folds"] == 2
    oof, in_bank = np.array(two["out_of_fold_scores"]), np.array(two["scores_after"])
    assert (oof < np.array(two["scores_before"])).all()  # the other shot taught the bank something
    assert (oof > in_bank + 1e-3).all()  # but not the image's own patches
    stored = np.array(model.card["threshold"]["good_scores"])
    expected = calibrate(np.concatenate([stored, oof]), model.config.target_false_alarm_rate)
    assert new.calibration.threshold == pytest.approx(expected.threshold)
    assert new.card["threshold"]["n_images"] == len(stored) + 2


def test_kept_threshold_is_the_training_one(patchcore: tuple[ClassModel, FeatureExtractor]) -> None:
    model, extractor = patchcore
    new, report = feedback.update_class_model(model, extractor, [_novel(300)], ["r"])
    assert report["threshold_policy"] == "keep"
    assert new.calibration == model.calibration
    assert new.card["threshold"]["good_scores"] == model.card["threshold"]["good_scores"]
    with pytest.raises(DataError, match="threshold policy"):
        feedback.update_class_model(model, extractor, [_novel(300)], ["r"], threshold="median")
    # an older card without its leave-one-out scores can keep its threshold, not refit it
    bare = replace(model, card={**model.card, "threshold": model.calibration.to_dict()})
    kept, _ = feedback.update_class_model(bare, extractor, [_novel(300)], ["r"])
    assert kept.calibration == model.calibration
    with pytest.raises(DataError, match="no stored leave-one-out"):
        feedback.update_class_model(bare, extractor, [_novel(300)], ["r"], threshold="pooled")


def test_card_records_the_update(patchcore: tuple[ClassModel, FeatureExtractor]) -> None:
    model, extractor = patchcore
    new, report = feedback.update_class_model(model, extractor, [_novel(400), _part(401)], ["a", "b"])
    (record,) = new.card["updates"]
    assert record["review_ids"] == ["a", "b"] and record["n_images"] == 2
    for key in ("patches_added", "bank_before", "bank_after", "coverage_radius", "threshold_before"):
        assert record[key] == report[key]
    assert record["threshold_after"] == new.calibration.threshold and record["seconds"] > 0
    # the previous version's test metrics do not describe this one
    assert "metrics" not in new.card and record["metrics_before"] == {"image_auroc": 1.0}
    with pytest.raises(DataError, match="already learned"):
        feedback.update_class_model(new, extractor, [_novel(402)], ["b"])


def test_softpatch_patches_get_the_median_weight() -> None:
    model, extractor = _train("softpatch")
    assert model.weights is not None
    new, report = feedback.update_class_model(model, extractor, [_novel(500)], ["r"])
    added = new.weights[len(model.weights) :]
    assert len(added) == report["patches_added"] > 0
    np.testing.assert_allclose(added, np.median(model.weights))
    assert report["new_patch_weight"] == pytest.approx(float(np.median(model.weights)))
    assert _scores(new, extractor, [_novel(500)])[0] == pytest.approx(report["scores_after"][0], rel=1e-4)


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_update_artifact_changes_one_class_and_fixes_its_false_alarm(
    patchcore: tuple[ClassModel, FeatureExtractor], tmp_path: Path
) -> None:
    model, _ = patchcore
    other = replace(model, class_name="gadget", card={**model.card, "class_name": "gadget"})
    src, out = tmp_path / "model.tar.gz", tmp_path / "updated.tar.gz"
    save_artifact(src, {"widget": model, "gadget": other})
    reviewed = [_novel(600), _novel(601)]
    before = Predictor(src).predict("widget", [_png(img) for img in reviewed])
    assert all(p.is_anomaly for p in before)  # false alarms: a reviewer said good
    report = feedback.update_artifact(src, "widget", [_png(img) for img in reviewed], ["x1", "x2"], out)
    after = Predictor(out).predict("widget", [_png(img) for img in reviewed])
    assert not any(p.is_anomaly for p in after)
    assert [p.anomaly_score for p in after] == pytest.approx(report["scores_after"], rel=1e-4)
    old, new = _members(src), _members(out)
    gadget = [n for n in old if n.startswith("classes/gadget/")]
    assert gadget and all(new[n] == old[n] for n in gadget)
    assert new["classes/widget/bank.npy"] != old["classes/widget/bank.npy"]
    loaded = load_artifact(out)
    assert loaded.get("widget").card["updates"][0]["review_ids"] == ["x1", "x2"]
    assert report["model_version"] == loaded.model_version != report["model_version_before"]


def test_update_artifact_refuses_bad_input(
    patchcore: tuple[ClassModel, FeatureExtractor], tmp_path: Path
) -> None:
    model, _ = patchcore
    src = tmp_path / "model.tar.gz"
    save_artifact(src, {"widget": model})
    with pytest.raises(DataError, match="no reviewed images"):
        feedback.update_artifact(src, "widget", [], [], tmp_path / "out.tar.gz")
    with pytest.raises(DataError, match="capsule"):
        feedback.update_artifact(src, "capsule", [_png(_part(1))], ["r"], tmp_path / "out.tar.gz")
    with pytest.raises(DataError, match="one id per image"):
        feedback.update_artifact(src, "widget", [_png(_part(1))], ["r", "s"], tmp_path / "out.tar.gz")
    with pytest.raises(DataError, match="repeat"):
        feedback.update_artifact(src, "widget", [_png(_part(1))] * 2, ["r", "r"], tmp_path / "out.tar.gz")
    assert not (tmp_path / "out.tar.gz").exists()
