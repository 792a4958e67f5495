"""Requests through the engine under their deadlines: decode -> batch -> model -> record.

Every image a request brings is counted against the same limits (images per request,
queue slots, decode slots, one deadline), whatever its route or encoding. Each finished
prediction goes to the recorder (`recorder.record(prediction)`), the one place where
what is served is kept for monitoring.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import numpy as np

from contracts.imaging import ImageError
from serving.inference.decoding import DecodedPhoto, decode_photo
from serving.inference.engine import Engine
from serving.inference.explain import (
    Explanation,
    occlusion_grid,
    occlusion_variants,
    overlay_png,
)
from serving.inference.prediction import Call, Prediction
from serving.logs import utc_now
from serving.refusals import Refused

T = TypeVar("T")


class Recorder(Protocol):
    """Where served predictions go (serving/recording.py is the default one)."""

    def record(self, prediction: Prediction) -> None: ...


class Predictor:
    """The prediction path of one app, shared by every route."""

    def __init__(
        self,
        engine: Engine,
        recorder: Recorder,
        on_prediction: Callable[[Prediction], None] | None = None,
        on_photo: Callable[[Prediction, DecodedPhoto], None] | None = None,
    ) -> None:
        self.engine = engine
        self.recorder = recorder
        self._on_prediction = on_prediction
        self._on_photo = on_photo  # shadow scoring: must not block

    @property
    def max_images(self) -> int:
        """Most images one request may bring (MAX_BATCH_FILES)."""
        return self.engine.settings.max_batch_files

    def check_count(self, count: int) -> None:
        """Refuse a request with more images than one request may bring."""
        limit = self.max_images
        if count > limit:
            raise Refused("too_many_files", f"{count} images sent; the limit is {limit}.")

    async def decode(self, data: bytes, call: Call) -> DecodedPhoto:
        """Decode one upload in the decode pool (raises ImageError for a bad photo)."""
        model, decoder = self.engine.require_model(), self.engine.require_decoder()
        limits, draft = self.engine.limits, self.engine.settings.draft_decode
        work = decoder.run(decode_photo, data, limits, model.size, draft)
        return await within(call, work, "decoding")

    async def infer(self, images: np.ndarray, call: Call) -> tuple[np.ndarray, float]:
        """Micro-batched inference of uint8 pixels or a float32 tensor; (probs, ms).

        Each row is the probabilities then the OOD score (`Model.scored`); `finish` splits
        them, and `probabilities` drops the score.
        """
        return await within(call, self.engine.require_batcher().submit(images), "inference")

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        return rows[:, : len(self.engine.require_model().classes)]

    async def predict_one(self, data: bytes, call: Call) -> tuple[Prediction, DecodedPhoto]:
        photo = await self.decode(data, call)
        rows, inference_ms = await self.infer(photo.pixels[None], call)
        return self.finish(call, call.request_id, rows[0], inference_ms, photo), photo

    async def predict_many(
        self, blobs: Sequence[bytes], call: Call
    ) -> list[Prediction | ImageError]:
        """Several uploads: a bad photo gets its ImageError, the rest their predictions.

        Item ids derive from the server's request id: `<request id>-<index>`.
        """
        self.check_count(len(blobs))
        results = await asyncio.gather(
            *(self.decode(b, call) for b in blobs), return_exceptions=True
        )
        for item in results:
            if isinstance(item, BaseException) and not isinstance(item, ImageError):
                raise item  # overload, deadline or a fault fails the whole request
        good = [(i, p) for i, p in enumerate(results) if isinstance(p, DecodedPhoto)]
        if not good:
            return [r for r in results if isinstance(r, ImageError)]  # all of them
        probs, inference_ms = await self.infer(np.stack([p.pixels for _, p in good]), call)
        by_index: dict[int, Prediction | ImageError] = {
            i: self.finish(call, item_id(call, i), row, inference_ms, p)
            for (i, p), row in zip(good, probs, strict=True)
        }
        by_index.update({i: r for i, r in enumerate(results) if isinstance(r, ImageError)})
        return [by_index[i] for i in range(len(results))]

    async def explain(self, data: bytes, call: Call) -> Explanation:
        """One photo's prediction and which regions drove it (EXPLAIN_GRID occlusion).

        The photo and its occluded variants run through the model as one job (in chunks of
        BATCH_MAX_SIZE); the prediction is the original's, recorded as any other.
        """
        photo = await self.decode(data, call)
        grid = self.engine.settings.explain_grid
        rows, inference_ms = await self.infer(occlusion_variants(photo.pixels, grid), call)
        prediction = self.finish(call, call.request_id, rows[0], inference_ms, photo)
        probs = self.probabilities(rows)
        model = self.engine.require_model()
        target = model.classes.index(prediction.label)
        drops = occlusion_grid(probs, target, grid)
        png = await self.engine.require_decoder().run(overlay_png, photo.pixels, drops)
        return Explanation(
            prediction=prediction,
            grid_size=grid,
            cell_px=model.size / grid,
            base_probability=float(probs[0, target]),
            drops=drops,
            overlay_png=png,
        )

    async def predict_tensor(self, tensor: np.ndarray, call: Call) -> np.ndarray:
        """A preprocessed float32 [N, 3, S, S] tensor (V2 FP32): probabilities [N, C]."""
        self.check_count(len(tensor))
        rows, _ = await self.infer(tensor, call)
        return self.probabilities(rows)

    def finish(
        self,
        call: Call,
        request_id: str,
        row: np.ndarray,
        inference_ms: float,
        photo: DecodedPhoto | None,
    ) -> Prediction:
        """One row (probabilities, OOD score) -> the served Prediction, counted and recorded."""
        model = self.engine.require_model()
        probs, score = row[: len(model.classes)], float(row[len(model.classes)])
        index = int(np.argmax(probs))
        prediction = Prediction(
            request_id=request_id,
            correlation_id=call.correlation_id,
            client=call.client,
            label=model.classes[index],
            probabilities={
                c: round(float(p), 6) for c, p in zip(model.classes, probs, strict=True)
            },
            confidence=round(float(probs[index]), 6),
            model_version=model.manifest.version,
            inference_ms=round(inference_ms, 3),
            latency_ms=round((time.perf_counter() - call.started) * 1000.0, 3),
            time=utc_now(),
            image=photo,
            ood_score=None if np.isnan(score) else round(score, 4),
            ood_flag=model.ood_flags(np.array([score]))[0],
        )
        if self._on_prediction:
            self._on_prediction(prediction)
        self.recorder.record(prediction)
        if self._on_photo and photo is not None:
            self._on_photo(prediction, photo)
        return prediction


def item_id(call: Call, index: int) -> str:
    return f"{call.request_id}-{index}"


async def within(call: Call, work: Awaitable[T], stage: str) -> T:
    """Await `work` before the call's deadline, or refuse with `timeout`."""
    remaining = call.deadline - time.perf_counter()
    if remaining <= 0:
        if asyncio.iscoroutine(work):
            work.close()
        raise Refused("timeout", f"The request deadline passed before {stage}.")
    try:
        return await asyncio.wait_for(work, remaining)
    except TimeoutError as exc:
        raise Refused("timeout", f"The request deadline passed during {stage}.") from exc
