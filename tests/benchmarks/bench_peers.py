"""`make bench-peers`: this engine against anomalib's PatchCore on the same backbone, data and configuration.

Both sides: timm tf_efficientnet_lite0 stages (2, 3) (strides 8 and 16) with this project's ImageNet weights
(anomalib builds it with pre_trained=False and loads ours with strict=True), normalisation mean = std = 0.5,
MVTec bottle train/good, 256 px input (--input-size), 1 % coreset, 2 threads; anomalib keeps its other
defaults (num_neighbors 9). anomalib 2.7 runs in a venv of its own (build/peer-venv, made once from the
package registries) through tests/benchmarks/peers/anomalib_side.py, which never imports this project.

Measured and printed (and recorded in docs/benchmarks/bench_peers.json):
- fit: `ivadas train` and anomalib's Engine.fit, each in its own process: seconds inside (the
  model card's training total; around engine.fit, with its phases), process wall seconds, peak RSS, bank size;
- quality on the bottle test split, one metric code for both (model_server/training/metrics.py): image AUROC,
  pixel AUROC and AUPRO of each side's raw image scores and anomaly maps at the model input resolution;
- latency at batch 1, p50 and p95: (a) PNG bytes -> image score and map (decode included), (b) decoded RGB
  image -> score and map; ours through Predictor.decode/score, anomalib through its TorchInferencer and its
  OpenVINOInferencer; ours' full product path (verdict, regions, heatmap PNG) beside them. Long-lived workers
  (ours in .venv, anomalib's in its venv) take turns in blocks of 10 images, several rounds, so this VM's
  speed drift hits all alike; each worker times its own calls;
- the floor: backbone FLOPs at the input size and the kNN's 2 x queries x bank x dim, each over this CPU's
  measured float32 matmul peak on 2 threads, and a Pillow PNG decode of the same bytes;
- training cost against N: bottle with 50, 100 and all training images (ours and anomalib's), and a synthetic
  class of 800 flipped and shifted bottle images (ours alone): seconds, peak RSS, bank size.

Targets (exit 1 when one is missed): ours >= 2x faster than anomalib's fastest path from PNG bytes (p50) and
>= 3x from a decoded image (p50); image AUROC and AUPRO >= anomalib's (3 decimals); fit >= 20x faster; ours at
the fixed default configuration trains bottle in < 10 s and 800 images in < 60 s at the reference speed
(probe.py), every training of ours within 4 GB.
Skips with exit 0 (and says why) without the bottle data (IVADAS_MVTEC_ROOT, default ../shared/data/mvtec) or
where the package registries cannot be reached to make the peer venv.
Run: .venv/bin/python tests/benchmarks/bench_peers.py [--input-size 256] [--rounds 3] [--skip-scaling]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

from worker_protocol import protocol_stream, serve  # noqa: E402

from tests.benchmarks.peer_venv import ensure_venv, peer_env  # noqa: E402
from tests.benchmarks.probe import at_reference, beside  # noqa: E402
from tests.benchmarks.tables import Table  # noqa: E402
from tests.benchmarks.verdict import conclude  # noqa: E402

MVTEC = Path(os.environ.get("IVADAS_MVTEC_ROOT", ROOT.parent / "shared/data/mvtec"))
WORK = ROOT / "build/bench-peers"
NAME = "bench_peers"
PEER_SCRIPT = Path(__file__).resolve().parent / "peers/anomalib_side.py"
PEER_VENV = ROOT / "build/peer-venv"
PEER_PY = PEER_VENV / "bin/python"
PEER_PINS = ("anomalib==2.7.0", "torch==2.14.1", "torchvision==0.29.1", "openvino", "onnx", "onnxscript")
PEER_STAMP = PEER_VENV / ".installed-anomalib-2.7.0"
CLASS = "bottle"
BACKBONE = "efficientnet_lite0"
LAYERS = (2, 3)
#: Top-level keys of timm's EfficientNet after the last stage: its features-only model has no such layers.
HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")
SUBSETS = (50, 100)
SYNTHETIC_IMAGES = 800
DEFAULT_INPUT_SIZE = 384  # model_server.defaults.INPUT_SIZE, the fixed default's input (held equal by a test)
VARIANTS = {"ours": ("a", "b", "product", "decode"), "torch": ("a", "b"), "openvino": ("a", "b")}

#: The targets this benchmark prints: anomalib / ours at p50, and fit time.
MIN_LATENCY_RATIOS = {"bytes_p50": 2.0, "decoded_p50": 3.0}
MIN_FIT_RATIO = 20.0
#: Training the fixed default configuration, ours alone: bottle's training images, and the 800-image synthetic
#: class (seconds inside `ivadas train`, as its model card times them, at the reference speed: probe.py);
#: every training of ours within this peak RSS.
MAX_TRAIN_SECONDS_BOTTLE = 10.0
MAX_TRAIN_SECONDS_LARGE = 60.0
MAX_PEAK_GB = 4.0
QUALITY_KEYS = ("image_auroc", "aupro")


# --------------------------------------------------------------------------------------------- verdicts


def _figure(value: float | None) -> str:
    return "None" if value is None else f"{value:.4f}"


def _quality_missed(quality: dict) -> list[str]:
    missed = []
    for key in QUALITY_KEYS:
        ours, theirs = quality["ours"][key], quality["anomalib"][key]
        if theirs is not None and (ours is None or round(ours, 3) < round(theirs, 3)):
            missed.append(f"{key} ours {_figure(ours)} < anomalib {_figure(theirs)} (to 3 decimals)")
    return missed


def _train_limit(key: str) -> float | None:
    """The training-time target of a scaling row: only the fixed default configuration's rows have one."""
    if not key.startswith("default@"):
        return None
    return MAX_TRAIN_SECONDS_LARGE if key == f"default@{SYNTHETIC_IMAGES}" else MAX_TRAIN_SECONDS_BOTTLE


