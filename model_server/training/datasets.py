"""Data sets in the MVTec AD folder layout (any folder laid out the same way), and the one entry point that
also serves the ELPV demo.

Everything here is deterministic (sorted listings), so a model trained twice on the same folder sees the
same samples in the same order. Input problems raise `IvadasError` subclasses with a one-line message that
names the file or folder, because the CLI and the model server show those messages to users.
"""

from __future__ import annotations

import os
from pathlib import Path

from ivadas_contract.images import IMAGE_SUFFIXES, has_image_suffix
from model_server.errors import DataError, UnknownClassError
from model_server.training.elpv import ELPV_CLASSES, ELPV_ROOT, load_elpv_split
from model_server.training.samples import ClassSplit, Sample


def _is_elpv(data_root: str | Path) -> bool:
    # Path("./elpv") also reads as "elpv": a real folder with that name must be given by an absolute path.
    return os.fspath(data_root) == ELPV_ROOT


def _list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name; hidden files (".DS_Store", "._x.png") are skipped."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and has_image_suffix(p.name) and not p.name.startswith(".")
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
        exts = " ".join(IMAGE_SUFFIXES)
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
