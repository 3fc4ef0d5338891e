"""One multi-class artifact from per-class artifacts (training jobs' outputs, a base version): each class's
files copied byte for byte, so every class model in the merged artifact is the one its job trained and its
checksums in the new manifest are the job's."""

from __future__ import annotations

from pathlib import Path

from model_server.engine.artifact import FORMAT_VERSION, class_files, write_artifact
from model_server.errors import ArtifactError


def merge(out: Path, sources: dict[str, Path], extra: dict) -> dict:
    """Write `out` from class -> the artifact that holds that class's model; returns the new manifest."""
    classes: dict[str, dict[str, bytes]] = {}
    kinds = set()
    for name, path in sorted(sources.items()):
        manifest, files = class_files(path)
        if manifest["format_version"] != FORMAT_VERSION:
            raise ArtifactError(f"{path} is format {manifest['format_version']}, not {FORMAT_VERSION}")
        if name not in files:
            raise ArtifactError(f"{path} holds no class {name} (classes: {', '.join(sorted(files))})")
        kinds.add(manifest["model"])
        classes[name] = files[name]
    if len(kinds) != 1:
        raise ArtifactError(f"one artifact holds one model type; these are {', '.join(sorted(kinds))}")
    return write_artifact(out, kinds.pop(), classes, extra)
