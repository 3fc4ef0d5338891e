"""`model.tar.gz`: every trained class of one model type, as SageMaker loads it into /opt/ml/model.

Layout (plain JSON and .npy, no pickles, so loading an artifact never runs code from it):

    manifest.json                      format, model type and version, git commit, time, per-file SHA-256
    classes/<class>/config.json        ModelConfig (features, coreset, SoftPatch, threshold settings)
    classes/<class>/bank.npy           memory bank [M, dim] float32
    classes/<class>/weights.npy        SoftPatch soft weights [M] float32 (softpatch only)
    classes/<class>/centroids.npy      inverted-file centroids [lists, dim] float32 (if training chose one)
    classes/<class>/index.json         {"probes": lists each query visits} (with centroids.npy)
    classes/<class>/calibration.json   threshold and normalisation
    classes/<class>/provenance.npy     (image, row, col) int32 [M, 3] of each bank patch (provenance.py)
    classes/<class>/provenance.json    {"images": [{id, height, width, placed, thumb_size}]} those index
    classes/<class>/thumbnails/<i>.jpg the placed training image i, for explanations (bounded per class)
    classes/<class>/model_card.json    metrics, data fingerprint, hyperparameters, timings
    classes/<class>/model_card.md      the same for people
    backbones/<sha256>.pth|.safetensors the weights of a brought (timm:) backbone, once per file

A file that is missing, altered (checksum), from another format version, or inconsistent with its config is
refused with an `ArtifactError` naming the problem.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tarfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ivadas_contract.models import MODELS
from model_server import __version__
from model_server.engine import weights as brought
from model_server.engine.calibration import Calibration
from model_server.engine.class_model import ClassModel
from model_server.engine.config import ModelConfig
from model_server.engine.memory_bank import BankIndex
from model_server.engine.model_card import model_card_markdown
from model_server.engine.provenance import Provenance, SourceImage
from model_server.errors import ArtifactError, UnknownClassError

FORMAT = "ivadas-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BACKBONES_DIR = "backbones"
#: Class names become folder names in the artifact and keys in S3: keep them to a safe alphabet.
CLASS_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Artifact:
    model: str
    model_version: str
    created: str
    git_commit: str | None
    classes: dict[str, ClassModel]

    def get(self, class_name: str) -> ClassModel:
        try:
            return self.classes[class_name]
        except KeyError:
            raise UnknownClassError(
                f"class '{class_name}' is not in this {self.model} model "
                f"(classes: {', '.join(sorted(self.classes))})"
            ) from None


def check_class_name(name: str) -> str:
    if not CLASS_NAME_PATTERN.match(name):
        raise ValueError(f"class name '{name}' must be 1-64 letters, digits, '_', '.' or '-'")
    return name


def git_commit() -> str | None:
    """The code version that trained a model: HEAD, with "-dirty" when the tree has local changes."""
    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(  # git from PATH with fixed arguments, no shell  # nosec B603 B607
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(  # git from PATH with fixed arguments, no shell  # nosec B603 B607
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _json_bytes(data: object) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _class_files(model: ClassModel) -> dict[str, bytes]:
    files = {
        "config.json": _json_bytes(model.config.to_dict()),
        "bank.npy": _npy_bytes(model.bank.astype(np.float32, copy=False)),
        "calibration.json": _json_bytes(model.calibration.to_dict()),
        "model_card.json": _json_bytes(model.card),
        "model_card.md": model_card_markdown(model.card).encode(),
    }
    if model.weights is not None:
        files["weights.npy"] = _npy_bytes(model.weights.astype(np.float32, copy=False))
    if model.index is not None:
        files["centroids.npy"] = _npy_bytes(model.index.centroids.astype(np.float32, copy=False))
        files["index.json"] = _json_bytes({"probes": model.index.probes})
    if model.provenance is not None:
        files.update(_provenance_files(model.provenance))
    return files


def _provenance_files(provenance: Provenance) -> dict[str, bytes]:
    files = {
        "provenance.npy": _npy_bytes(provenance.patches.astype(np.int32, copy=False)),
        "provenance.json": _json_bytes({"images": [i.to_dict() for i in provenance.images]}),
    }
    for k, image in enumerate(provenance.images):
        if image.thumbnail is not None:
            files[f"thumbnails/{k}.jpg"] = image.thumbnail
    return files


def save_artifact(path: str | Path, models: dict[str, ClassModel]) -> Artifact:
    """Write every class model into one gzipped tar; returns the artifact as a loader would see it."""
    if not models:
        raise ValueError("an artifact needs at least one class model")
    kinds = {m.config.model for m in models.values()}
    if len(kinds) != 1:
        raise ValueError(f"one artifact holds one model type, got {sorted(kinds)}")
    model = kinds.pop()
    classes = {}
    for name, class_model in sorted(models.items()):
        check_class_name(name)
        classes[name] = _class_files(class_model)
    manifest = write_artifact(path, model, classes)
    version, created = manifest["model_version"], manifest["created"]
    return Artifact(model, version, created, manifest["git_commit"], dict(models))


def write_artifact(
    path: str | Path, model: str, classes: dict[str, dict[str, bytes]], extra: dict | None = None
) -> dict:
    """Write class files (class -> file name -> bytes) as one artifact with its manifest (returned).
    The version hashes the class files alone, so the same class models give the same version wherever they
    were trained; `extra` adds manifest keys (e.g. how a merged artifact came to be)."""
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    files = {f"classes/{name}/{fname}": data for name, fs in classes.items() for fname, data in fs.items()}
    digest = hashlib.sha256()
    for fname in sorted(files):
        digest.update(fname.encode() + hashlib.sha256(files[fname]).digest())
    files.update(_backbone_files(classes))  # named by the class configs, so the version above covers them
    version = f"{model}-{created[:10].replace('-', '')}-{digest.hexdigest()[:8]}"
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ivadas_version": __version__,
        "model": model,
        "model_version": version,
        "created": created,
        "git_commit": git_commit(),
        "classes": sorted(classes),
        "files": {fname: hashlib.sha256(data).hexdigest() for fname, data in sorted(files.items())},
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with tarfile.open(tmp, "w:gz") as tar:
        for fname, data in [(MANIFEST, _json_bytes(manifest)), *sorted(files.items())]:
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            info.mtime = int(datetime.now(UTC).timestamp())
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(path)  # never leave a half-written artifact under the final name
    return manifest


def _backbone_files(classes: dict[str, dict[str, bytes]]) -> dict[str, bytes]:
    """The brought backbone weights the classes' configs name: the endpoint is network-isolated, so they
    travel inside the artifact, once per file."""
    out = {}
    for name, fs in classes.items():
        try:
            sha = json.loads(fs["config.json"])["features"].get("weights_sha256")
        except (KeyError, ValueError) as exc:
            raise ArtifactError(f"class {name}: unreadable config.json ({exc})") from None
        if sha:
            source = brought.path_for(sha)
            out[f"{BACKBONES_DIR}/{sha}{brought.suffix_of(source)}"] = source.read_bytes()
    return out


def class_files(path: str | Path) -> tuple[dict, dict[str, dict[str, bytes]]]:
    """The manifest and each class's files as stored (class -> file name -> bytes), every checksum verified:
    what a merge copies, byte for byte, into another artifact."""
    files, manifest, where = _checked_files(Path(path))
    _register_backbones(files)
    classes: dict[str, dict[str, bytes]] = {}
    for name in manifest.get("classes", []):
        prefix = f"classes/{name}/"
        classes[name] = {f.removeprefix(prefix): files[f] for f in manifest["files"] if f.startswith(prefix)}
        if not classes[name]:
            raise ArtifactError(f"{where}: class {name} has no files")
    return manifest, classes


def _read_tar(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.removeprefix("./")
                if name.startswith("/") or ".." in name.split("/"):
                    raise ArtifactError(f"{path}: unsafe path '{member.name}' in the archive")
                handle = tar.extractfile(member)
                if handle is not None:
                    files[name] = handle.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ArtifactError(f"{path} is not a readable model artifact (tar.gz): {exc}") from None
    return files


def _read_dir(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            files[p.relative_to(path).as_posix()] = p.read_bytes()
    return files


def _load_json(files: dict[str, bytes], name: str, where: str) -> dict:
    try:
        return json.loads(files[name])
    except KeyError:
        raise ArtifactError(f"{where}: {name} is missing") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{where}: {name} is not valid JSON ({exc})") from None


def _load_npy(files: dict[str, bytes], name: str, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(files[name]), allow_pickle=False)
    except KeyError:
        raise ArtifactError(f"{where}: {name} is missing") from None
    except (ValueError, OSError, EOFError) as exc:
        raise ArtifactError(f"{where}: {name} is not a valid array ({exc})") from None


def _checked_files(path: Path) -> tuple[dict[str, bytes], dict, str]:
    """The artifact's files, its manifest and a name for messages, every checksum verified."""
    if not path.exists():
        raise ArtifactError(f"model artifact {path} does not exist")
    files = _read_dir(path) if path.is_dir() else _read_tar(path)
    where = str(path)
    if MANIFEST not in files and path.is_dir():
        inner = sorted(p for p in path.glob("*.tar.gz"))
        if len(inner) == 1:  # a folder that holds the tarball itself
            return _checked_files(inner[0])
    manifest = _load_json(files, MANIFEST, where)
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{where} is not an IVADAS model artifact (format {manifest.get('format')!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{where} has artifact format version {manifest.get('format_version')}; this IVADAS "
            f"({__version__}) reads version {FORMAT_VERSION}: retrain the model"
        )
    model = manifest.get("model")
    if model not in MODELS:
        raise ArtifactError(f"{where}: unknown model type {model!r}")
    for fname, expected in manifest.get("files", {}).items():
        if fname not in files:
            raise ArtifactError(f"{where}: {fname} is missing")
        if hashlib.sha256(files[fname]).hexdigest() != expected:
            raise ArtifactError(f"{where}: {fname} is corrupt (checksum mismatch)")
    return files, manifest, where


def load_artifact(path: str | Path) -> Artifact:
    """Load a model artifact: a model.tar.gz, or the folder SageMaker unpacks it into."""
    files, manifest, where = _checked_files(Path(path))
    _register_backbones(files)
    model = manifest["model"]
    classes = {}
    for name in manifest.get("classes", []):
        classes[name] = _load_class(files, name, model, f"{where} class {name}")
    if not classes:
        raise ArtifactError(f"{where} holds no classes")
    return Artifact(
        model, manifest["model_version"], manifest["created"], manifest.get("git_commit"), classes
    )


def _register_backbones(files: dict[str, bytes]) -> None:
    """Make the brought backbone weights an artifact carries findable by their digest (checksums verified)."""
    for fname, data in files.items():
        folder, _, leaf = fname.partition("/")
        if folder == BACKBONES_DIR:
            sha, dot, suffix = leaf.partition(".")
            brought.store(data, sha, dot + suffix)


def read_cards(path: str | Path) -> tuple[dict, dict[str, dict]]:
    """The manifest and every class's model card, checksums verified, no memory bank loaded: what the model
    registry records about an artifact."""
    files, manifest, where = _checked_files(Path(path))
    cards = {}
    for name in manifest.get("classes", []):
        cards[name] = _load_json(files, f"classes/{name}/model_card.json", f"{where} class {name}")
    return manifest, cards


def _load_class(files: dict[str, bytes], name: str, model: str, where: str) -> ClassModel:
    prefix = f"classes/{name}/"
    try:
        config = ModelConfig.from_dict(_load_json(files, prefix + "config.json", where))
        calibration = Calibration.from_dict(_load_json(files, prefix + "calibration.json", where))
    except (TypeError, KeyError, ValueError) as exc:
        raise ArtifactError(f"{where}: incompatible configuration ({exc})") from None
    if config.model != model:
        raise ArtifactError(f"{where}: config says {config.model}, manifest says {model}")
    bank = _load_npy(files, prefix + "bank.npy", where)
    expected_dim = config.features.dim
    if bank.ndim != 2 or bank.shape[0] == 0 or bank.shape[1] != expected_dim or bank.dtype != np.float32:
        raise ArtifactError(
            f"{where}: memory bank {bank.dtype} {bank.shape} does not fit {config.features.backbone} "
            f"features of dimension {expected_dim}"
        )
    weights = None
    if prefix + "weights.npy" in files:
        weights = _load_npy(files, prefix + "weights.npy", where)
        if weights.shape != (bank.shape[0],):
            raise ArtifactError(
                f"{where}: {weights.shape[0]} SoftPatch weights for {bank.shape[0]} bank patches"
            )
    card = _load_json(files, prefix + "model_card.json", where)
    index = _load_index(files, prefix, bank, where)
    provenance = _load_provenance(files, prefix, bank, where)
    return ClassModel(name, config, bank, weights, calibration, card, index, provenance)


def _load_index(files: dict[str, bytes], prefix: str, bank: np.ndarray, where: str) -> BankIndex | None:
    """The class's inverted-file index, None when it is searched exhaustively (and in older artifacts)."""
    if prefix + "centroids.npy" not in files:
        return None
    centroids = _load_npy(files, prefix + "centroids.npy", where)
    probes = _load_json(files, prefix + "index.json", where).get("probes")
    try:
        if centroids.dtype != np.float32 or centroids.ndim != 2 or centroids.shape[1] != bank.shape[1]:
            raise ValueError(f"centroids {centroids.dtype} {centroids.shape} for a bank of {bank.shape[1]}")
        return BankIndex(centroids, int(probes))
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{where}: unusable bank index ({exc})") from None


def _load_provenance(files: dict[str, bytes], prefix: str, bank: np.ndarray, where: str) -> Provenance | None:
    """Where the bank's patches came from; None in artifacts from before it (no explanations then)."""
    if prefix + "provenance.npy" not in files:
        return None
    patches = _load_npy(files, prefix + "provenance.npy", where)
    listed = _load_json(files, prefix + "provenance.json", where).get("images", [])
    try:
        images = []
        for k, d in enumerate(listed):
            thumb = files.get(f"{prefix}thumbnails/{k}.jpg")
            size = d.get("thumb_size")
            images.append(
                SourceImage(
                    str(d["id"]),
                    int(d["height"]),
                    int(d["width"]),
                    thumb,
                    (int(d["placed"][0]), int(d["placed"][1])),
                    (int(size[0]), int(size[1])) if thumb is not None and size else (0, 0),
                )
            )
        if patches.dtype != np.int32 or patches.shape != (bank.shape[0], 3):
            raise ValueError(f"{patches.dtype} {patches.shape} for a bank of {bank.shape[0]} patches")
        return Provenance(patches, images)
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise ArtifactError(f"{where}: unusable provenance ({exc})") from None
