"""Micro-batching: concurrent requests share one ONNX Runtime call.

One loop task owns the model. While a batch runs in an inference thread, new requests
queue up; the next batch takes them all (up to `max_size` images, waiting at most
`max_wait_s` for more). With `workers` inference threads, up to that many batches run at
once (one ONNX Runtime session is safe to call from several threads): each can run the
graph on one core without intra-op synchronisation, and the cores stay busy. A job
larger than `max_size` runs alone, in chunks, with the small jobs that queue meanwhile
run between its chunks. The queue is
bounded so overload is refused at once instead of piling up latency, and the event loop
never runs the model itself.

The loop is supervised: if it ever dies, `alive` turns false (readiness follows), the
jobs waiting are refused, and the loop restarts after `restart_delay_s`; after
`max_restarts` deaths within a minute it stays down (`gave_up`: liveness fails, so the
orchestrator restarts the process).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from contracts.imaging import to_batch
from serving.cpu_stages import StageCpu
from serving.refusals import Refused

log = logging.getLogger("serving.batching")
Result = tuple[np.ndarray, float]


@dataclass
class _Job:
    images: np.ndarray  # uint8 [k, H, W, 3] pixels, or float32 [k, 3, H, W] model input
    future: asyncio.Future[Result]
    enqueued: float = field(default_factory=time.perf_counter)


class _Abandoned(Exception):
    """The only caller of a chunked job gave up (its deadline): stop running its chunks."""


def model_input(images: np.ndarray) -> np.ndarray:
    """uint8 pixels go through the image contract's `to_batch`; float32 input is ready."""
    return images if images.dtype == np.float32 else to_batch(images)


