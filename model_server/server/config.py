"""Model server settings and their defaults."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ivadas_contract.limits import MAX_PIXELS, MAX_REQUEST_BYTES

#: Most images in one forward pass; larger explicit batches ({"instances": [...]}) are split.
MAX_BATCH = 16
#: Most images that concurrent single-image requests are coalesced into. On 2 CPU cores a forward pass of
#: 2 images costs about the same per image as 1, of 4 or 8 up to twice as much (cache), so keep it small.
MAX_COALESCE = 2
#: Forward passes one endpoint runs at once. Two lanes on two cores keep both busy under load (each pass then
#: uses one core) while a lone request still gets every core.
MODEL_LANES = 2
#: Extra wait for more requests before a forward pass; 0 batches only what queued while the model was busy.
BATCH_WINDOW_MS = 0.0


@dataclass
class ServerConfig:
    endpoints: dict[str, str]  # name -> artifact path; the first also answers /invocations
    max_body_bytes: int = MAX_REQUEST_BYTES
    max_pixels: int = MAX_PIXELS
    max_batch: int = MAX_BATCH
    max_coalesce: int = MAX_COALESCE
    batch_window_ms: float = BATCH_WINDOW_MS
    model_lanes: int = MODEL_LANES
    cores: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    io_threads: int = 4
    #: the local stack's swap route (PUT /endpoints/{name}/artifact); never on in the container
    admin: bool = False
    #: the class of raw images sent without a class_name attribute (a Batch Transform job's, from its
    #: environment: CLASS_ENV)
    default_class: str | None = None

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        return cls(**json.loads(text))
