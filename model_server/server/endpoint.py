"""One named endpoint of the server: its artifact, loaded in the background, its model lanes and a
micro-batcher per class."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from model_server.engine.class_model import ClassModel
from model_server.engine.predictor import DecodedImage, Prediction, Predictor
from model_server.engine.runtime import set_threads
from model_server.errors import IvadasError
from model_server.server.batching import MicroBatcher
from model_server.server.config import ServerConfig

log = logging.getLogger("ivadas.server")


class Endpoint:
    def __init__(self, name: str, artifact: str | Path, config: ServerConfig) -> None:
        self.name = name
        self.artifact_path = str(artifact)
        self.config = config
        self.predictor: Predictor | None = None
        self.load_error: str | None = None
        self.model_executor = ThreadPoolExecutor(
            max_workers=config.model_lanes, thread_name_prefix=f"model-{name}"
        )
        self._batchers: dict[str, MicroBatcher] = {}
        self._active = 0
        self._active_lock = threading.Lock()

    def _run(self, model: ClassModel, images: list[DecodedImage]) -> list[Prediction]:
        """One forward pass: alone it uses every core; with another in flight each takes its share, so two
        lanes never oversubscribe the cores (OpenMP thread counts are per calling thread)."""
        with self._active_lock:
            self._active += 1
            active = self._active
        try:
            set_threads(max(1, self.config.cores // active))
            return self.predictor.score(model, images)
        finally:
            with self._active_lock:
                self._active -= 1

    def load(self) -> None:
        """Load the artifact and run one warm-up pass; a failure is kept for /ping, never raised."""
        try:
            self.predictor = Predictor(self.artifact_path, max_pixels=self.config.max_pixels)
            self.predictor.score(  # warm-up: the first forward pass allocates buffers
                next(iter(self.predictor.artifact.classes.values())),
                [DecodedImage(np.zeros((64, 64, 3), np.uint8))],
            )
            log.info(
                "endpoint %s loaded %s (%s)", self.name, self.artifact_path, self.predictor.model_version
            )
        except IvadasError as exc:
            self.load_error = str(exc)
            log.error("endpoint %s cannot load %s: %s", self.name, self.artifact_path, exc)
        except Exception as exc:  # noqa: BLE001 - /ping must report it instead of the process dying
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("endpoint %s failed to load", self.name)

    def batcher(self, class_name: str) -> MicroBatcher:
        if class_name not in self._batchers:
            assert self.predictor is not None
            model = self.predictor.artifact.get(class_name)
            self._batchers[class_name] = MicroBatcher(
                run=lambda images: self._run(model, images),
                executor=self.model_executor,
                max_batch=self.config.max_batch,
                max_coalesce=self.config.max_coalesce,
                window_s=self.config.batch_window_ms / 1000.0,
                lanes=self.config.model_lanes,
            )
        return self._batchers[class_name]
