"""Bank provenance (engine/provenance.py): where each bank patch came from, kept through training, save and
load, with thumbnails bounded per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_server.engine.artifact import load_artifact, save_artifact
from model_server.engine.provenance import Provenance, SourceImage, bounded, jpeg


def test_provenance_round_trips_through_the_artifact(trained_artifact: Path, tmp_path: Path) -> None:
    model = load_artifact(trained_artifact).get("widget")
    prov = model.provenance
    assert prov is not None and prov.patches.shape == (model.bank.shape[0], 3)
    rows, cols = model.config.features.grid
    assert prov.patches.dtype == np.int32
    assert (prov.patches[:, 1] < rows).all() and (prov.patches[:, 2] < cols).all()
    assert [i.id for i in prov.images] == [f"train/good/{k:03d}.png" for k in range(12)]
    used = set(prov.patches[:, 0].tolist())
    assert all((i.thumbnail is not None) == (k in used) for k, i in enumerate(prov.images))
    save_artifact(tmp_path / "again.tar.gz", {"widget": model})
    again = load_artifact(tmp_path / "again.tar.gz")
    got = again.get("widget").provenance
    assert got is not None
    np.testing.assert_array_equal(got.patches, prov.patches)
    assert [i.to_dict() for i in got.images] == [i.to_dict() for i in prov.images]
    assert [i.thumbnail for i in got.images] == [i.thumbnail for i in prov.images]


def test_thumbnails_over_the_cap_shrink_then_the_least_used_go() -> None:
    rng = np.random.default_rng(0)
    images = []
    for k in range(4):
        thumb, size = jpeg(rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8))
        images.append(SourceImage(f"{k}.png", 64, 64, thumb, (64, 64), size))
    patches = np.array([[0, 0, 0]] * 5 + [[1, 0, 0]] * 3 + [[2, 0, 0]] * 2 + [[3, 0, 0]], dtype=np.int32)
    full = sum(len(i.thumbnail) for i in images)
    bounded(images, patches, cap=full)  # within the cap: untouched
    assert [i.thumb_size for i in images] == [(64, 64)] * 4
    bounded(images, patches, cap=full // 2)  # halved once fits
    assert [i.thumb_size for i in images] == [(32, 32)] * 4
    small = Provenance(patches, images).thumbnail_bytes()
    bounded(images, patches, cap=small // 2)  # at the smallest scale, the most used images keep theirs
    kept = [i.thumbnail is not None for i in images]
    assert kept[0] and not kept[3] and Provenance(patches, images).thumbnail_bytes() <= small // 2
    assert {i.thumb_size for i in images if i.thumbnail is not None} == {(16, 16)}
