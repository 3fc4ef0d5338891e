"""One named endpoint of the server: its loaded model (a `Generation`: the artifact's predictor and a
micro-batcher per class), loaded in the background, and its model lanes.

An endpoint can swap to another artifact while it serves (what a SageMaker endpoint update does with a new
fleet): the new generation loads and warms up beside the old one, then replaces it in one assignment. A
request takes the generation current when it starts and finishes on it, so none in flight fails or is
answered by a mix of the two; the old generation is dropped once its last request is done.
"""

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


class Generation:
    """One loaded artifact of an endpoint."""

    def __init__(self, endpoint: Endpoint, predictor: Predictor, artifact_path: str) -> None:
        self.endpoint = endpoint
        self.predictor = predictor
        self.artifact_path = artifact_path
        self._batchers: dict[str, MicroBatcher] = {}

    @property
    def model_version(self) -> str:
        return self.predictor.model_version

    def batcher(self, class_name: str) -> MicroBatcher:
        if class_name not in self._batchers:
            model = self.predictor.artifact.get(class_name)
            config = self.endpoint.config
            self._batchers[class_name] = MicroBatcher(
                run=lambda images: self.endpoint.run(self.predictor, model, images),
                executor=self.endpoint.model_executor,
                max_batch=config.max_batch,
                max_coalesce=config.max_coalesce,
                window_s=config.batch_window_ms / 1000.0,
                lanes=config.model_lanes,
            )
        return self._batchers[class_name]


class Endpoint:
    def __init__(self, name: str, artifact: str | Path, config: ServerConfig) -> None:
        self.name = name
        self.artifact_path = str(artifact)
        self.config = config
        self.current: Generation | None = None
        self.load_error: str | None = None
        self.model_executor = ThreadPoolExecutor(
            max_workers=config.model_lanes, thread_name_prefix=f"model-{name}"
        )
        self._active = 0
        self._active_lock = threading.Lock()
        self._swap_lock = threading.Lock()

    @property
    def predictor(self) -> Predictor | None:
        return None if self.current is None else self.current.predictor

    def run(self, predictor: Predictor, model: ClassModel, images: list[DecodedImage]) -> list[Prediction]:
        """One forward pass: alone it uses every core; with another in flight each takes its share, so two
        lanes never oversubscribe the cores (OpenMP thread counts are per calling thread)."""
        with self._active_lock:
            self._active += 1
            active = self._active
        try:
            set_threads(max(1, self.config.cores // active))
            return predictor.score(model, images)
        finally:
            with self._active_lock:
                self._active -= 1

    def _open(self, path: str) -> Generation:
        predictor = Predictor(path, max_pixels=self.config.max_pixels)
        predictor.score(  # warm-up: the first forward pass allocates buffers
            next(iter(predictor.artifact.classes.values())), [DecodedImage(np.zeros((64, 64, 3), np.uint8))]
        )
        return Generation(self, predictor, path)

    def load(self) -> None:
        """Load the artifact and run one warm-up pass; a failure is kept for /ping, never raised."""
        try:
            self.current = self._open(self.artifact_path)
            log.info("endpoint %s loaded %s (%s)", self.name, self.artifact_path, self.current.model_version)
        except IvadasError as exc:
            self.load_error = str(exc)
            log.error("endpoint %s cannot load %s: %s", self.name, self.artifact_path, exc)
        except Exception as exc:  # noqa: BLE001 - /ping must report it instead of the process dying
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("endpoint %s failed to load", self.name)

    def swap(self, path: str | Path) -> Generation:
        """Serve `path` from now on; raises (and the current generation keeps serving) if it cannot load."""
        with self._swap_lock:  # one swap at a time; requests go on meanwhile
            generation = self._open(str(path))
            self.current, self.artifact_path, self.load_error = generation, str(path), None
        log.info("endpoint %s swapped to %s (%s)", self.name, path, generation.model_version)
        return generation