def verdicts(figures: dict) -> list[str]:
    """The printed targets these figures miss; a part that was not measured misses nothing."""
    missed = []
    ratios = figures.get("ratios", {})
    for key, target in MIN_LATENCY_RATIOS.items():
        if ratios.get(key) is not None and ratios[key] < target:
            missed.append(f"latency {key}: anomalib's fastest / ours {ratios[key]}x < {target}x")
    if figures.get("quality"):
        missed += _quality_missed(figures["quality"])
    ratio = figures.get("fit", {}).get("ratio")
    if ratio is not None and ratio < MIN_FIT_RATIO:
        missed.append(f"fit: anomalib / ours {ratio}x < {MIN_FIT_RATIO}x")
    for key, row in figures.get("scaling", {}).items():
        ours, limit = row["ours"], _train_limit(key)
        if limit is not None and ours["train_seconds_at_reference"] >= limit:
            missed.append(
                f"training {key} took {ours['train_seconds_at_reference']} s at the reference speed "
                f"({ours['train_seconds']} s measured) >= {limit:g} s"
            )
        if ours["peak_gb"] > MAX_PEAK_GB:
            missed.append(f"training {key} peaked at {ours['peak_gb']} GB > {MAX_PEAK_GB:g} GB")
    return missed


# ------------------------------------------------------------------------------------------- processes


#: Runs argv[2:], writes its wall seconds, exit code and ru_maxrss (KB) as JSON to argv[1]. A child forked
#: straight from this (large) process would report this process's peak RSS as its own: Linux carries the
#: high-water mark of the memory an exec replaces. From a fresh small launcher the peak is the child's.
LAUNCHER = """import json, os, subprocess, sys, time
t = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - t
code = os.waitstatus_to_exitcode(status)
open(sys.argv[1], "w").write(json.dumps({"code": code, "wall": wall, "maxrss_kb": usage.ru_maxrss}))
"""


