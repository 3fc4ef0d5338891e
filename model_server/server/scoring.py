"""The endpoint's scoring pipeline, as plain functions that need no HTTP: check every class, decode the images
on the I/O pool, score them per class through the micro-batchers, then render heatmaps on the I/O pool.
Problems become `HttpError`s: 400 (or the image error's own kind) for an image that cannot be decoded, 422
for a class the model lacks, 424 (ModelError) for a failure inside the model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor

from ivadas_contract.errors import TYPES
from model_server.engine.predictor import DecodedImage, Prediction, Predictor
from model_server.errors import ImageError, IvadasError, UnknownClassError
from model_server.server.endpoint import Generation
from model_server.server.protocol import HttpError, Instance, prediction_body

log = logging.getLogger("ivadas.server")
#: Stages of a prediction that ran on the model lane (the rest of the time there was spent waiting for it).
_MODEL_STAGES = ("preprocess", "backbone", "knn", "heatmap")


def check_classes(predictor: Predictor, instances: list[Instance]) -> None:
    """Every class must exist before any image is decoded."""
    for inst in instances:
        try:
            predictor.artifact.get(inst.class_name)
        except UnknownClassError as exc:
            raise HttpError(422, str(exc)) from None


async def decode_all(predictor: Predictor, instances: list[Instance], pool: Executor) -> list[DecodedImage]:
    loop = asyncio.get_running_loop()

    def decode(i: int) -> DecodedImage:
        name = "image" if len(instances) == 1 else f"instances[{i}]"
        return predictor.decode(instances[i].image, name=name)

    try:
        return list(
            await asyncio.gather(*(loop.run_in_executor(pool, decode, i) for i in range(len(instances))))
        )
    except ImageError as exc:  # its kind (invalid_image, payload_too_large...) sets the status
        kind = getattr(exc, "kind", "invalid_image")
        raise HttpError(TYPES.get(kind, 400), str(exc), kind if kind in TYPES else "invalid_image") from None


async def run_models(
    gen: Generation, instances: list[Instance], decoded: list[DecodedImage]
) -> tuple[list[Prediction], float]:
    """Predictions in request order (one forward pass per class group, coalesced with concurrent requests),
    and the ms spent waiting for and running the model."""
    by_class: dict[str, list[int]] = {}
    for i, inst in enumerate(instances):
        by_class.setdefault(inst.class_name, []).append(i)
    t = time.perf_counter()
    try:
        groups = await asyncio.gather(
            *(gen.batcher(c).score([decoded[i] for i in idx]) for c, idx in by_class.items())
        )
    except IvadasError as exc:
        raise HttpError(422, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a failure inside the model: 424 ModelError
        log.exception("model failure on endpoint %s", gen.endpoint.name)
        raise HttpError(424, f"the model failed: {type(exc).__name__}: {exc}", "model_error") from None
    preds: list[Prediction] = [None] * len(instances)  # type: ignore[list-item]
    for idx, group in zip(by_class.values(), groups, strict=True):
        for i, p in zip(idx, group, strict=True):
            preds[i] = p
    return preds, (time.perf_counter() - t) * 1000.0


def finish(predictor: Predictor, pred: Prediction, inst: Instance, model_ms: float) -> dict:
    """The response body of one prediction: its heatmap rendered and its flagged regions explained if asked
    for (off the model lane), and the time it queued."""
    run_ms = sum(pred.timings_ms.get(k, 0.0) for k in _MODEL_STAGES)
    pred.timings_ms["queue"] = round(max(model_ms - run_ms, 0.0), 3)  # waiting for a model lane
    if inst.return_heatmap:
        predictor.render(pred)
    if inst.explain:
        predictor.explain(pred)
    return prediction_body(pred)


async def score_instances(gen: Generation, instances: list[Instance], pool: Executor) -> list[dict]:
    """Response bodies, in request order, for instances already parsed (see protocol.parse_request), all
    from the one generation (artifact) of the endpoint that was current when the request started."""
    predictor = gen.predictor
    check_classes(predictor, instances)
    decoded = await decode_all(predictor, instances, pool)
    preds, model_ms = await run_models(gen, instances, decoded)
    loop = asyncio.get_running_loop()
    return list(
        await asyncio.gather(
            *(
                loop.run_in_executor(pool, finish, predictor, p, inst, model_ms)
                for p, inst in zip(preds, instances, strict=True)
            )
        )
    )
