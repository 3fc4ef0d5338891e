"""Merging per-class artifacts (training jobs' outputs, a base version) into one: every class's files byte for
byte, a manifest of its own that checks them, and refusals for what one artifact cannot hold."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from infra.cloud.merge import merge
from model_server.engine.artifact import class_files, load_artifact
from model_server.errors import ArtifactError


def test_merged_class_models_are_the_sources_byte_for_byte(
    two_class_artifact: Path, trained_artifact: Path, tmp_path: Path
) -> None:
    out = tmp_path / "merged.tar.gz"
    extra = {"training": {"missing_classes": {"gizmo": "job j Failed: AlgorithmError: bad data"}}}
    manifest = merge(out, {"gadget": two_class_artifact, "widget": trained_artifact}, extra)
    _, merged = class_files(out)
    assert merged["gadget"] == class_files(two_class_artifact)[1]["gadget"]
    assert merged["widget"] == class_files(trained_artifact)[1]["widget"]
    assert manifest["classes"] == ["gadget", "widget"] and manifest["training"] == extra["training"]
    loaded = load_artifact(out)  # the new manifest's checksums hold
    assert loaded.model_version == manifest["model_version"] and sorted(loaded.classes) == [
        "gadget",
        "widget",
    ]
    with tarfile.open(out) as tar:
        assert json.load(tar.extractfile("manifest.json"))["training"] == extra["training"]


def test_a_merge_refuses_mixed_models_and_absent_classes(
    trained_artifact: Path, two_class_artifact: Path, trained_softpatch: Path, tmp_path: Path
) -> None:
    with pytest.raises(ArtifactError, match="one model type"):
        merge(tmp_path / "m.tar.gz", {"gadget": two_class_artifact, "widget": trained_softpatch}, {})
    with pytest.raises(ArtifactError, match="holds no class gadget"):
        merge(tmp_path / "m.tar.gz", {"gadget": trained_artifact}, {})
    assert not (tmp_path / "m.tar.gz").exists()
