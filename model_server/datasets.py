"""Data sets: image decoding, MVTec AD layout folders, the ELPV demo, noise injection and threshold holdout.

Everything here is deterministic (sorted listings, seeded choices), so a model trained twice on the same
folder sees the same samples in the same order. Input problems raise `IvadasError` subclasses with a one-line
message that names the file or folder, because the CLI and the model server show those messages to users.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from model_server.errors import DataError, ImageError, UnknownClassError

#: Largest image (width * height) that `read_image` decodes. A 40 MP image is 120 MB as RGB, already far
#: more than any inspection camera sends; anything larger is refused before its pixels are decoded.
MAX_PIXELS = 40_000_000

#: File extensions (lower case) treated as images when listing data set folders.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

#: `data_root` value that selects the ELPV demo data shipped in the `elpv-dataset` wheel instead of a folder.
ELPV_ROOT = "elpv"
ELPV_CLASSES = ("elpv_mono", "elpv_poly")
#: Defect-free ELPV cells per type held out as good test images.
ELPV_TEST_GOOD = 100
#: At most this many defect-free cells per type are used for training: enough for a memory bank, and small
#: enough that the demo trains in about a minute on two CPU cores.
ELPV_MAX_TRAIN = 250

_GREY_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


# ------------------------------------------------------------------------------------------ images


def _label(source: str | Path | bytes, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, bytes | bytearray | memoryview):
        return "<image bytes>"
    return str(source)


def _open_loaded(source: str | Path | bytes, name: str | None, max_pixels: int) -> Image.Image:
    """Open, size-check and fully decode an image, turning every failure into an `ImageError`.

    The size is checked from the header, before the pixels are decoded, so a decompression bomb costs nothing.
    PIL's own bomb guard (a warning above `Image.MAX_IMAGE_PIXELS`, an error above twice that) stays in place
    as a backstop; its warning is silenced here because the explicit limit below already refuses the image.
    """
    label = _label(source, name)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if not data:
            raise ImageError(f"{label}: empty image (0 bytes)")
        fp: io.BytesIO | Path = io.BytesIO(data)
    else:
        fp = Path(source)
        try:
            size = fp.stat().st_size
        except OSError as exc:
            raise ImageError(f"{label}: cannot read file ({exc.strerror or exc})") from None
        if fp.is_dir():
            raise ImageError(f"{label}: is a folder, not an image file")
        if size == 0:
            raise ImageError(f"{label}: empty file (0 bytes)")
    img = result = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
        width, height = img.size
        if width * height > max_pixels:
            raise ImageError(
                f"{label}: image is {width}x{height} = {width * height:,} pixels, over the limit of "
                f"{max_pixels:,} pixels"
            )
        img.load()  # decode now, so truncated or corrupt pixel data fails here and not later
        result = ImageOps.exif_transpose(img)
        return result
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{label}: image is too large ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{label}: not an image, or a format that cannot be read") from None
    except (OSError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{label}: truncated or corrupt image data ({exc})") from None
    except Exception as exc:  # hostile files make decoders raise anything (struct.error, IndexError, ...)
        raise ImageError(f"{label}: cannot decode image ({type(exc).__name__}: {exc})") from None
    finally:
        if img is not None and img is not result:
            img.close()


def _to_rgb(img: Image.Image, label: str) -> np.ndarray:
    """Any PIL mode to HxWx3 uint8. 16-bit and 32-bit grey map 0..65535 linearly onto 0..255, not per image
    min-max: a stretch per image would hide defects that change overall brightness."""
    mode = img.mode
    if mode in _GREY_16BIT_MODES or mode == "I":
        grey = np.asarray(img).astype(np.int64)
        grey = ((np.clip(grey, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    try:
        if mode in ("P", "PA"):  # via RGBA so palette transparency is handled, then alpha dropped
            img = img.convert("RGBA")
        if img.mode != "RGB":
            img = img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(f"{label}: unsupported colour mode {mode} ({exc})") from None
    return np.array(img, dtype=np.uint8)


def read_image(
    source: str | Path | bytes, name: str | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode an image file or encoded bytes into an HxWx3 uint8 RGB array, in its EXIF display orientation.

    Accepts whatever PIL reads (PNG, JPEG, BMP, TIFF, ...) in grey, grey+alpha, RGBA (alpha dropped), palette
    and 16-bit grey. Raises `ImageError` naming the file (or `name`, e.g. an S3 key for bytes) and the reason.
    """
    label = _label(source, name)
    img = _open_loaded(source, name, max_pixels)
    try:
        return _to_rgb(img, label)
    finally:
        img.close()