def run_child(argv: list[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run a child to its end through LAUNCHER: its wall seconds and peak RSS (ru_maxrss)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    stats = log.with_suffix(".rusage.json")
    stats.unlink(missing_ok=True)
    with log.open("wb") as out:
        code = subprocess.call([sys.executable, "-c", LAUNCHER, str(stats), *map(str, argv)], cwd=cwd or ROOT,
                               env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    if code or not stats.exists() or json.loads(stats.read_text())["code"]:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(map(str, argv[:4]))} ... failed, log {log}:\n{tail}")
    usage = json.loads(stats.read_text())
    return {"wall_seconds": round(usage["wall"], 2), "peak_gb": round(usage["maxrss_kb"] / 1024**2, 3)}


def ensure_peer_venv() -> str | None:
    """Make build/peer-venv with anomalib once; None when it is ready, else why it cannot be made here."""
    return ensure_venv(PEER_VENV, PEER_PINS, PEER_STAMP, "anomalib")


# ------------------------------------------------------------------------------------------------- data


def link_class(dest: Path, train: list[Path]) -> Path:
    """A class folder in MVTec layout of symlinks (no copies): `train` as train/good, the real test split."""
    (dest / "train/good").mkdir(parents=True)
    for src in train:
        (dest / "train/good" / src.name).symlink_to(src)
    for part in ("test", "ground_truth"):
        (dest / part).symlink_to(MVTEC / CLASS / part, target_is_directory=True)
    return dest


def train_images() -> list[Path]:
    return sorted((MVTEC / CLASS / "train/good").glob("*.png"))


def make_synthetic(dest: Path, n: int) -> Path:
    """n bottle training images flipped (none, left-right, up-down, both) and shifted by up to 40 px
    (np.roll), as PNGs in MVTec layout, with the real test split linked."""
    src = train_images()
    rng = np.random.default_rng(n)
    (dest / "train/good").mkdir(parents=True)
    for i in range(n):
        img = np.asarray(Image.open(src[i % len(src)]).convert("RGB"))
        flip = (i // len(src)) % 4
        img = img[:, ::-1] if flip & 1 else img
        img = img[::-1] if flip & 2 else img
        img = np.roll(img, tuple(int(v) for v in rng.integers(-40, 41, 2)), axis=(0, 1))
        Image.fromarray(np.ascontiguousarray(img)).save(dest / f"train/good/{i:04d}.png", compress_level=1)
    for part in ("test", "ground_truth"):
        (dest / part).symlink_to(MVTEC / CLASS / part, target_is_directory=True)
    return dest


def write_weights(path: Path) -> int:
    """Our converted ImageNet weights without the head, in timm's key names, for anomalib to load strictly."""
    import torch

    from model_server.engine.backbones import load_converted_state_dict

    state = {k: v for k, v in load_converted_state_dict(BACKBONE).items() if not k.startswith(HEAD_PREFIXES)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return len(state)


# -------------------------------------------------------------------------------------------------- fit


def fit_ours(class_dir: Path, out: Path, args: argparse.Namespace) -> dict:
    """`ivadas train` in its own process: wall, peak RSS, and the model card's training figures."""
    from model_server.engine.artifact import load_artifact

    ivadas = Path(sys.executable).with_name("ivadas")
    cmd = [str(ivadas)] if ivadas.exists() else [sys.executable, "-m", "infra.cli"]
    argv = [*cmd, "train", "--data-root", str(class_dir.parent), "--classes", class_dir.name,
            "--model", "patchcore", "--backbone", BACKBONE,
            "--layers", ",".join(map(str, LAYERS)), "--input-size", str(args.input_size),
            "--coreset-ratio", str(args.coreset_ratio), "--no-evaluate", "--quiet",
            "--threads", str(args.threads), "--out", str(out)]  # fmt: skip
    with beside() as probe:
        row = run_child(argv, out.with_suffix(".log"))
    card = load_artifact(out).get(class_dir.name).card
    t = card["training"]
    return row | {
        "train_seconds": t["total_seconds"],
        "train_seconds_at_reference": round(at_reference(t["total_seconds"], probe.ms), 2),
        "probe": probe.to_dict(),
        "feature_seconds": t["feature_seconds"],
        "coreset_seconds": t["coreset_seconds"],
        "threshold_seconds": t.get("threshold_seconds"),
        "bank_patches": t["bank_patches"],
        "n_train": card["data"]["n_train"],
    }


def fit_anomalib(class_dir: Path, work: Path, weights: Path, args: argparse.Namespace) -> dict:
    """anomalib's fit process (Engine.fit, then its Torch export): wall, peak RSS and its own figures."""
    work.mkdir(parents=True, exist_ok=True)
    result = work / "fit.json"
    argv = [str(PEER_PY), str(PEER_SCRIPT), "fit", "--data", str(class_dir), "--weights", str(weights),
            "--input-size", str(args.input_size), "--coreset-ratio", str(args.coreset_ratio),
            "--threads", str(args.threads), "--workers", str(args.peer_loader_workers), "--work", str(work),
            "--out", str(result)]  # fmt: skip
    row = run_child(argv, work / "fit.log", cwd=work, env=peer_env())
    return row | json.loads(result.read_text())


def fit_ratio(ours: dict, theirs: dict) -> dict:
    return {
        "ratio": round(theirs["fit_seconds"] / ours["train_seconds"], 2),
        "process_ratio": round(theirs["wall_seconds"] / ours["wall_seconds"], 2),
    }


# ---------------------------------------------------------------------------------------------- quality


def quality(labels: np.ndarray, scores: np.ndarray, maps: np.ndarray, masks: np.ndarray) -> dict:
    """The same metric code for both sides (model_server/training/metrics.py)."""
    from model_server.training import metrics

    return {
        "image_auroc": metrics.image_auroc(labels, scores),
        "pixel_auroc": metrics.pixel_auroc(masks, maps),
        "aupro": metrics.aupro(masks, maps),
    }


def evaluate_both(artifact: Path, npz: Path) -> dict:
    """Ours through evaluation.evaluate_class (maps at the canvas, masks resized nearest to it); anomalib's
    raw scores and maps from its side, for the same images in the same order, against the same masks."""
    from model_server.engine.artifact import load_artifact
    from model_server.engine.features import FeatureExtractor
    from model_server.training.datasets import load_split
    from model_server.training.evaluation import evaluate_class

    model = load_artifact(artifact).get(CLASS)
    ev = evaluate_class(model, FeatureExtractor(model.config.features), load_split(MVTEC, CLASS), False)
    peer = np.load(npz)
    if peer["maps"].shape != ev.maps.shape:
        raise SystemExit(f"anomalib's maps {peer['maps'].shape} differ from ours {ev.maps.shape}")
    return {
        "images": len(ev.labels),
        "map_shape": list(ev.maps.shape[1:]),
        "ours": quality(ev.labels, ev.scores, ev.maps, ev.masks),
        "anomalib": quality(ev.labels, peer["scores"], peer["maps"], ev.masks),
    }


def scored_test_paths() -> list[str]:
    """The bottle test images in the order our evaluation scores them."""
    from model_server.training.datasets import load_split

    return [str(s.path) for s in load_split(MVTEC, CLASS).test]


# ---------------------------------------------------------------------------------------------- latency


def pil_decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def serve_ours(artifact: str, images: str, threads: int) -> int:
    """Our latency worker: (a) decode + score, (b) score of a decoded image, the product path (predict with
    heatmap) and a Pillow decode alone; JSON lines in and out, each call timed here."""
    from model_server.engine.predictor import DecodedImage, Predictor
    from model_server.engine.runtime import set_threads

    set_threads(threads)
    proto = protocol_stream()
    predictor = Predictor(artifact)
    model = predictor.artifact.get(CLASS)
    blobs = [Path(p).read_bytes() for p in json.loads(Path(images).read_text())]
    arrays = [predictor.decode(b).rgb for b in blobs]
    ops: dict[str, Callable[[int], float]] = {
        "a": lambda i: predictor.score(model, [predictor.decode(blobs[i])])[0].anomaly_score,
        "b": lambda i: predictor.score(model, [DecodedImage(arrays[i])])[0].anomaly_score,
        "product": lambda i: predictor.predict(CLASS, [blobs[i]], return_heatmap=True)[0].anomaly_score,
        "decode": lambda i: float(pil_decode(blobs[i]).shape[0]),
    }
    serve(proto, ops, len(blobs))
    return 0


class Worker:
    """A long-lived latency worker driven over stdin/stdout JSON lines."""

    def __init__(self, name: str, argv: list[str], log: Path, cwd: Path, env: dict | None = None) -> None:
        self.name, self.log = name, log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, bufsize=1)  # fmt: skip
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"latency worker {self.name} stopped, log {self.log}:\n{tail}")
        return json.loads(line)

    def call(self, op: str, i: int) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, "i": i}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self._log.close()


def start_workers(artifact: Path, images: Path, peer: dict, args: argparse.Namespace) -> dict[str, Worker]:
    """Ours, anomalib's TorchInferencer and (if its export worked) its OpenVINOInferencer."""
    logs = WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ours = [sys.executable, str(Path(__file__).resolve()), "--serve-ours", str(artifact), "--images",
            str(images), "--threads", str(args.threads)]  # fmt: skip
    workers = {"ours": Worker("ours", ours, logs / "worker_ours.log", ROOT)}
    base = [str(PEER_PY), str(PEER_SCRIPT), "serve", "--images", str(images), "--threads", str(args.threads)]
    cwd = WORK / "anomalib"  # OpenVINOInferencer puts its compile cache in the working directory
    torch_argv = [*base, "--kind", "torch", "--model", peer["torch_model"]]
    workers["torch"] = Worker("torch", torch_argv, logs / "worker_torch.log", cwd, peer_env())
    ov = peer.get("openvino", {})
    if "xml" in ov:
        ov_argv = [*base, "--kind", "openvino", "--model", ov["xml"], "--batch", str(ov["batch"])]
        workers["openvino"] = Worker("openvino", ov_argv, logs / "worker_openvino.log", cwd, peer_env())
    return workers


def alternate(workers: dict[str, Worker], n_images: int, rounds: int, block: int) -> dict[str, list[float]]:
    """Every worker and path in turn on the same block of images, block after block, `rounds` times."""
    samples: dict[str, list[float]] = {f"{w}:{op}": [] for w in workers for op in VARIANTS[w]}
    for _ in range(rounds):
        for start in range(0, n_images, block):
            for name, worker in workers.items():
                for op in VARIANTS[name]:
                    images = range(start, min(start + block, n_images))
                    samples[f"{name}:{op}"] += [worker.call(op, i)["ms"] for i in images]
    return samples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarise(samples: dict[str, list[float]]) -> dict[str, dict]:
    return {
        k: {"p50_ms": round(percentile(v, 0.5), 2), "p95_ms": round(percentile(v, 0.95), 2), "n": len(v)}
        for k, v in samples.items()
    }


def latency_ratios(lat: dict[str, dict]) -> dict:
    """anomalib / ours for each path and inferencer, and against anomalib's fastest (by p50) for each path."""
    ratios: dict = {}
    for path, label in (("a", "bytes"), ("b", "decoded")):
        ours = lat[f"ours:{path}"]
        theirs = {k: lat[f"{k}:{path}"] for k in ("torch", "openvino") if f"{k}:{path}" in lat}
        for kind, t in theirs.items():
            for q in ("p50", "p95"):
                ratios[f"{label}_{kind}_{q}"] = round(t[f"{q}_ms"] / ours[f"{q}_ms"], 2)
        fastest = min(theirs, key=lambda k: theirs[k]["p50_ms"])
        ratios[f"{label}_fastest"] = fastest
        ratios[f"{label}_p50"] = round(theirs[fastest]["p50_ms"] / ours["p50_ms"], 2)
        ratios[f"{label}_p95"] = round(theirs[fastest]["p95_ms"] / ours["p95_ms"], 2)
    return ratios


def measure_latency(artifact: Path, peer: dict, args: argparse.Namespace) -> dict[str, dict]:
    images = WORK / "test_images.json"
    workers = start_workers(artifact, images, peer, args)
    try:
        n = workers["ours"].ready["images"]
        samples = alternate(workers, n, args.rounds, args.block)
    finally:
        for w in workers.values():
            w.close()
    return summarise(samples)


# ------------------------------------------------------------------------------------------------ floor


def matmul_peak(threads: int, n: int = 2048, repeats: int = 7) -> float:
    """This CPU's float32 FLOP/s on `threads` threads: the best of several large torch.mm runs."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


def backbone_flops(input_size: int) -> dict:
    """FLOPs of one image through our feature network (pruned after stage 3) and through timm's default
    features-only model that anomalib builds (which runs every block)."""
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from model_server.engine.backbones import create_feature_extractor, get_spec

    nets = {
        "ours": create_feature_extractor(BACKBONE, LAYERS),
        "anomalib": timm.create_model(get_spec(BACKBONE).timm_name, features_only=True, out_indices=LAYERS),
    }
    out = {}
    for name, net in nets.items():
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net.eval()(torch.zeros(1, 3, input_size, input_size))
        out[name] = int(counter.get_total_flops())
    return out


def floors(args: argparse.Namespace, ours_bank: int, peer_bank: int, decode_p50: float | None) -> dict:
    from model_server.engine.config import FeatureConfig

    cfg = FeatureConfig(backbone=BACKBONE, layers=LAYERS, input_size=args.input_size)
    queries = cfg.grid[0] * cfg.grid[1]
    peak = matmul_peak(args.threads)
    flops = backbone_flops(args.input_size)
    knn = {k: 2 * queries * bank * cfg.dim for k, bank in (("ours", ours_bank), ("anomalib", peer_bank))}
    ms = {f"backbone_{k}_ms": round(1000 * v / peak, 2) for k, v in flops.items()}
    ms |= {f"knn_{k}_ms": round(1000 * v / peak, 2) for k, v in knn.items()}
    return {
        "peak_gflops": round(peak / 1e9, 1),
        "backbone_gflops": {k: round(v / 1e9, 3) for k, v in flops.items()},
        "knn_gflops": {k: round(v / 1e9, 3) for k, v in knn.items()},
        "queries": queries,
        "dim": cfg.dim,
        **ms,
        "png_decode_p50_ms": decode_p50,
    }


# ---------------------------------------------------------------------------------------------- scaling


def scaling(args: argparse.Namespace, weights: Path, full: dict) -> dict:
    """Fit cost against N: bottle subsets (both sides) and the full set from the main fit, then a synthetic
    class of SYNTHETIC_IMAGES images (ours alone)."""
    rows: dict = {}
    with tempfile.TemporaryDirectory(prefix="ivadas-bench-peers-") as tmp:
        for n in SUBSETS:
            class_dir = link_class(Path(tmp) / f"n{n}" / CLASS, train_images()[:n])
            ours = fit_ours(class_dir, WORK / f"ours_{n}.tar.gz", args)
            theirs = fit_anomalib(class_dir, WORK / f"anomalib_{n}", weights, args)
            rows[str(n)] = {"ours": ours, "anomalib": theirs}
            print(f"  scaling {n}: {scaling_line(rows[str(n)])}", flush=True)
        rows[str(full["ours"]["n_train"])] = full
        synthetic = make_synthetic(Path(tmp) / "synthetic" / f"{CLASS}_x{SYNTHETIC_IMAGES}", SYNTHETIC_IMAGES)
        rows[str(SYNTHETIC_IMAGES)] = {"ours": fit_ours(synthetic, WORK / "ours_synthetic.tar.gz", args)}
        # ours alone at the fixed default configuration (input 384 px): the training-time targets
        default = argparse.Namespace(**{**vars(args), "input_size": DEFAULT_INPUT_SIZE})
        full_dir = link_class(Path(tmp) / "default" / CLASS, train_images())
        for n, class_dir in ((len(train_images()), full_dir), (SYNTHETIC_IMAGES, synthetic)):
            ours = fit_ours(class_dir, WORK / f"ours_default_{n}.tar.gz", default)
            rows[f"default@{n}"] = {"ours": ours}
            print(f"  scaling default@{n}: {scaling_line(rows[f'default@{n}'])}", flush=True)
    return rows


def scaling_line(row: dict) -> str:
    ours, theirs = row["ours"], row.get("anomalib")
    text = (f"ours {ours['train_seconds']:.1f} s (process {ours['wall_seconds']:.1f} s), "
            f"{ours['peak_gb']:.2f} GB, bank {ours['bank_patches']}")  # fmt: skip
    if theirs:
        text += (f"; anomalib {theirs['fit_seconds']:.1f} s (process {theirs['wall_seconds']:.1f} s), "
                 f"{theirs['peak_gb']:.2f} GB, bank {theirs['bank_patches']}")  # fmt: skip
    return text


# --------------------------------------------------------------------------------------------- printing


def print_fit(fit: dict) -> None:
    ours, theirs = fit["ours"], fit["anomalib"]
    marks = theirs["marks_seconds"]
    print(
        f"fit, {ours['n_train']} training images: ours {ours['train_seconds']:.1f} s (features "
        f"{ours['feature_seconds']:.1f}, coreset {ours['coreset_seconds']:.1f}, threshold "
        f"{ours['threshold_seconds']}; process {ours['wall_seconds']:.1f} s), peak RSS "
        f"{ours['peak_gb']:.2f} GB, bank {ours['bank_patches']}"
    )
    print(
        f"  anomalib engine.fit {theirs['fit_seconds']:.1f} s (training pass until "
        f"{marks.get('validation_start')} s, coreset until {marks.get('first_validation_batch')} s, "
        f"validation on {theirs['n_validation']} images until {marks.get('validation_end')} s; process "
        f"{theirs['wall_seconds']:.1f} s), peak RSS {theirs['peak_gb']:.2f} GB, bank {theirs['bank_patches']}"
    )
    print(
        f"  anomalib / ours: fit {fit['ratio']}x (target >= {MIN_FIT_RATIO}x), "
        f"process wall {fit['process_ratio']}x"
    )


def print_quality(q: dict) -> None:
    shape = "x".join(map(str, q["map_shape"]))
    print(f"quality, bottle test ({q['images']} images, maps at {shape}, one metric code for both):")
    for side in ("ours", "anomalib"):
        m = q[side]
        print(
            f"  {side:9} image AUROC {m['image_auroc']:.4f}, pixel AUROC {m['pixel_auroc']:.4f}, "
            f"AUPRO {m['aupro']:.4f}"
        )


def openvino_note(ov: dict) -> str | None:
    """What became of anomalib's OpenVINO export, when it is not a plain batch-1 model."""
    if "error" in ov:
        return f"anomalib's OpenVINO export failed: {' '.join(ov['error'].split())[:300]}"
    if ov.get("exported_batch") in (None, 1):
        return None
    how = "reshaped to 1" if ov["batch"] == 1 else "each image sent twice, the first answer kept"
    note = f"anomalib's OpenVINO export came out with a fixed batch of {ov['exported_batch']}: {how}"
    if "reshape_to_1_error" in ov:
        note += f" (the reshape to 1 failed: {' '.join(ov['reshape_to_1_error'].split())[:400]})"
    return note


def print_latency(lat: dict[str, dict], ratios: dict, peer: dict) -> None:
    print("latency, batch 1, ms p50 / p95 (a: from PNG bytes, b: from a decoded image):")
    for key, v in lat.items():
        print(f"  {key:18} {v['p50_ms']:8.2f} / {v['p95_ms']:8.2f}  (n {v['n']})")
    note = openvino_note(peer.get("openvino", {}))
    if note:
        print(f"  {note}")
    print("ratios anomalib / ours: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    print(
        f"  (a) from PNG bytes: {ratios['bytes_p50']}x at p50 against anomalib's {ratios['bytes_fastest']} "
        f"(target >= {MIN_LATENCY_RATIOS['bytes_p50']}x); (b) from a decoded image: "
        f"{ratios['decoded_p50']}x against {ratios['decoded_fastest']} "
        f"(target >= {MIN_LATENCY_RATIOS['decoded_p50']}x)"
    )


def print_floor(f: dict) -> None:
    gflops = f["backbone_gflops"]
    print(
        f"floor at this CPU's float32 matmul peak of {f['peak_gflops']} GFLOP/s (2 threads): backbone "
        f"{gflops['ours']} GFLOPs = {f['backbone_ours_ms']} ms (anomalib's features model "
        f"{gflops['anomalib']} GFLOPs = {f['backbone_anomalib_ms']} ms); kNN {f['queries']} queries x bank x "
        f"{f['dim']}: ours "
        f"{f['knn_ours_ms']} ms, anomalib {f['knn_anomalib_ms']} ms; Pillow PNG decode alone p50 "
        f"{f['png_decode_p50_ms']} ms"
    )


def scaling_table(rows: dict) -> Table:
    """Training cost against N; the default@N rows (ours alone, at the fixed default) last."""
    ordered = sorted(rows.items(), key=lambda kv: (kv[0].startswith("default@"), int(kv[0].split("@")[-1])))
    cells = []
    for n, row in ordered:
        o, a = row["ours"], row.get("anomalib") or {}
        cells.append(
            [
                n,
                o["train_seconds"],
                o.get("train_seconds_at_reference"),
                o["wall_seconds"],
                o["peak_gb"],
                o["bank_patches"],
                *(a.get(k) for k in ("fit_seconds", "wall_seconds", "peak_gb")),
            ]
        )
    return Table(
        "Training cost against N (bottle subsets, and its training images flipped, turned and shifted to "
        "800; "
        f"default@N: ours at the fixed {DEFAULT_INPUT_SIZE} px default)",
        [
            "images",
            "ours train s",
            "at the reference speed",
            "ours process s",
            "ours peak GB",
            "ours bank",
            "anomalib fit s",
            "anomalib process s",
            "anomalib peak GB",
        ],
        cells,
        notes=[
            f"Targets, at the reference speed: bottle's training images at the default in < "
            f"{MAX_TRAIN_SECONDS_BOTTLE:g} s, default@{SYNTHETIC_IMAGES} in < {MAX_TRAIN_SECONDS_LARGE:g} s; "
            f"every training of ours within {MAX_PEAK_GB:g} GB. Process seconds add start-up and imports to "
            "what the "
            "model card's training clock counts."
        ],
    )


def _side_by_side(results: dict) -> Table:
    fit, q = results["fit"], results.get("quality")
    ours, theirs = fit["ours"], fit["anomalib"]
    rows = [
        [
            f"fit, {ours['n_train']} images (process wall)",
            f"{ours['train_seconds']} ({ours['wall_seconds']}) s",
            f"{theirs['fit_seconds']} ({theirs['wall_seconds']}) s",
            "",
            f"{fit['ratio']}x (>= {MIN_FIT_RATIO:g}x)",
        ],
        ["peak RSS of the fit", f"{ours['peak_gb']} GB", f"{theirs['peak_gb']} GB", "", ""],
    ]
    if q:
        keys = ("image_auroc", "pixel_auroc", "aupro")
        rows.append(
            [
                "image AUROC / pixel AUROC / AUPRO",
                " / ".join(f"{q['ours'][k]:.4f}" for k in keys),
                " / ".join(f"{q['anomalib'][k]:.4f}" for k in keys),
                "same model",
                "AUPRO and image AUROC >= (3 decimals)",
            ]
        )
    lat, ratios = results.get("latency"), results.get("ratios")
    if lat and ratios:
        for path, label, key in (
            ("a", "(a) PNG bytes -> score and map", "bytes"),
            ("b", "(b) decoded image -> score and map", "decoded"),
        ):
            cell = [
                f"{lat[f'{k}:{path}']['p50_ms']} / {lat[f'{k}:{path}']['p95_ms']} ms"
                if f"{k}:{path}" in lat
                else "-"
                for k in ("ours", "torch", "openvino")
            ]
            target = MIN_LATENCY_RATIOS[f"{key}_p50"]
            rows.append([f"{label}, p50 / p95", *cell, f"{ratios[f'{key}_p50']}x (>= {target:g}x)"])
        product = lat.get("ours:product")
        if product:
            rows.append(
                [
                    "our product path: PNG bytes -> verdict, regions, heatmap PNG",
                    f"{product['p50_ms']} / {product['p95_ms']} ms",
                    "",
                    "",
                    "",
                ]
            )
    cfg = results["config"]
    return Table(
        f"Bottle at {cfg['input_size']} px, {cfg['coreset_ratio']:g} coreset, {cfg['threads']} threads: ours "
        "against "
        "anomalib 2.7 PatchCore on the same backbone and weights",
        ["", "ours", "anomalib Torch", "anomalib OpenVINO", "anomalib's fastest / ours (target)"],
        rows,
        notes=[n for n in [openvino_note(results.get("peer", {}).get("openvino", {}))] if n],
    )


def tables(results: dict) -> list[Table]:
    """The tables of a record (docs/benchmarks.md is rendered from them)."""
    out = [_side_by_side(results)] if results.get("fit") else []
    f = results.get("floor")
    if f:
        g = f["backbone_gflops"]
        out.append(
            Table(
                f"The floor at this CPU's float32 matrix-product peak, {f['peak_gflops']} GFLOP/s",
                ["work", "ours", "anomalib"],
                [
                    [
                        "backbone GFLOPs (ms at the peak)",
                        f"{g['ours']} ({f['backbone_ours_ms']})",
                        f"{g['anomalib']} ({f['backbone_anomalib_ms']})",
                    ],
                    [
                        f"kNN: 2 x {f['queries']} queries x bank x {f['dim']} (ms at the peak)",
                        f["knn_ours_ms"],
                        f["knn_anomalib_ms"],
                    ],
                    ["Pillow's PNG decode of the same bytes, p50 ms", f["png_decode_p50_ms"], ""],
                ],
            )
        )
    if results.get("scaling"):
        out.append(scaling_table(results["scaling"]))
    return out


# ------------------------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--coreset-ratio", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the test images for latency")
    parser.add_argument("--block", type=int, default=10, help="images per block before the next path")
    parser.add_argument("--skip-scaling", action="store_true", help="no fits at 50, 100 and 800 images")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--peer-loader-workers", type=int, default=2, help="anomalib's data loader processes")
    parser.add_argument("--out", help="the record (default: docs/benchmarks/bench_peers.json)")
    parser.add_argument("--serve-ours", metavar="ARTIFACT", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    return parser.parse_args()


def skip_reason() -> str | None:
    if not (MVTEC / CLASS / "train/good").is_dir():
        return f"MVTec bottle not found under {MVTEC}"
    return ensure_peer_venv()


def prepare_peer(weights: Path, args: argparse.Namespace) -> tuple[dict, dict]:
    """Both full fits, then anomalib's quality outputs and OpenVINO export."""
    ours = fit_ours(MVTEC / CLASS, WORK / "ours.tar.gz", args)
    theirs = fit_anomalib(MVTEC / CLASS, WORK / "anomalib", weights, args)
    fit = {"ours": ours, "anomalib": theirs, **fit_ratio(ours, theirs)}
    print_fit(fit)
    images = WORK / "test_images.json"
    images.write_text(json.dumps(scored_test_paths()))
    argv = [str(PEER_PY), str(PEER_SCRIPT), "prepare", "--model", theirs["torch_model"],
            "--images", str(images), "--npz", str(WORK / "anomalib_test.npz"),
            "--work", str(WORK / "anomalib"), "--threads", str(args.threads),
            "--out", str(WORK / "prepare.json")]  # fmt: skip
    run_child(argv, WORK / "logs/prepare.log", cwd=WORK / "anomalib", env=peer_env())
    peer = {"torch_model": theirs["torch_model"], **json.loads((WORK / "prepare.json").read_text())}
    return fit, peer


def run(args: argparse.Namespace) -> dict:
    from model_server.engine.runtime import set_threads

    set_threads(args.threads)
    weights = WORK / "tf_efficientnet_lite0_features.pt"
    results: dict = {"config": {k: v for k, v in vars(args).items() if k not in ("serve_ours", "images")}}
    results["weights_keys"] = write_weights(weights)
    fit, peer = prepare_peer(weights, args)
    results |= {"fit": fit, "peer": peer}
    results["quality"] = evaluate_both(WORK / "ours.tar.gz", WORK / "anomalib_test.npz")
    print_quality(results["quality"])
    decode_p50 = None
    if not args.skip_latency:
        lat = measure_latency(WORK / "ours.tar.gz", peer, args)
        results |= {"latency": lat, "ratios": latency_ratios(lat)}
        print_latency(lat, results["ratios"], peer)
        decode_p50 = lat["ours:decode"]["p50_ms"]
    results["floor"] = floors(args, fit["ours"]["bank_patches"], fit["anomalib"]["bank_patches"], decode_p50)
    print_floor(results["floor"])
    if not args.skip_scaling:
        results["scaling"] = scaling(args, weights, {"ours": fit["ours"], "anomalib": fit["anomalib"]})
    return results


def main() -> int:
    args = parse_args()
    if args.serve_ours:
        return serve_ours(args.serve_ours, args.images, args.threads)
    reason = skip_reason()
    if reason:
        print(f"bench-peers skipped: {reason}")
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = run(args)
    results["bench_seconds"] = round(time.perf_counter() - t0, 1)
    return conclude(NAME, results, verdicts(results), tables(results), args.out)


if __name__ == "__main__":
    sys.exit(main())
