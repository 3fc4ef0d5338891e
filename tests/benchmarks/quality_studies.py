"""What `make bench-quality` studies beyond the product's own training path: SoftPatch under real defects that
nobody labelled (ELPV's uncertain cells added to a training set), and what an ensemble of searched candidates
would buy. No product code path uses these."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from model_server.errors import DataError, UnknownClassError
from model_server.training.elpv import ELPV_CLASSES, elpv_records
from model_server.training.samples import ClassSplit, Sample
from model_server.training.search import Trial, proxy_auroc


def uncertain_cells(class_name: str) -> list[Sample]:
    """Cells the annotators gave defect probability 1/3 or 2/3: real, subtle defects that no test split holds,
    the unlabelled defects of SoftPatch's real-noise study (label 1, defect type "p0.33" / "p0.67")."""
    if class_name not in ELPV_CLASSES:
        raise UnknownClassError(f"class '{class_name}' not found in the ELPV demo")
    cell_type = class_name.removeprefix("elpv_")
    images_dir, _, records = elpv_records()
    return [
        Sample(name=name, label=1, defect_type=f"p{prob:.2f}", path=images_dir / name)
        for name, prob, kind in sorted(records)
        if kind == cell_type and 0.0 < prob < 1.0
    ]


def add_unlabelled(split: ClassSplit, extra: list[Sample], ratio: float, seed: int = 0) -> ClassSplit:
    """A training set in which `ratio` of the images are real defects nobody labelled (e.g. ELPV's uncertain
    cells): round(ratio / (1 - ratio) * n_train) of `extra` (half up), drawn with `seed`. The test split is
    unchanged (it must not hold any of `extra`); the added samples keep label 1 so reports can count them."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"noise ratio must be in [0, 1), got {ratio}")
    n_add = math.floor(ratio / (1.0 - ratio) * len(split.train) + 0.5)
    if n_add > len(extra):
        raise DataError(
            f"{ratio:.0%} noise in {split.class_name} needs {n_add} extra images, {len(extra)} exist"
        )
    overlap = {s.name for s in extra} & {s.name for s in split.test}
    if overlap:
        raise DataError(f"{len(overlap)} of the extra images are in the test split of {split.class_name}")
    picks = np.random.default_rng(seed).permutation(len(extra))[:n_add]
    added = [extra[i] for i in sorted(picks)]
    return ClassSplit(
        class_name=split.class_name,
        train=list(split.train) + added,
        test=list(split.test),
        source=f"{split.source}; {len(added)} unlabelled defective images added (seed {seed})",
    )


def judge_ensemble(members: Sequence[Trial], kinds: Sequence[str], audit_labels=None) -> dict:
    """Proxy (and audit AUROC) of averaging members' image scores, each standardised by its held-out good
    scores, as the official PatchCore ensemble averages normalised scores: what an ensemble would buy."""

    def combined(name: str) -> np.ndarray:
        parts = []
        for t in members:
            held = t.scores["held"]
            parts.append((t.scores[name] - held.mean()) / (held.std() + 1e-12))
        return np.mean(parts, axis=0)

    proxy, _ = proxy_auroc(combined("held"), combined("synthetic"), np.asarray(kinds))
    out = {"members": [t.candidate.label for t in members], "proxy": round(proxy, 4)}
    if audit_labels is not None and all("audit" in t.scores for t in members):
        out["audit_auroc"] = round(float(roc_auc_score(audit_labels, combined("audit"))), 4)
    return out
