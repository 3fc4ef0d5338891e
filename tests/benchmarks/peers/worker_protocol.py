"""The latency workers' protocol, shared by both sides of bench-peers (ours in .venv, anomalib's in its own
venv; this file imports only the standard library, so either can load it).

A worker warms up, says {"ready": true, "images": N} on its private stdout, then answers each request line
{"op": name, "i": image index} with {"ms": its own wall time, "score": ...} until {"op": "quit"}.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Callable

WARM_UP_IMAGES = 3


def protocol_stream() -> io.TextIOWrapper:
    """A private copy of stdout for the JSON lines; stdout itself then goes to stderr, so library prints
    cannot corrupt the protocol."""
    stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return stream


def serve(proto: io.TextIOWrapper, ops: dict[str, Callable[[int], float]], images: int) -> None:
    """Warm every op up, then time one op on one image per request line, until "quit". `proto` is the
    worker's `protocol_stream()`, taken before it loads anything."""
    for i in range(min(WARM_UP_IMAGES, images)):
        for op in ops.values():
            op(i)
    proto.write(json.dumps({"ready": True, "images": images}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        t = time.perf_counter()
        score = ops[request["op"]](request["i"])
        proto.write(json.dumps({"ms": (time.perf_counter() - t) * 1000.0, "score": score}) + "\n")