class MicroBatcher:
    """Runs `predict` over batches gathered from concurrent `submit` calls."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        max_size: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int, float], None] | None = None,
        retry_after_s: int = 1,
        restart_delay_s: float = 1.0,
        max_restarts: int = 5,
        cpu: StageCpu | None = None,
        workers: int = 1,
    ) -> None:
        self._predict = predict
        self.max_size = max(1, max_size)
        self.max_wait_s = max(0.0, max_wait_s)
        self.max_queue = max(1, max_queue)
        self._on_batch = on_batch
        self._cpu = cpu
        self.retry_after_s = retry_after_s
        self.restart_delay_s = restart_delay_s
        self.max_restarts = max_restarts
        self._jobs: deque[_Job] = deque()
        self._queued_images = 0
        self._wakeup = asyncio.Event()
        self.workers = max(1, workers)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None
        self._free = asyncio.Semaphore(self.workers)
        self._batches: set[asyncio.Task[None]] = set()  # running in an inference thread
        self._stopping = False
        self._deaths: deque[float] = deque()
        self.gave_up = False

    @property
    def queued_images(self) -> int:
        return self._queued_images

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")
        self._task.add_done_callback(self._on_loop_exit)

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail_waiting(Refused("shutting_down", "The service is shutting down."))
        self._executor.shutdown(wait=True)

    async def submit(self, images: np.ndarray) -> Result:
        """Queue k images (uint8 pixels or float32 input); returns (probabilities [k, C], ms).

        Refuses at once when the queue has no room or the loop is down; cancelling the
        caller (a deadline) drops its images from the queue, or stops its remaining chunks.
        """
        if not self.alive:
            raise Refused(
                "inference_unavailable", "The inference loop is restarting.", self.retry_after_s
            )
        if self._queued_images + len(images) > self.max_queue:
            raise Refused(
                "queue_full",
                f"The server is busy: {self._queued_images} images are already waiting "
                f"(limit {self.max_queue}). Retry shortly.",
                self.retry_after_s,
            )
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._jobs.append(_Job(images, future))
        self._queued_images += len(images)
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._gather()
            jobs = self._take_batch()
            if len(jobs) == 1 and len(jobs[0].images) > self.max_size:
                await self._run_large(jobs[0])
            elif jobs:
                await self._hand_over(jobs)

    async def _hand_over(self, jobs: list[_Job]) -> None:
        """Start a batch in a free inference thread (waiting for one to be free)."""
        await self._free.acquire()
        task = asyncio.get_running_loop().create_task(self._run_batch(jobs))
        self._batches.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._free.release()

    async def _run_batch(self, jobs: list[_Job]) -> None:
        """One ONNX Runtime call (per chunk) in the inference thread; results to the jobs."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            infer = self._cpu.timed("inference", self._infer) if self._cpu else self._infer
            probs = await loop.run_in_executor(self._executor, infer, jobs)
        except Exception as exc:  # a failed batch (MemoryError too) fails its jobs only
            if not isinstance(exc, _Abandoned):
                log.error("Inference failed for %d job(s): %r", len(jobs), exc)
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        offset = 0
        for job in jobs:
            k = len(job.images)
            if not job.future.done():
                job.future.set_result((probs[offset : offset + k], elapsed_ms))
            offset += k

    async def _run_large(self, job: _Job) -> None:
        """A job larger than a batch (an explanation's ~50 variants), one chunk at a time.

        Between its chunks the small jobs queued meanwhile run first, so a prediction
        waits for one chunk of an explanation, never for all of it. A job whose caller
        gave up stops between chunks.
        """
        loop = asyncio.get_running_loop()
        parts, elapsed_ms = [], 0.0
        for start in range(0, len(job.images), self.max_size):
            if job.future.done():
                return
            chunk = _Job(job.images[start : start + self.max_size], loop.create_future())
            await self._run_batch([chunk])
            if chunk.future.exception() is not None:
                if not job.future.done():
                    job.future.set_exception(chunk.future.exception())  # type: ignore[arg-type]
                return
            probs, ms = chunk.future.result()
            parts.append(probs)
            elapsed_ms += ms
            while self._jobs and len(self._jobs[0].images) <= self.max_size:
                small = self._take_batch()
                if small:
                    await self._run_batch(small)
        if not job.future.done():
            job.future.set_result((np.concatenate(parts), elapsed_ms))

    async def _gather(self) -> None:
        """Wait for a first job, then up to `max_wait_s` for the batch to fill."""
        if not self._jobs:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.max_wait_s <= 0 or self._queued_images >= self.max_size:
            return
        deadline = self._jobs[0].enqueued + self.max_wait_s
        while self._queued_images < self.max_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

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

    def _infer(self, jobs: list[_Job]) -> np.ndarray:
        """Run in the inference thread, one ONNX Runtime call per chunk of `max_size`.

        Chunks keep ONNX Runtime's memory arena within what `max_size` images need; a
        large job whose caller gave up stops between chunks.
        """
        if len(jobs) == 1:
            images = jobs[0].images
            chunks = [images[i : i + self.max_size] for i in range(0, len(images), self.max_size)]
        else:
            chunks = [np.concatenate([model_input(job.images) for job in jobs])]
        out = []
        for chunk in chunks:
            if len(jobs) == 1 and jobs[0].future.done():
                raise _Abandoned
            began = time.perf_counter()
            out.append(self._predict(model_input(chunk)))
            if self._on_batch:  # one observation per ONNX Runtime call
                self._on_batch(len(chunk), time.perf_counter() - began)
        return out[0] if len(out) == 1 else np.concatenate(out)

    def _fail_waiting(self, error: Exception) -> None:
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(error)
        self._jobs.clear()
        self._queued_images = 0

    def _on_loop_exit(self, task: asyncio.Task[None]) -> None:
        """Supervision: the loop only ends on stop(); any other end is a fault."""
        if self._stopping:
            return
        fault = "cancelled" if task.cancelled() else repr(task.exception())
        now = time.monotonic()
        self._deaths.append(now)
        while self._deaths and now - self._deaths[0] > 60.0:
            self._deaths.popleft()
        self._fail_waiting(
            Refused("inference_unavailable", "The inference loop failed.", self.retry_after_s)
        )
        if len(self._deaths) > self.max_restarts:
            self.gave_up = True
            log.critical("The inference loop died %d times in a minute (%s); giving up",
                         len(self._deaths), fault)  # fmt: skip
            return
        log.error("The inference loop died (%s); restarting in %.1f s", fault, self.restart_delay_s)
        task.get_loop().call_later(self.restart_delay_s, self._restart)

    def _restart(self) -> None:
        if not self._stopping:
            self.start()
