"""Micro-batching: requests for the same endpoint and class that arrive while the model lanes are busy are
coalesced into the next forward pass. No added wait when idle, bigger batches under load."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from model_server.server.config import BATCH_WINDOW_MS, MAX_BATCH, MAX_COALESCE


@dataclass
class _Job:
    images: list[Any]
    future: asyncio.Future


@dataclass
class MicroBatcher:
    """Queue of scoring jobs for one (endpoint, class); one forward pass per drained group of jobs."""

    #: one forward pass: images in, one result per image out, in order (runs on `executor`)
    run: Callable[[list[Any]], list[Any]]
    executor: ThreadPoolExecutor
    max_batch: int = MAX_BATCH
    max_coalesce: int = MAX_COALESCE
    window_s: float = BATCH_WINDOW_MS / 1000.0
    #: forward passes in flight at once (each on its own executor thread)
    lanes: int = 1
    queue: list[_Job] = field(default_factory=list)
    draining: bool = False
    _task: asyncio.Task | None = None
    _slots: asyncio.Semaphore | None = None
    _running: set = field(default_factory=set)

    async def score(self, images: list[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        results: list[Any] = []
        for start in range(0, len(images), self.max_batch):  # an explicit batch above the cap is split
            job = _Job(images[start : start + self.max_batch], loop.create_future())
            self.queue.append(job)
            if not self.draining:
                self.draining = True
                self._task = loop.create_task(self._drain())  # keep a reference: tasks are weakly held
            results.extend(await job.future)
        return results

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.lanes)
        try:
            while self.queue:
                await self._slots.acquire()  # a free lane; meanwhile new requests pile up and get coalesced
                if not self.queue:
                    self._slots.release()
                    break
                if self.window_s > 0 and sum(len(j.images) for j in self.queue) < self.max_coalesce:
                    await asyncio.sleep(self.window_s)
                group, count = [], 0  # the first job whole (an explicit batch), then others up to the cap
                while self.queue and (not group or count + len(self.queue[0].images) <= self.max_coalesce):
                    job = self.queue.pop(0)
                    group.append(job)
                    count += len(job.images)
                task = loop.create_task(self._run_group(group))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        finally:
            self.draining = False

    async def _run_group(self, group: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        batch = [img for job in group for img in job.images]
        try:
            preds = await loop.run_in_executor(self.executor, self.run, batch)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            for job in group:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self._slots.release()
        offset = 0
        for job in group:
            n = len(job.images)
            if not job.future.done():
                job.future.set_result(preds[offset : offset + n])
            offset += n
