"""Shadow scoring: a challenger bundle scores a share of live photos off the request path.

The served (champion) answer never waits for the challenger. `offer` is called once per
served photo and only appends to a bounded queue (or drops, counted, when it is full);
one thread of its own, at a lower CPU priority (`SHADOW_NICE`) and with one ONNX Runtime
thread (`SHADOW_THREADS`), takes what is queued, scores it in small batches and hands
both answers to the store. The challenger must follow the same image contract as the
champion: the same input size and the same classes in the same order, or it is refused.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from contracts.imaging import to_batch
from serving.inference.onnx_model import Model
from serving.inference.prediction import Prediction

log = logging.getLogger("serving.shadow")

BATCH = 8  # photos per challenger call at most: small, so a stop is never long


class ShadowError(RuntimeError):
    """The challenger cannot be scored beside this champion (the message says why)."""


@dataclass(frozen=True)
class ShadowResult:
    """One photo scored by both models: what the store keeps of the challenger's answer."""

    request_id: str
    served_label: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    model_version: str
    ts: float  # UNIX seconds

    @property
    def agrees(self) -> bool:
        return self.label == self.served_label


@dataclass(frozen=True)
class _Job:
    request_id: str
    served_label: str
    pixels: np.ndarray  # uint8 [S, S, 3], the champion's model input


def check_compatible(champion: Model, challenger: Model) -> None:
    """Refuse a challenger that does not read the same pixels or name the same classes."""
    c, s = champion.manifest, challenger.manifest
    if challenger.size != champion.size:
        raise ShadowError(
            f"Challenger {s.name} {s.version} takes {challenger.size} px photos; the served "
            f"model takes {champion.size} px. Shadow scoring needs the same input size."
        )
    if challenger.classes != champion.classes:
        raise ShadowError(
            f"Challenger {s.name} {s.version} names classes {challenger.classes}; the served "
            f"model {c.version} names {champion.classes}. Shadow scoring needs the same "
            "classes in the same order."
        )


def lower_priority(nice: int) -> None:
    """Raise this thread's niceness (Linux: per thread), so it yields the CPU to serving."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, current + nice))
    except OSError as exc:  # not allowed here: still bounded by its queue and one thread
        log.warning("Shadow thread priority unchanged: %s", exc)


class ShadowScorer:
    """The challenger, its bounded queue and the one low-priority thread that scores it."""

    def __init__(
        self,
        model: Model,
        *,
        share: float,
        queue_max: int,
        nice: int,
        sink: Callable[[list[ShadowResult]], None],
        on_drop: Callable[[str, int], None],
        seed: int | None = None,
    ) -> None:
        self.model = model
        self.share = share
        self.queue_max = queue_max
        self.nice = nice
        self._sink = sink
        self._on_drop = on_drop
        self._random = random.Random(seed)
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def offer(self, prediction: Prediction, pixels: np.ndarray) -> bool:
        """Queue a served photo for the challenger (never blocks); False when not queued.

        A share `SHADOW_SHARE` of photos is sampled; a sampled photo that finds the queue
        full is dropped and counted (`shadow_dropped_total{reason="queue_full"}`).
        """
        if self.share < 1.0 and self._random.random() >= self.share:
            return False
        job = _Job(prediction.request_id, prediction.label, pixels)
        with self._cond:
            if self._stopping or len(self._queue) >= self.queue_max:
                reason = "stopping" if self._stopping else "queue_full"
            else:
                self._queue.append(job)
                self._cond.notify()
                return True
        self._on_drop(reason, 1)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Score what is queued (within `timeout`), then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _take(self) -> list[_Job]:
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._stopping)
            return [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]

    def _run(self) -> None:
        lower_priority(self.nice)
        while jobs := self._take():
            try:
                self._sink(self.score(jobs))
            except Exception:  # a fault must not end the thread: the batch is lost, loudly
                self._on_drop("error", len(jobs))
                log.exception("Shadow scoring failed for %d photos", len(jobs))

    def score(self, jobs: list[_Job]) -> list[ShadowResult]:
        """The challenger's answers for `jobs` (one ONNX Runtime call)."""
        probs = self.model.predict(to_batch(np.stack([j.pixels for j in jobs])))
        classes, version, now = self.model.classes, self.model.manifest.version, time.time()
        results = []
        for job, row in zip(jobs, probs, strict=True):
            index = int(np.argmax(row))
            results.append(
                ShadowResult(
                    request_id=job.request_id,
                    served_label=job.served_label,
                    label=classes[index],
                    confidence=round(float(row[index]), 6),
                    probabilities={
                        c: round(float(p), 6) for c, p in zip(classes, row, strict=True)
                    },
                    model_version=version,
                    ts=now,
                )
            )
        return results
