"""The ELPV demo data set: electroluminescence images of solar cells shipped in the `elpv-dataset` wheel, as
an anomaly detection task (no download, image labels only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_server.errors import DataError, UnknownClassError
from model_server.training.samples import ClassSplit, Sample

#: `data_root` value that selects the ELPV demo data shipped in the `elpv-dataset` wheel instead of a folder.
ELPV_ROOT = "elpv"
ELPV_CLASSES = ("elpv_mono", "elpv_poly")
#: Defect-free ELPV cells per type held out as good test images.
ELPV_TEST_GOOD = 100
#: At most this many defect-free cells per type are used for training (None: every one not held out for
#: test). Training is linear in the number of images, and more good cells widen the bank's coverage.
ELPV_MAX_TRAIN: int | None = None


def elpv_records() -> tuple[Path, str, list[tuple[str, float, str]]]:
    """(images folder, package version, [(file name, defect probability, type)]) without decoding images: the
    annotators' probabilities are 0, 1/3, 2/3 and 1."""
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


def _sample(images_dir: Path, fname: str, label: int, defect_type: str | None = None) -> Sample:
    defect_type = defect_type or ("good" if label == 0 else "defect")
    return Sample(name=fname, label=label, defect_type=defect_type, path=images_dir / fname)


def load_elpv_split(
    class_name: str, seed: int = 0, max_train: int | None = ELPV_MAX_TRAIN, n_test_good: int = ELPV_TEST_GOOD
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
    images_dir, version, records = elpv_records()
    good = sorted(r[0] for r in records if r[2] == cell_type and r[1] == 0.0)
    bad = sorted(r[0] for r in records if r[2] == cell_type and abs(r[1] - 1.0) < 1e-6)
    if len(good) <= n_test_good or not bad:
        raise DataError(f"ELPV labels list too few {cell_type} cells: {len(good)} good, {len(bad)} defective")
    order = np.random.default_rng(seed).permutation(len(good))
    test_good = sorted(good[i] for i in order[:n_test_good])
    stop = None if max_train is None else n_test_good + max_train
    train_good = sorted(good[i] for i in order[n_test_good:stop])

    def sample(fname: str, label: int) -> Sample:
        return _sample(images_dir, fname, label)

    return ClassSplit(
        class_name=class_name,
        train=[sample(f, 0) for f in train_good],
        test=[sample(f, 0) for f in test_good] + [sample(f, 1) for f in bad],
        source=(
            f"elpv-dataset {version}, {cell_type} cells, seed {seed}: train {len(train_good)} defect-free, "
            f"test {len(test_good)} defect-free + {len(bad)} with defect probability 1"
        ),
    )
