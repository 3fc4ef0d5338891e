"""Synthetic anomalies: each kind changes the image where (and roughly only where) its mask says, at a size
from thin lines to a few per cent of the image, the same for the same seed."""

import numpy as np
import pytest

from model_server.training.synthetic import AREA_RANGE, KINDS, synthesize


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_the_masked_pixels(kind: str) -> None:
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(128, 10, size=(128, 160, 3)), 0, 255).astype(np.uint8)
    donor = np.clip(rng.normal(90, 30, size=(128, 160, 3)), 0, 255).astype(np.uint8)
    out, mask = synthesize(image, kind, np.random.default_rng(7), donor)
    again, mask2 = synthesize(image, kind, np.random.default_rng(7), donor)
    np.testing.assert_array_equal(out, again)
    np.testing.assert_array_equal(mask, mask2)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert 0 < mask.mean() <= 3 * AREA_RANGE[1]
    changed = np.abs(out.astype(int) - image.astype(int)).max(axis=2) > 2
    assert changed[mask].mean() > 0.5  # the mask marks what changed...
    assert changed[~mask].mean() < 0.02  # ...and little else did


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        synthesize(np.zeros((32, 32, 3), np.uint8), "explosion", np.random.default_rng(0))
