"""bench-quality's real-noise study: ELPV's uncertain cells as unlabelled defects in a training set."""

from __future__ import annotations

import pytest

from model_server.errors import DataError
from model_server.training.datasets import load_split
from tests.benchmarks.quality_studies import add_unlabelled, uncertain_cells


@pytest.mark.parametrize("class_name, counts", [("elpv_mono", (117, 56)), ("elpv_poly", (178, 50))])
def test_elpv_uncertain_cells_become_unlabelled_noise(class_name: str, counts: tuple[int, int]) -> None:
    pytest.importorskip("elpv_dataset")
    cells = uncertain_cells(class_name)
    kinds = [s.defect_type for s in cells]
    assert (kinds.count("p0.33"), kinds.count("p0.67")) == counts and all(s.label == 1 for s in cells)
    split = load_split("elpv", class_name)
    noisy = add_unlabelled(split, cells, 0.1, seed=2)
    added = noisy.train[len(split.train) :]
    assert round(len(added) / len(noisy.train), 2) == 0.10 and noisy.test == split.test
    assert add_unlabelled(split, cells, 0.1, seed=2) == noisy != add_unlabelled(split, cells, 0.1, seed=3)
    with pytest.raises(DataError, match="extra images"):
        add_unlabelled(split, cells, 0.4)
    with pytest.raises(DataError, match="test split"):
        add_unlabelled(split, split.test[-3:], 0.001)
