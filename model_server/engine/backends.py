"""Where the feature network runs: torch (the reference) or OpenVINO (the CPU runtime the server uses).

Both run the same computation, the backbone and the patch aggregation (features.py), in float32: OpenVINO
compiles the torch module once per feature configuration and canvas, with a dynamic batch dimension so one
compiled model serves a single request and a training batch alike. On this machine's CPU it is the faster of
the two (docs/benchmarks.md); torch stays the reference that tests hold it to (scores within 1e-4 relative).
OpenVINO's CPU plugin would pick bf16 on CPUs that have it: the precision is pinned to f32 so a score never
depends on the host. `IVADAS_RUNTIME` (torch | openvino) overrides the default, which is OpenVINO where it
is installed.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable

import numpy as np
import torch

RUNTIMES = ("torch", "openvino")


def default_runtime() -> str:
    """`IVADAS_RUNTIME` if set, else OpenVINO where it can be imported, else torch."""
    chosen = os.environ.get("IVADAS_RUNTIME", "").strip().lower()
    if chosen:
        if chosen not in RUNTIMES:
            raise ValueError(f"IVADAS_RUNTIME={chosen!r} is not one of {', '.join(RUNTIMES)}")
        return chosen
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "torch"
    return "openvino"


Features = Callable[[torch.Tensor], torch.Tensor]


class TorchFeatures:
    """The module as it is, channels-last (measured faster on oneDNN's CPU convolutions)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.contiguous(memory_format=torch.channels_last))


class OpenVINOFeatures:
    """The module compiled by OpenVINO for the CPU, f32.

    Like torch under the model server (endpoint.py), it follows the calling thread's thread count: a pass
    alone uses every core, two concurrent passes one core each. So one compilation per thread count: n
    threads per pass means `cores // n` streams of n threads, so that many passes run side by side. A request
    is not thread-safe: each calling thread has its own per compilation.
    """

    def __init__(self, module: torch.nn.Module, canvas: tuple[int, int]) -> None:
        import openvino as ov

        example = torch.zeros(1, 3, *canvas)
        shape = ov.PartialShape([-1, 3, *canvas])  # any batch size
        with torch.no_grad(), warnings.catch_warnings():
            # conversion traces the module: shapes are fixed per canvas, so the tracer's notes that a shape
            # check becomes a constant (and that tracing is deprecated in torch) do not apply
            warnings.simplefilter("ignore", (torch.jit.TracerWarning, FutureWarning))
            self._model = ov.convert_model(module, example_input=example, input=[shape])
        self._core = ov.Core()
        self._compiled: dict[int, object] = {}
        self._guard = threading.Lock()
        self._local = threading.local()
        threads = torch.get_num_threads()
        for n in {threads, max(1, threads // 2)}:  # alone, and beside a second pass: compiled before requests
            self.compiled(n)

    def compiled(self, threads: int) -> object:
        """The compilation whose passes use `threads` threads each (made once)."""
        with self._guard:
            if threads not in self._compiled:
                cores = max(threads, len(os.sched_getaffinity(0)))
                config = {
                    "INFERENCE_PRECISION_HINT": "f32",
                    "NUM_STREAMS": max(1, cores // threads),
                    "INFERENCE_NUM_THREADS": max(1, cores // threads) * threads,
                }
                self._compiled[threads] = self._core.compile_model(self._model, "CPU", config)
            return self._compiled[threads]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        threads = torch.get_num_threads()
        requests = self._local.__dict__.setdefault("requests", {})
        if threads not in requests:
            requests[threads] = self.compiled(threads).create_infer_request()
        out = requests[threads].infer({0: np.ascontiguousarray(x.numpy())})[0]
        return torch.from_numpy(np.array(out, copy=True))  # the request reuses its output buffer


def features_for(module: torch.nn.Module, canvas: tuple[int, int], runtime: str) -> Features:
    """The feature function of `module` (in eval mode) on `runtime`, for inputs of the `canvas` (H, W)."""
    if runtime == "torch":
        return TorchFeatures(module)
    if runtime == "openvino":
        return OpenVINOFeatures(module, canvas)
    raise ValueError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