def read_mask(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a ground-truth mask as a bool HxW array (any nonzero value is defect), at its stored size."""
    img = _open_loaded(path, None, max_pixels)
    try:
        if img.mode in ("1", "L", "I", "F") or img.mode in _GREY_16BIT_MODES:
            return np.asarray(img) != 0
        if img.mode in ("P", "PA"):
            img = img.convert("RGBA")
        return np.asarray(img.convert("RGB")).any(axis=2)
    finally:
        img.close()


def _display_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image as `read_image` returns it, from the header only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    with img:
        width, height = img.size
        if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientations that swap the axes
            width, height = height, width
    return height, width


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.resize((width, height), Image.Resampling.NEAREST)) > 0


# ------------------------------------------------------------------------------------------ samples


@dataclass(frozen=True)
class Sample:
    """One image of a data set, loaded lazily so listing a data set stays cheap.

    `name` is unique within its class (for folders: the path relative to the class folder, e.g.
    "test/broken_large/000.png"); it survives moving a sample from test to train. `loader` serves images that
    have no file; it is left out of equality and repr.
    """

    name: str
    label: int  # 0 good, 1 anomalous
    defect_type: str  # "good" for good samples
    path: Path | None = None
    mask_path: Path | None = None
    loader: Callable[[], np.ndarray] | None = field(default=None, compare=False, repr=False)

    def load_rgb(self) -> np.ndarray:
        """The image as HxWx3 uint8 RGB."""
        if self.path is not None:
            return read_image(self.path)
        if self.loader is not None:
            return self.loader()
        raise DataError(f"sample {self.name} has neither a file nor a loader")

    def load_mask(self, image_shape: tuple[int, int] | None = None) -> np.ndarray | None:
        """The defect mask as bool HxW at the image's size, or None when there is no mask file.

        None on a good sample means all zeros. A mask stored at another size than its image is resized
        (nearest neighbour) to the image size; pass `image_shape` (H, W) when the image is already loaded to
        save reading its header.
        """
        if self.mask_path is None:
            return None
        mask = read_mask(self.mask_path)
        if image_shape is None:
            if self.path is not None:
                try:
                    image_shape = _display_size(self.path)
                except Exception:  # let read_image produce the proper error message
                    image_shape = read_image(self.path).shape[:2]
            else:
                image_shape = self.load_rgb().shape[:2]
        shape = (int(image_shape[0]), int(image_shape[1]))
        if mask.shape != shape:
            mask = _resize_mask(mask, shape)
        return mask


@dataclass
class ClassSplit:
    """Train and test samples of one product class. `source` says where they came from (for model cards)."""

    class_name: str
    train: list[Sample]
    test: list[Sample]
    source: str

    @property
    def has_masks(self) -> bool:
        """True when pixel-level metrics can be computed: some anomalous test sample has a mask."""
        return any(s.label == 1 and s.mask_path is not None for s in self.test)


# ------------------------------------------------------------------------------------------ MVTec


def _is_elpv(data_root: str | Path) -> bool:
    # Path("./elpv") also reads as "elpv": a real folder with that name must be given by an absolute path.
    return os.fspath(data_root) == ELPV_ROOT


def _list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name; hidden files (".DS_Store", "._x.png") are skipped."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def list_classes(data_root: str | Path) -> list[str]:
    """Class names under a data root: subfolders that have train/good; "elpv" gives the ELPV demo classes."""
    if _is_elpv(data_root):
        return list(ELPV_CLASSES)
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder")
    return sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())


def _mask_index(folder: Path) -> dict[str, Path]:
    """Image stem -> mask file in a ground_truth/<defect> folder: "<stem>_mask.<ext>" or "<stem>.<ext>"."""
    index: dict[str, Path] = {}
    if not folder.is_dir():
        return index
    for path in _list_images(folder):
        stem = path.stem
        if stem.endswith("_mask"):
            index[stem[: -len("_mask")]] = path  # the official name wins over a bare "<stem>.png"
        else:
            index.setdefault(stem, path)
    return index


def load_split(data_root: str | Path, class_name: str) -> ClassSplit:
    """Train/test samples of one class: the ELPV demo when `data_root` is "elpv", else MVTec AD layout
    data_root/class_name/{train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png}.

    The test and ground_truth folders are optional (no test samples, no masks). Raises `UnknownClassError`
    when the class folder is absent and `DataError` when train/good is missing or holds no images.
    """
    if _is_elpv(data_root):
        return load_elpv_split(class_name)
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder")
    class_dir = root / class_name
    if (
        not class_name
        or class_name in (".", "..")
        or Path(class_name).name != class_name
        or not class_dir.is_dir()
    ):
        available = ", ".join(list_classes(root)) or "none"
        raise UnknownClassError(f"class '{class_name}' not found under {root} (available: {available})")

    good_dir = class_dir / "train" / "good"
    if not good_dir.is_dir():
        raise DataError(f"{good_dir} is missing: a class folder needs train/good/ with defect-free images")
    train = [
        Sample(name=f"train/good/{p.name}", label=0, defect_type="good", path=p)
        for p in _list_images(good_dir)
    ]
    if not train:
        exts = " ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(f"{good_dir} holds no images (looked for {exts})")

    test: list[Sample] = []
    test_dir = class_dir / "test"
    if test_dir.is_dir():
        for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            defect = defect_dir.name
            label = 0 if defect == "good" else 1
            masks = {} if label == 0 else _mask_index(class_dir / "ground_truth" / defect)
            for p in _list_images(defect_dir):
                test.append(
                    Sample(
                        name=f"test/{defect}/{p.name}",
                        label=label,
                        defect_type=defect,
                        path=p,
                        mask_path=masks.get(p.stem),
                    )
                )
    return ClassSplit(class_name, train=train, test=test, source=f"MVTec AD layout folder {class_dir}")


# ------------------------------------------------------------------------------------------ ELPV


def _elpv_records() -> tuple[Path, str, list[tuple[str, float, str]]]:
    """(images folder, package version, [(file name, defect probability, type)]) without decoding images."""
    try:
        import elpv_dataset
    except ImportError:
        raise DataError("the ELPV demo needs the elpv-dataset package: pip install elpv-dataset") from None
    data_dir = Path(elpv_dataset.__file__).parent / "data"
    labels = data_dir / "labels.csv"
    try:
        lines = labels.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"cannot read ELPV labels {labels}: {exc}") from None
    records = []
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue
        rel, prob, cell_type = parts
        records.append((Path(rel).name, float(prob), cell_type))
    version = getattr(elpv_dataset, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as dist_version

            version = dist_version("elpv-dataset")
        except Exception:
            version = "unknown"
    return data_dir / "images", version, records


def load_elpv_split(
    class_name: str, seed: int = 0, max_train: int = ELPV_MAX_TRAIN, n_test_good: int = ELPV_TEST_GOOD
) -> ClassSplit:
    """ELPV solar cells of one type ("elpv_mono" or "elpv_poly") as an anomaly detection task.

    Defect-free cells (probability 0) are shuffled with `seed`: the first `n_test_good` are good test samples,
    the next `max_train` the training set. Cells with probability 1.0 are the anomalous test samples; the
    uncertain ones (1/3, 2/3) are left out. ELPV has image labels only, so there are no masks. Samples point
    at the PNG files inside the installed package and are decoded lazily.
    """
    if class_name not in ELPV_CLASSES:
        raise UnknownClassError(
            f"class '{class_name}' not found in the ELPV demo (available: {', '.join(ELPV_CLASSES)})"
        )
    cell_type = class_name.removeprefix("elpv_")
    images_dir, version, records = _elpv_records()
    good = sorted(r[0] for r in records if r[2] == cell_type and r[1] == 0.0)
    bad = sorted(r[0] for r in records if r[2] == cell_type and abs(r[1] - 1.0) < 1e-6)
    if len(good) <= n_test_good or not bad:
        raise DataError(f"ELPV labels list too few {cell_type} cells: {len(good)} good, {len(bad)} defective")
    order = np.random.default_rng(seed).permutation(len(good))
    test_good = sorted(good[i] for i in order[:n_test_good])
    train_good = sorted(good[i] for i in order[n_test_good : n_test_good + max_train])

    def sample(fname: str, label: int) -> Sample:
        defect_type = "good" if label == 0 else "defect"
        return Sample(name=fname, label=label, defect_type=defect_type, path=images_dir / fname)

    return ClassSplit(
        class_name=class_name,
        train=[sample(f, 0) for f in train_good],
        test=[sample(f, 0) for f in test_good] + [sample(f, 1) for f in bad],
        source=(
            f"elpv-dataset {version}, {cell_type} cells, seed {seed}: train {len(train_good)} defect-free, "
            f"test {len(test_good)} defect-free + {len(bad)} with defect probability 1"
        ),
    )


# ------------------------------------------------------------------------------------------ protocols


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _apportion(total: int, counts: dict[str, int]) -> dict[str, int]:
    """Split `total` across groups in proportion to their sizes (largest remainder; ties by group name)."""
    n = sum(counts.values())
    exact = {k: total * c / n for k, c in counts.items()}
    quota = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(quota.values())
    for k in sorted(counts, key=lambda k: (-(exact[k] - quota[k]), k))[:left]:
        quota[k] += 1
    return quota


def apply_noise(split: ClassSplit, ratio: float, seed: int = 0) -> ClassSplit:
    """SoftPatch's no-overlap noise protocol: move anomalous test samples into the training set.

    round(ratio * n_anomalous_test) samples (half up; at least 1 when ratio > 0, at most all but one so the
    test set keeps an anomalous sample) are drawn with `seed`, spread over defect types in proportion to their
    sizes. They keep label 1 in train so reports can count the noise, and leave the test set so no image is
    both trained on and scored. Returns a new split; the input is unchanged.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"noise ratio must be in [0, 1), got {ratio}")
    if ratio == 0.0:
        return ClassSplit(split.class_name, list(split.train), list(split.test), split.source)
    anomalous = [s for s in split.test if s.label == 1]
    if len(anomalous) < 2:
        raise DataError(
            f"class {split.class_name} has {len(anomalous)} anomalous test images: noise ratio {ratio} needs "
            "at least 2 (one to move into train, one left to test)"
        )
    n_move = min(max(1, _round_half_up(ratio * len(anomalous))), len(anomalous) - 1)
    by_type: dict[str, list[Sample]] = {}
    for s in anomalous:
        by_type.setdefault(s.defect_type, []).append(s)
    quota = _apportion(n_move, {k: len(v) for k, v in by_type.items()})
    rng = np.random.default_rng(seed)
    moved: list[Sample] = []
    for defect in sorted(by_type):
        group = by_type[defect]
        picks = rng.permutation(len(group))[: quota[defect]]
        moved.extend(group[i] for i in sorted(picks))
    moved_names = {s.name for s in moved}
    return ClassSplit(
        class_name=split.class_name,
        train=list(split.train) + moved,
        test=[s for s in split.test if s.name not in moved_names],
        source=f"{split.source}; noise ratio {ratio} seed {seed}: {len(moved)} anomalous images in train",
    )


def split_holdout(
    train: list[Sample], fraction: float = 0.1, seed: int = 0, min_holdout: int = 3
) -> tuple[list[Sample], list[Sample]]:
    """Hold out good training images for threshold calibration; returns (fit, holdout).

    Only label-0 samples are held out (anomalous noise samples always stay in fit). The holdout size is
    round(fraction * n_good), at least `min_holdout`, and at most n_good - min_holdout so fitting keeps some
    good images. With fewer than 2 * min_holdout good images (or fraction 0) the holdout is empty and the
    caller must calibrate another way. Both lists keep the input order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    good = [i for i, s in enumerate(train) if s.label == 0]
    if fraction == 0.0 or len(good) < 2 * min_holdout:
        return list(train), []
    k = min(max(min_holdout, _round_half_up(fraction * len(good))), len(good) - min_holdout)
    chosen = {good[i] for i in np.random.default_rng(seed).permutation(len(good))[:k]}
    fit = [s for i, s in enumerate(train) if i not in chosen]
    holdout = [s for i, s in enumerate(train) if i in chosen]
    return fit, holdout
