"""anomalib's side of `make bench-peers`: fit, export and serve anomalib's PatchCore (in build/peer-venv).

It runs in a venv of its own (anomalib 2.7 and the dependencies it asks for) and never imports this project's
packages: what is measured is anomalib as its users run it. The orchestrator, tests/benchmarks/bench_peers.py,
calls it in three ways:

  fit      PatchCore on timm tf_efficientnet_lite0 stages (2, 3), pre_trained=False, the project's ImageNet
           weights loaded with strict=True, normalisation mean = std = 0.5, fitted by anomalib's Engine on its
           Folder datamodule; the model exported as Torch. JSON: seconds around engine.fit and its phases.
  prepare  the Torch export's raw image scores and anomaly maps on the test images (npz, for the project's
           metrics), then the OpenVINO export at the test images' size. JSON: what the export came out as.
  serve    one inferencer (torch or openvino) as a long-lived worker: a JSON line per request on stdin
           ({"op": "a" | "b", "i": n}), a JSON line back with the milliseconds measured here.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from anomalib.data import Folder, NumpyImageBatch
from anomalib.data.utils import read_image
from anomalib.deploy import ExportType, OpenVINOInferencer, TorchInferencer
from anomalib.engine import Engine
from anomalib.models import Patchcore
from anomalib.pre_processing import PreProcessor
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import Callback
from PIL import Image
from torchvision.transforms.v2 import Compose, Normalize, Resize
from torchvision.transforms.v2.functional import to_dtype, to_image
from worker_protocol import protocol_stream, serve  # beside this script

BACKBONE = "tf_efficientnet_lite0"
LAYERS = (2, 3)  # timm feature stages at strides 8 and 16: the project's "layers 2+3"
MEAN_STD = [0.5, 0.5, 0.5]  # what the TF-trained EfficientNet-Lite weights expect, as the project uses


# ---------------------------------------------------------------------------------------------------- fit


class Phases(Callback):
    """Clock marks inside engine.fit. Callbacks run before the module's hooks, so the coreset (fitted in the
    module's on_validation_start) falls between validation start and its first batch."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.marks.setdefault("validation_start", time.perf_counter())

    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: object,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.marks.setdefault("first_validation_batch", time.perf_counter())

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.marks["validation_end"] = time.perf_counter()


def build_model(weights: Path, input_size: int, coreset_ratio: float) -> Patchcore:
    """anomalib's PatchCore on the project's backbone, input size and normalisation; the rest its defaults."""
    transform = Compose(
        [Resize((input_size, input_size), antialias=True), Normalize(mean=MEAN_STD, std=MEAN_STD)]
    )
    model = Patchcore(
        backbone=BACKBONE,
        layers=LAYERS,
        pre_trained=False,
        coreset_sampling_ratio=coreset_ratio,
        pre_processor=PreProcessor(transform=transform),
        visualizer=False,  # writes result images; not part of fitting
    )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    # strict: a missing or extra key raises here rather than leaving random weights in a layer
    model.model.feature_extractor.feature_extractor.load_state_dict(state, strict=True)
    return model


def datamodule(class_dir: Path, workers: int) -> Folder:
    """The class folder (MVTec layout) as anomalib's Folder data; validation on the whole test split, as its
    MVTecAD datamodule does by default (Folder's own default would halve the test split)."""
    defects = sorted(p.name for p in (class_dir / "test").iterdir() if p.is_dir() and p.name != "good")
    return Folder(
        name=class_dir.name,
        root=class_dir,
        normal_dir="train/good",
        abnormal_dir=[f"test/{d}" for d in defects],
        normal_test_dir="test/good",
        mask_dir=[f"ground_truth/{d}" for d in defects],
        num_workers=workers,
        val_split_mode="same_as_test",
    )


