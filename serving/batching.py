"""Micro-batching: concurrent requests share one ONNX Runtime call.

One worker task owns the model. While a batch runs in the inference thread, new
requests queue up; the next batch takes them all (up to `max_size` images, waiting at
most `max_wait_s` for more). The queue is bounded so overload is refused quickly
instead of piling up latency, and the event loop never runs the model itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from serving.imaging import to_batch


class QueueFull(RuntimeError):
    """More images are waiting than the queue allows."""


@dataclass
class _Job:
    images: np.ndarray  # uint8 [k, H, W, 3]
    future: asyncio.Future[tuple[np.ndarray, float]]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Runs `predict` over batches gathered from concurrent `submit` calls."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        max_size: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._predict = predict
        self.max_size = max(1, max_size)
        self.max_wait_s = max(0.0, max_wait_s)
        self.max_queue = max(1, max_queue)
        self._on_batch = on_batch
        self._jobs: deque[_Job] = deque()
        self._queued_images = 0
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None

    @property
    def queued_images(self) -> int:
        return self._queued_images

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(RuntimeError("The service is shutting down."))
        self._jobs.clear()
        self._executor.shutdown(wait=True)

    async def submit(self, images: np.ndarray) -> tuple[np.ndarray, float]:
        """Queue uint8 images [k, H, W, 3]; returns (probabilities [k, C], inference ms).

        Raises QueueFull at once when the queue has no room; cancelling the caller
        (a deadline) drops its images from the queue if they have not started.
        """
        if self._queued_images + len(images) > self.max_queue:
            raise QueueFull(
                f"{self._queued_images} images are already waiting (limit {self.max_queue})."
            )
        future: asyncio.Future[tuple[np.ndarray, float]] = (
            asyncio.get_running_loop().create_future()
        )
        self._jobs.append(_Job(images, future))
        self._queued_images += len(images)
        self._wakeup.set()
        return await future

    async def run_alone(self, tensor: np.ndarray) -> np.ndarray:
        """Predict a ready float32 [N, 3, H, W] tensor in the inference thread, between
        batches: it shares the model's thread instead of competing with it for the cores."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._predict, tensor)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.max_wait_s > 0 and self._queued_images < self.max_size:
                deadline = self._jobs[0].enqueued + self.max_wait_s
                while self._queued_images < self.max_size:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except TimeoutError:
                        break
            jobs = self._take_batch()
            if not jobs:
                continue
            batch = np.concatenate([job.images for job in jobs])
            started = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self._executor, self._infer, batch)
            except Exception as exc:  # a model failure fails this batch, not the server
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            offset = 0
            for job in jobs:
                k = len(job.images)
                if not job.future.done():
                    job.future.set_result((probs[offset : offset + k], elapsed_ms))
                offset += k

    def _take_batch(self) -> list[_Job]:
        """Pop jobs until `max_size` images (a single larger job goes alone, in chunks)."""
        jobs: list[_Job] = []
        count = 0
        while self._jobs:
            job = self._jobs[0]
            if job.future.done():  # cancelled by its deadline while waiting
                self._jobs.popleft()
                self._queued_images -= len(job.images)
                continue
            if jobs and count + len(job.images) > self.max_size:
                break
            self._jobs.popleft()
            self._queued_images -= len(job.images)
            jobs.append(job)
            count += len(job.images)
        return jobs

    def _infer(self, images: np.ndarray) -> np.ndarray:
        # A job larger than max_size (an explanation, a big batch upload) runs in chunks so
        # ONNX Runtime's memory arena never grows past what max_size images need.
        chunks = []
        for start in range(0, len(images), self.max_size):
            chunk = images[start : start + self.max_size]
            began = time.perf_counter()
            chunks.append(self._predict(to_batch(chunk)))
            if self._on_batch:  # one observation per ONNX Runtime call
                self._on_batch(len(chunk), time.perf_counter() - began)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
