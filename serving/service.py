"""The service's state and its prediction path, independent of HTTP.

Decoding runs in a small thread pool and inference in the micro-batcher's thread, so
the event loop only moves bytes. Everything a prediction updates (stats, metrics, the
prediction log, the drift window, the feedback map) is updated in `record`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from serving import imaging
from serving.batching import MicroBatcher, QueueFull
from serving.errors import ApiError
from serving.feedback import FeedbackStore
from serving.logs import JsonLinesLog, utc_now
from serving.metrics import Metrics
from serving.model import Model
from serving.settings import Settings

log = logging.getLogger("serving.service")
T = TypeVar("T")

# EXIF orientations that swap width and height (rotations by 90 or 270 degrees).
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class Prepared:
    """One decoded photo: model-input pixels plus what logs and drift monitoring need."""

    pixels: np.ndarray  # uint8 [S, S, 3]
    width: int  # upright size of the upload, before any resizing
    height: int
    sha256: str
    brightness: float  # mean of the model-input pixels in [0, 1]

    def describe(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "brightness": round(self.brightness, 4),
            "sha256": self.sha256,
        }


def upright_size(data: bytes) -> tuple[int, int]:
    """The upload's size as a person sees it (EXIF rotation applied); reads the header only."""
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        try:
            orientation = img.getexif().get(0x0112)
        except Exception:  # a broken EXIF block does not make the photo unusable
            orientation = None
    return (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


class Stats:
    """Counters behind GET /stats (since the process started)."""

    def __init__(self, classes: list[str]) -> None:
        self.started = time.time()
        self.count = 0
        self.per_class = dict.fromkeys(classes, 0)
        self.confidence_sum = 0.0
        self.inference_ms_sum = 0.0

    def add(self, label: str, confidence: float, inference_ms: float) -> None:
        self.count += 1
        self.per_class[label] = self.per_class.get(label, 0) + 1
        self.confidence_sum += confidence
        self.inference_ms_sum += inference_ms

    def as_dict(self) -> dict[str, Any]:
        n = self.count
        return {
            "predictions": n,
            "per_class": dict(self.per_class),
            "average_confidence": round(self.confidence_sum / n, 6) if n else None,
            "average_inference_ms": round(self.inference_ms_sum / n, 3) if n else None,
            "uptime_s": round(time.time() - self.started, 1),
        }


class Service:
    """Model, batcher, logs and counters of one running app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.limits = imaging.Limits(
            max_bytes=settings.max_bytes,
            max_pixels=settings.max_pixels,
            min_side=settings.min_side,
            formats=settings.allowed_formats,
        )
        self.model: Model | None = None
        self.batcher: MicroBatcher | None = None
        self.load_error: str | None = None
        self.warmed = False
        self.draining = False
        self.stats = Stats([])
        self.recent: deque[tuple[str, float, float]] = deque(maxlen=settings.recent_window)
        # Files and threads are opened in start(), so importing the app touches nothing.
        self.prediction_log = JsonLinesLog("", 0, 0, "predictions")
        self.feedback: FeedbackStore | None = None
        self._decoder: ThreadPoolExecutor | None = None

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Load and verify the bundle, then prove it with a warm-up prediction."""
        s = self.settings
        self._decoder = ThreadPoolExecutor(
            max_workers=max(1, s.decode_threads), thread_name_prefix="decode"
        )
        self.prediction_log = JsonLinesLog(
            s.prediction_log, s.log_max_bytes, s.log_backups, "predictions"
        )
        try:
            self.model = await asyncio.to_thread(Model, s.model_dir, s.inference_threads)
        except Exception as exc:  # the process stays up, not ready, and says why
            self.load_error = str(exc)
            log.error("Model bundle not loaded: %s", exc, extra={"fields": {"event": "load"}})
            return
        manifest = self.model.manifest
        self.stats = Stats(self.model.classes)
        self.feedback = FeedbackStore(
            JsonLinesLog(s.feedback_log, s.log_max_bytes, s.log_backups, "feedback"),
            self.prediction_log,
            self.model.classes,
            s.recent_ids,
        )
        await asyncio.to_thread(self.feedback.load_seen)
        self.batcher = MicroBatcher(
            self.model.predict,
            max_size=s.batch_max_size,
            max_wait_s=s.batch_max_wait_ms / 1000.0,
            max_queue=s.queue_max,
            on_batch=self._observe_batch,
        )
        self.batcher.start()
        self.metrics.model_info.labels(version=manifest.version, name=manifest.name).set(1)
        warmup = np.full((1, self.model.size, self.model.size, 3), 128, dtype=np.uint8)
        probs, _ = await self.batcher.submit(warmup)
        if probs.shape != (1, len(self.model.classes)) or not np.isfinite(probs).all():
            self.load_error = f"Warm-up prediction returned {probs.shape}, not [1, C]."
            log.error(self.load_error)
            return
        self.warmed = True
        log.info(
            "Model %s %s ready (%d inference threads, batch up to %d, wait %.1f ms)",
            manifest.name,
            manifest.version,
            s.inference_threads,
            s.batch_max_size,
            s.batch_max_wait_ms,
            extra={"fields": {"event": "ready", "model_version": manifest.version}},
        )

    async def stop(self) -> None:
        self.draining = True
        if self.batcher:
            await self.batcher.stop()
        if self._decoder:
            self._decoder.shutdown(wait=False, cancel_futures=True)
        self.prediction_log.close()
        if self.feedback:
            self.feedback.close()

    def begin_drain(self) -> None:
        """Turn not-ready (SIGTERM): probes fail, in-flight requests still finish."""
        if not self.draining:
            self.draining = True
            log.info("Draining: not ready any more", extra={"fields": {"event": "drain"}})

    @property
    def ready(self) -> bool:
        return self.model is not None and self.warmed and not self.draining

    def require_ready(self) -> Model:
        if self.model is None or not self.warmed or self.batcher is None:
            raise ApiError(503, "not_ready", self.load_error or "The model is not loaded yet.")
        return self.model

    # -- the prediction path ----------------------------------------------------------

    def prepare(self, data: bytes) -> Prepared:
        """Bytes to model input through the image contract (raises ImageError)."""
        model = self.require_ready()
        draft = model.size if self.settings.draft_decode else None
        img = imaging.decode(data, self.limits, draft_size=draft)
        pixels = np.asarray(imaging.fit(img, model.size), dtype=np.uint8)
        width, height = upright_size(data)
        return Prepared(
            pixels=pixels,
            width=width,
            height=height,
            sha256=hashlib.sha256(data).hexdigest(),
            brightness=float(pixels.mean()) / 255.0,
        )

    async def prepare_async(self, data: bytes) -> Prepared:
        return await self.off_loop(self.prepare, data)

    async def off_loop(self, func: Callable[..., T], *args: Any) -> T:
        """Run CPU work (decoding, PNG encoding) in the decode pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._decoder, func, *args)

    async def infer(self, images: np.ndarray, deadline: float) -> tuple[np.ndarray, float]:
        """Micro-batched inference with the request's deadline (perf_counter seconds)."""
        self.require_ready()
        assert self.batcher is not None
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise ApiError(504, "timeout", "The request deadline passed before inference.")
        try:
            return await asyncio.wait_for(self.batcher.submit(images), remaining)
        except QueueFull as exc:
            raise ApiError(
                503,
                "queue_full",
                f"The server is busy: {exc} Retry shortly.",
                headers={"Retry-After": str(self.settings.retry_after_s)},
            ) from exc
        except TimeoutError as exc:
            raise ApiError(
                504,
                "timeout",
                f"No prediction within {self.settings.request_timeout_s:g} s.",
            ) from exc

    async def infer_tensor(self, tensor: np.ndarray, deadline: float) -> np.ndarray:
        """Predict an already preprocessed float32 [N, 3, H, W] tensor (V2 FP32 input)."""
        self.require_ready()
        assert self.batcher is not None
        remaining = deadline - time.perf_counter()
        try:
            return await asyncio.wait_for(self.batcher.run_alone(tensor), max(remaining, 0.001))
        except TimeoutError as exc:
            raise ApiError(504, "timeout", "No prediction within the request deadline.") from exc

    async def prepare_with_deadline(self, data: bytes, deadline: float) -> Prepared:
        remaining = deadline - time.perf_counter()
        try:
            return await asyncio.wait_for(self.prepare_async(data), max(remaining, 0.001))
        except TimeoutError as exc:
            raise ApiError(504, "timeout", "The request deadline passed while decoding.") from exc

    def answer(
        self, probs: np.ndarray, inference_ms: float, request_id: str
    ) -> tuple[str, float, dict[str, Any]]:
        """The public prediction answer for one probability row."""
        model = self.require_ready()
        index = int(np.argmax(probs))
        label = model.classes[index]
        confidence = float(probs[index])
        return (
            label,
            confidence,
            {
                "label": label,
                "probabilities": {
                    c: round(float(p), 6) for c, p in zip(model.classes, probs, strict=True)
                },
                "confidence": round(confidence, 6),
                "model_version": model.manifest.version,
                "request_id": request_id,
                "inference_ms": round(inference_ms, 3),
            },
        )

    def record(
        self,
        request_id: str,
        prepared: Prepared,
        probs: np.ndarray,
        inference_ms: float,
        started: float,
    ) -> dict[str, Any]:
        """Count, log and remember one prediction; returns its public answer."""
        label, confidence, result = self.answer(probs, inference_ms, request_id)
        self.stats.add(label, confidence, inference_ms)
        self.metrics.predictions.labels(label=label).inc()
        self.metrics.confidence.observe(confidence)
        self.recent.append((label, confidence, prepared.brightness))
        if self.feedback:
            self.feedback.remember(request_id, label)
        self.prediction_log.write(
            {
                "request_id": request_id,
                "time": utc_now(),
                "label": label,
                "probabilities": result["probabilities"],
                "confidence": result["confidence"],
                "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
                "inference_ms": result["inference_ms"],
                "model_version": result["model_version"],
                "image": prepared.describe(),
            }
        )
        return result

    def _observe_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.inference_duration.observe(seconds)