def engine(work: Path, callbacks: list[Callback] | None = None) -> Engine:
    return Engine(
        accelerator="cpu",
        devices=1,
        logger=False,
        default_root_dir=work,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def cmd_fit(args: argparse.Namespace) -> dict:
    seed_everything(0)  # the coreset's projection (numpy) and first centre (torch) are random
    model = build_model(Path(args.weights), args.input_size, args.coreset_ratio)
    data = datamodule(Path(args.data), args.workers)
    phases = Phases()
    eng = engine(Path(args.work), [phases])
    t0 = time.perf_counter()
    eng.fit(model=model, datamodule=data)
    fit_seconds = time.perf_counter() - t0
    exported = eng.export(model, ExportType.TORCH, export_root=args.work)
    marks = {k: round(v - t0, 3) for k, v in phases.marks.items()}
    return {
        "fit_seconds": round(fit_seconds, 3),
        "marks_seconds": marks,
        "n_train": len(data.train_data),
        "n_validation": len(data.val_data),
        "bank_patches": int(model.model.memory_bank.shape[0]),
        "bank_dim": int(model.model.memory_bank.shape[1]),
        "torch_model": str(exported),
    }


# ------------------------------------------------------------------------------------------------ prepare


@torch.no_grad()
def raw_outputs(module: torch.nn.Module, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Raw image scores [N] and anomaly maps [N, H, W] at the model's input size, before anomalib's
    post-processor rescales and clips them; images read and transformed as in its validation loop."""
    scores, maps = [], []
    for path in paths:
        x = module.pre_processor.transform(read_image(path, as_tensor=True)[None])
        out = module.model(x)
        scores.append(float(out.pred_score.reshape(-1)[0]))
        maps.append(out.anomaly_map.reshape(out.anomaly_map.shape[-2:]).numpy().astype(np.float32))
    return np.asarray(scores, dtype=np.float64), np.stack(maps)


def batch_of(model: object) -> int | None:
    """The OpenVINO model's batch size when fixed, None when dynamic."""
    dim = model.input(0).get_partial_shape()[0]
    return dim.get_length() if dim.is_static else None


def openvino_export(module: torch.nn.Module, work: Path, size: tuple[int, int], threads: int) -> dict:
    """Export to OpenVINO at the images' size. Where it comes out with a fixed batch other than 1, try a
    reshape to 1 and keep it only if it compiles; otherwise the worker sends each image twice."""
    import openvino as ov

    t0 = time.perf_counter()
    try:
        xml = engine(work).export(module, ExportType.OPENVINO, export_root=work, input_size=size)
    except Exception as exc:  # reported; the Torch path is still measured
        return {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    facts: dict = {"xml": str(Path(xml).resolve()), "export_seconds": round(time.perf_counter() - t0, 1)}
    core = ov.Core()
    model = core.read_model(str(xml))
    facts["exported_batch"] = batch_of(model)
    facts["batch"] = facts["exported_batch"] or 1
    if facts["batch"] != 1:
        try:
            model.reshape({model.input(0).get_any_name(): [1, 3, *size]})
            core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads})
            facts["xml"] = str(Path(xml).with_name("model_batch1.xml"))
            ov.save_model(model, facts["xml"])
            facts["batch"] = 1
        except Exception as exc:  # the known failure: reported, and the batch it has is used
            facts["reshape_to_1_error"] = f"{type(exc).__name__}: {exc}"[:1000]
    return facts


def cmd_prepare(args: argparse.Namespace) -> dict:
    module = TorchInferencer(args.model, device="cpu").model
    paths = json.loads(Path(args.images).read_text())
    scores, maps = raw_outputs(module, paths)
    np.savez(args.npz, scores=scores, maps=maps)
    with Image.open(paths[0]) as first:
        size = (first.height, first.width)
    return {
        "maps_shape": list(maps.shape),
        "openvino": openvino_export(module, Path(args.work), size, args.threads),
    }


# -------------------------------------------------------------------------------------------------- serve


def decode_like_read_image(data: bytes) -> Image.Image:
    """PNG bytes -> RGB PIL image, as anomalib's read_image opens a file."""
    return Image.open(io.BytesIO(data)).convert("RGB")


class TorchRunner:
    """anomalib's TorchInferencer: (a) bytes decoded as its read_image does (as_tensor), (b) an RGB array."""

    def __init__(self, path: str) -> None:
        self.inferencer = TorchInferencer(path, device="cpu")

    def from_bytes(self, data: bytes) -> float:
        image = to_dtype(to_image(decode_like_read_image(data)), torch.float32, scale=True)
        return float(self.inferencer.predict(image).pred_score.reshape(-1)[0])

    def from_array(self, rgb: np.ndarray) -> float:
        return float(self.inferencer.predict(rgb).pred_score.reshape(-1)[0])


class OpenVINORunner:
    """anomalib's OpenVINOInferencer; with a fixed batch of 2 each image goes in twice (first answer kept)."""

    def __init__(self, path: str, batch: int, threads: int) -> None:
        self.inferencer = OpenVINOInferencer(path, device="CPU", config={"INFERENCE_NUM_THREADS": threads})
        self.batch = batch

    def _predict(self, image: np.ndarray) -> float:
        if self.batch == 1:
            return float(np.asarray(self.inferencer.predict(image).pred_score).reshape(-1)[0])
        x = self.inferencer.pre_process(image)
        x = np.concatenate([x] * self.batch)
        out = self.inferencer.post_process(self.inferencer.model({self.inferencer.input_blob.any_name: x}))
        return float(np.asarray(NumpyImageBatch(image=x, **out).pred_score).reshape(-1)[0])

    def from_bytes(self, data: bytes) -> float:
        return self._predict(np.array(decode_like_read_image(data)) / 255.0)  # read_image's numpy form

    def from_array(self, rgb: np.ndarray) -> float:
        return self._predict(rgb)


def cmd_serve(args: argparse.Namespace) -> None:
    proto = protocol_stream()
    paths = json.loads(Path(args.images).read_text())
    blobs = [Path(p).read_bytes() for p in paths]
    arrays = [np.asarray(decode_like_read_image(b)) for b in blobs]
    if args.kind == "torch":
        runner: TorchRunner | OpenVINORunner = TorchRunner(args.model)
    else:
        runner = OpenVINORunner(args.model, args.batch, args.threads)
    ops = {"a": lambda i: runner.from_bytes(blobs[i]), "b": lambda i: runner.from_array(arrays[i])}
    serve(proto, ops, len(blobs))


# --------------------------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("fit", "prepare", "serve"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", help="fit: class folder in MVTec layout")
    parser.add_argument("--weights", help="fit: backbone state dict (.pt) in timm's key names")
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--coreset-ratio", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=2, help="fit: data loader worker processes")
    parser.add_argument("--work", help="fit, prepare: folder for anomalib's files")
    parser.add_argument("--out", help="fit, prepare: JSON result")
    parser.add_argument("--model", help="prepare, serve: exported model (.pt or .xml)")
    parser.add_argument("--images", help="prepare, serve: JSON list of test image paths")
    parser.add_argument("--npz", help="prepare: raw scores and maps")
    parser.add_argument("--kind", choices=("torch", "openvino"), help="serve: which inferencer")
    parser.add_argument("--batch", type=int, default=1, help="serve: the OpenVINO model's batch size")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TRUST_REMOTE_CODE", "1")  # TorchInferencer unpickles the model it just wrote
    if args.command == "serve":
        cmd_serve(args)
        return 0
    result = cmd_fit(args) if args.command == "fit" else cmd_prepare(args)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
