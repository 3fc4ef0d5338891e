"""Where tests find the real MVTec AD data: IVADAS_MVTEC_ROOT, default ../shared/data/mvtec."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MVTEC_ROOT = Path(os.environ.get("IVADAS_MVTEC_ROOT", REPO_ROOT.parent / "shared" / "data" / "mvtec"))


def require_bottle() -> Path:
    """The MVTec root holding bottle; skips the calling test when the data is absent."""
    if not (MVTEC_ROOT / "bottle" / "train" / "good").is_dir():
        pytest.skip(f"MVTec AD bottle not found under {MVTEC_ROOT} (set IVADAS_MVTEC_ROOT)")
    return MVTEC_ROOT
