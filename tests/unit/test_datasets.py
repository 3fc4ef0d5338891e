"""Data sets: decoding odd images, refusing bad ones, MVTec layout folders, ELPV and the noise protocols."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_server.engine.images import read_image
from model_server.errors import DataError, ImageError, IvadasError, UnknownClassError
from model_server.training.datasets import list_classes, load_split
from model_server.training.elpv import ELPV_MAX_TRAIN, ELPV_TEST_GOOD, load_elpv_split
from model_server.training.protocols import apply_noise
from model_server.training.samples import ClassSplit, Sample, read_mask
from tests.paths import require_bottle

H, W = 37, 53  # odd sizes on purpose


def _rgb(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, img: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def _mask(path: Path, h: int = H, w: int = W) -> Path:
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : h // 2, w // 4 : w // 2] = 255
    return _save(path, Image.fromarray(m))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims a huge size (a decompression bomb), without the pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def mvtec_root(tmp_path: Path) -> Path:
    """A small MVTec-layout tree with every awkward case the loader must handle."""
    root = tmp_path / "mvtec"
    good = root / "widget" / "train" / "good"
    _save(good / "000.png", Image.fromarray(_rgb(0)))
    _save(good / "001.jpg", Image.fromarray(_rgb(1)), quality=90)
    _save(good / "002.png", Image.fromarray(_rgb(2)[:, :, 0]))  # grey
    _save(good / "003.png", Image.fromarray(np.dstack([_rgb(3), np.full((H, W), 128, np.uint8)])))  # RGBA
    _save(good / "004.png", Image.fromarray(np.full((H, W), 40000, np.uint16)))  # 16-bit grey
    _save(good / "005.PNG", Image.fromarray(_rgb(5)))  # upper-case extension
    (good / "notes.txt").write_text("not an image")
    (good / ".DS_Store").write_bytes(b"\0\0")

    test = root / "widget" / "test"
    _save(test / "good" / "000.png", Image.fromarray(_rgb(10)))
    for i in range(3):
        _save(test / "crack" / f"{i:03d}.png", Image.fromarray(_rgb(20 + i)))
    for i in range(2):
        _save(test / "stain" / f"{i:03d}.jpg", Image.fromarray(_rgb(30 + i)))
    gt = root / "widget" / "ground_truth"
    _mask(gt / "crack" / "000_mask.png")
    _mask(gt / "crack" / "001_mask.png", h=2 * H, w=2 * W)  # stored at another size than its image
    # crack/002 has no mask file
    _mask(gt / "stain" / "000.png")  # bare "<stem>.png" is accepted too
    _mask(gt / "stain" / "001_mask.png")

    (root / "not_a_class" / "test").mkdir(parents=True)  # no train/good: not listed
    (root / "empty" / "train" / "good").mkdir(parents=True)
    (root / "notrain" / "test" / "good").mkdir(parents=True)
    return root


# ----------------------------------------------------------------------------------------------- read_image


def test_read_image_modes_all_become_rgb_uint8(mvtec_root: Path) -> None:
    good = mvtec_root / "widget" / "train" / "good"
    for name in ["000.png", "001.jpg", "002.png", "003.png", "004.png", "005.PNG"]:
        img = read_image(good / name)
        assert img.shape == (H, W, 3) and img.dtype == np.uint8, name
        assert img.flags.c_contiguous and img.flags.writeable
    assert np.array_equal(read_image(good / "000.png"), _rgb(0))
    grey = read_image(good / "002.png")
    assert np.array_equal(grey[:, :, 0], _rgb(2)[:, :, 0]) and np.array_equal(grey[:, :, 0], grey[:, :, 2])
    half = (_rgb(3).astype(int) * 128 + 127) // 255  # alpha 128: composited on black (see images._to_rgb)
    assert np.abs(read_image(good / "003.png").astype(int) - half).max() <= 1
    assert np.all(read_image(good / "004.png") == round(40000 / 257))


def test_read_image_16bit_scales_full_range(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 128, 65535]], np.uint16)
    img = read_image(_save(tmp_path / "g16.png", Image.fromarray(values)), min_side=1)  # 3x1: no minimum
    assert img[0, :, 0].tolist() == [0, 128, 255]
    img32 = read_image(_save(tmp_path / "g32.tif", Image.fromarray(values.astype(np.int32))), min_side=1)
    assert img32[0, :, 0].tolist() == [0, 128, 255]


def test_read_image_palette_la_and_bytes(tmp_path: Path) -> None:
    rgb = Image.fromarray(_rgb(7))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)
    img = read_image(buf.getvalue(), name="cam1/pal.png")
    transparent = np.asarray(pal) == 0  # composited on black (see images._to_rgb)
    assert np.array_equal(img, np.where(transparent[..., None], 0, np.asarray(pal.convert("RGB"))))
    la = Image.fromarray(_rgb(8)[:, :, 0]).convert("LA")
    img = read_image(_save(tmp_path / "la.png", la))
    assert img.shape == (H, W, 3) and np.array_equal(img[:, :, 1], _rgb(8)[:, :, 0])


def test_read_image_applies_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees
    path = _save(tmp_path / "rot.jpg", Image.fromarray(_rgb(9)), exif=exif.tobytes())
    assert read_image(path).shape == (W, H, 3)
    sample = Sample("rot.jpg", 1, "crack", path=path, mask_path=_mask(tmp_path / "rot_mask.png"))
    assert sample.load_mask().shape == (W, H)  # mask resized to the displayed image size


def _assert_refused(source, match: str, **kwargs) -> ImageError:
    with pytest.raises(ImageError, match=match) as info:
        read_image(source, **kwargs)
    assert "\n" not in str(info.value)
    return info.value


def test_read_image_refusals_name_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    _assert_refused(empty, r"empty\.png.*0 bytes")

    text = tmp_path / "text.png"
    text.write_text("hello, I am not a PNG\n")
    _assert_refused(text, r"text\.png.*not an image")

    full = _save(tmp_path / "full.png", Image.fromarray(_rgb(0, 200, 200)))  # noise: barely compresses
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    _assert_refused(truncated, r"truncated\.png.*truncated")

    _assert_refused(tmp_path / "absent.png", r"absent\.png.*cannot read")
    _assert_refused(tmp_path, r"folder")
    _assert_refused(b"", r"s3://inbox/a\.png.*0 bytes", name="s3://inbox/a.png")
    _assert_refused(b"GIF89a-garbage", r"s3://inbox/b\.gif.*corrupt GIF", name="s3://inbox/b.gif")


def test_read_image_pixel_limit_and_bombs(tmp_path: Path) -> None:
    small = _save(tmp_path / "small.png", Image.fromarray(_rgb(0)))
    _assert_refused(small, r"small\.png.*over the limit of 1,000 pixels", max_pixels=1000)
    assert read_image(small, max_pixels=H * W).shape == (H, W, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bomb must be an ImageError, never a warning
        # over our limit only / over PIL's warning limit / over PIL's error limit: all refused from the header
        for w, h in [(8000, 6000), (10_000, 10_000), (20_000, 20_000)]:
            bomb = _png_header_only(tmp_path / f"bomb_{w}.png", w, h)
            _assert_refused(bomb, rf"bomb_{w}\.png.*(over the limit|too large)")


def test_read_mask_nonzero_is_defect(tmp_path: Path) -> None:
    m = np.zeros((5, 7), np.uint8)
    m[1, 2] = 1
    m[3, 4] = 255
    got = read_mask(_save(tmp_path / "m.png", Image.fromarray(m)))
    assert got.dtype == bool and got.shape == (5, 7) and got.sum() == 2 and got[1, 2] and got[3, 4]
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[0, 0, 2] = 200
    assert read_mask(_save(tmp_path / "rgb.png", Image.fromarray(rgb))).sum() == 1
    with pytest.raises(ImageError, match="nope"):
        read_mask(tmp_path / "nope.png")


# ----------------------------------------------------------------------------------------------- MVTec layout


def test_list_classes(mvtec_root: Path) -> None:
    assert list_classes(mvtec_root) == ["empty", "widget"]
    assert list_classes("elpv") == ["elpv_mono", "elpv_poly"]
    with pytest.raises(DataError):
        list_classes(mvtec_root / "missing")


def test_load_split_layout(mvtec_root: Path) -> None:
    split = load_split(mvtec_root, "widget")
    assert isinstance(split, ClassSplit) and split.class_name == "widget" and str(mvtec_root) in split.source
    expected = ["000.png", "001.jpg", "002.png", "003.png", "004.png", "005.PNG"]  # no .txt, no hidden files
    assert [s.name for s in split.train] == [f"train/good/{n}" for n in expected]
    assert all(s.label == 0 and s.defect_type == "good" and s.mask_path is None for s in split.train)

    by_name = {s.name: s for s in split.test}
    assert list(by_name) == [
        "test/crack/000.png",
        "test/crack/001.png",
        "test/crack/002.png",
        "test/good/000.png",
        "test/stain/000.jpg",
        "test/stain/001.jpg",
    ]
    assert [s.label for s in split.test] == [1, 1, 1, 0, 1, 1]
    assert by_name["test/crack/000.png"].mask_path.name == "000_mask.png"
    assert by_name["test/crack/002.png"].mask_path is None
    assert by_name["test/stain/000.jpg"].mask_path.name == "000.png"
    assert by_name["test/good/000.png"].load_mask() is None
    assert split.has_masks

    m0 = by_name["test/crack/000.png"].load_mask()
    assert m0.dtype == bool and m0.shape == (H, W) and m0.any()
    m1 = by_name["test/crack/001.png"].load_mask()  # stored at 2x size: resized to the image
    assert m1.shape == (H, W) and np.array_equal(m1, m0)
    assert by_name["test/crack/001.png"].load_mask(image_shape=(H, W)).shape == (H, W)
    assert by_name["test/crack/002.png"].load_mask() is None
    assert by_name["test/stain/001.jpg"].load_rgb().shape == (H, W, 3)

    assert load_split(str(mvtec_root), "widget") == split  # deterministic, str or Path


def test_load_split_optional_test_and_ground_truth(mvtec_root: Path) -> None:
    import shutil

    shutil.rmtree(mvtec_root / "widget" / "ground_truth")
    split = load_split(mvtec_root, "widget")
    assert len(split.test) == 6 and all(s.mask_path is None for s in split.test) and not split.has_masks
    shutil.rmtree(mvtec_root / "widget" / "test")
    split = load_split(mvtec_root, "widget")
    assert split.test == [] and len(split.train) == 6 and not split.has_masks


def test_load_split_errors(mvtec_root: Path) -> None:
    with pytest.raises(UnknownClassError, match=r"'gizmo'.*available: empty, widget"):
        load_split(mvtec_root, "gizmo")
    for bad in ["", "..", "../mvtec/widget"]:
        with pytest.raises(UnknownClassError):
            load_split(mvtec_root, bad)
    with pytest.raises(DataError, match=r"empty[/\\]train[/\\]good holds no images"):
        load_split(mvtec_root, "empty")
    with pytest.raises(DataError, match=r"notrain[/\\]train[/\\]good is missing"):
        load_split(mvtec_root, "notrain")
    with pytest.raises(DataError, match="does not exist"):
        load_split(mvtec_root / "nowhere", "widget")
    assert issubclass(UnknownClassError, IvadasError)


# ----------------------------------------------------------------------------------------------- protocols


def _fake_split(counts: dict[str, int], n_train: int = 20, n_test_good: int = 5) -> ClassSplit:
    train = [Sample(f"train/good/{i:03d}.png", 0, "good") for i in range(n_train)]
    test = [Sample(f"test/good/{i:03d}.png", 0, "good") for i in range(n_test_good)]
    for defect, n in counts.items():
        test += [
            Sample(f"test/{defect}/{i:03d}.png", 1, defect, mask_path=Path(f"{i}.png")) for i in range(n)
        ]
    return ClassSplit("fake", train, test, "synthetic")


def test_apply_noise_moves_without_overlap() -> None:
    split = _fake_split({"a": 20, "b": 10, "c": 3})
    noisy = apply_noise(split, 0.1, seed=0)
    moved = [s for s in noisy.train if s.label == 1]
    assert len(moved) == 3  # round(0.1 * 33)
    assert sorted(s.defect_type for s in moved) == ["a", "a", "b"]  # proportional, largest remainders
    assert {s.name for s in noisy.train}.isdisjoint(s.name for s in noisy.test)
    assert len(noisy.train) == 23 and len(noisy.test) == len(split.test) - 3
    assert sorted(s.name for s in noisy.train + noisy.test) == sorted(
        s.name for s in split.train + split.test
    )
    assert len(split.train) == 20 and len(split.test) == 38  # input untouched
    assert apply_noise(split, 0.1, seed=0) == noisy  # seeded
    assert "noise ratio 0.1" in noisy.source

    big = apply_noise(split, 0.5, seed=1)
    per_type = {d: sum(s.defect_type == d for s in big.train) for d in "abc"}
    assert per_type == {"a": 10, "b": 5, "c": 2}  # 16.5 -> 17 spread over types
    assert sum(s.label for s in big.test) == 33 - 17


def test_apply_noise_edge_cases() -> None:
    split = _fake_split({"a": 4})
    same = apply_noise(split, 0.0)
    assert same == split and same.train is not split.train and same.test is not split.test
    for ratio in [1.0, -0.1, 1.5, float("nan")]:
        with pytest.raises(ValueError):
            apply_noise(split, ratio)
    assert sum(s.label for s in apply_noise(split, 0.01).train) == 1  # at least one when ratio > 0
    assert sum(s.label for s in apply_noise(split, 0.99).test) == 1  # the test set keeps one anomaly
    with pytest.raises(DataError, match="anomalous"):
        apply_noise(_fake_split({}), 0.1)


# ----------------------------------------------------------------------------------------------- ELPV


@pytest.mark.parametrize("class_name, n_bad, n_good", [("elpv_mono", 313, 588), ("elpv_poly", 402, 920)])
def test_elpv_split(class_name: str, n_bad: int, n_good: int) -> None:
    pytest.importorskip("elpv_dataset")
    split = load_split("elpv", class_name)
    assert split.class_name == class_name and not split.has_masks
    assert ELPV_MAX_TRAIN is None  # every defect-free cell that is not a test image trains
    assert len(split.train) == n_good - ELPV_TEST_GOOD and all(s.label == 0 for s in split.train)
    assert sum(s.label == 0 for s in split.test) == ELPV_TEST_GOOD
    assert sum(s.label == 1 for s in split.test) == n_bad
    names = [s.name for s in split.train + split.test]
    assert len(set(names)) == len(names)  # no cell both trained on and tested
    assert all(s.path.is_file() and s.mask_path is None for s in split.train[:5] + split.test[-5:])
    assert split.train[0].load_rgb().shape == (300, 300, 3)
    assert load_elpv_split(class_name, seed=0) == split
    other = load_elpv_split(class_name, seed=1, max_train=50)
    assert len(other.train) == 50 and {s.name for s in other.train} != {s.name for s in split.train[:50]}


def test_elpv_unknown_class() -> None:
    with pytest.raises(UnknownClassError, match="elpv_mono, elpv_poly"):
        load_split("elpv", "elpv_thin")


# ----------------------------------------------------------------------------------------------- real data


@pytest.mark.mvtec
def test_real_bottle_counts() -> None:
    root = require_bottle()
    split = load_split(root, "bottle")
    assert "bottle" in list_classes(root)
    assert len(split.train) == 209 and len(split.test) == 83
    anomalous = [s for s in split.test if s.label == 1]
    assert len(anomalous) == 63 and all(s.mask_path is not None and s.mask_path.is_file() for s in anomalous)
    assert {s.defect_type for s in anomalous} == {"broken_large", "broken_small", "contamination"}
    sample = anomalous[0]
    image, mask = sample.load_rgb(), sample.load_mask()
    assert image.shape[:2] == mask.shape and mask.any()
