"""The process's inference machinery and its life cycle: load, warm up, drain, supervise.

Health is honest: `ready` means the bundle is loaded, a warm-up prediction passed, the
micro-batcher's loop is alive and the process is not draining; `live` turns false only
when the loop has died too often to restart (the orchestrator should restart us).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from serving.cpu_stages import StageCpu
from serving.inference.batching import MicroBatcher
from serving.inference.decoding import DecodePool
from serving.inference.onnx_model import Model
from serving.refusals import Refused
from serving.settings import Settings

log = logging.getLogger("serving.engine")


# What clients are told when the bundle failed; the reason (with its paths) goes to the log.
LOAD_FAILED = "the model bundle could not be loaded (the server log says why)"


class Engine:
    """Model, decode pool and micro-batcher of one running app."""

    def __init__(
        self,
        settings: Settings,
        on_batch: Callable[[int, float], None] | None = None,
        cpu: StageCpu | None = None,
    ) -> None:
        self.settings = settings
        self.cpu = cpu
        self.limits = settings.image_limits
        self._on_batch = on_batch
        self.model: Model | None = None
        self.batcher: MicroBatcher | None = None
        self.decoder: DecodePool | None = None
        self.load_error: str | None = None
        self.warmed = False
        self.draining = False

    async def start(self) -> None:
        """Load and verify the bundle, then prove it with a warm-up prediction.

        A bundle that fails leaves the process up and not ready, saying why.
        """
        s = self.settings
        self.decoder = DecodePool(s.decode_threads, s.decode_queue_max, s.retry_after_s, self.cpu)
        try:
            self.model = await asyncio.to_thread(Model, s.model_dir, s.inference_threads)
        except Exception as exc:
            self.load_error = str(exc)
            log.error("Model bundle not loaded: %s", exc, extra={"fields": {"event": "load"}})
            return
        self.batcher = MicroBatcher(
            self.model.scored,
            max_size=s.batch_max_size,
            max_wait_s=s.batch_max_wait_ms / 1000.0,
            max_queue=s.queue_max,
            on_batch=self._on_batch,
            retry_after_s=s.retry_after_s,
            cpu=self.cpu,
            workers=s.inference_workers,
        )
        if self.cpu is not None:
            self.cpu.adopt("inference", self.model.pool_threads)
        self.batcher.start()
        size, classes = self.model.size, self.model.classes
        out, _ = await self.batcher.submit(np.full((1, size, size, 3), 128, dtype=np.uint8))
        probs = out[:, : len(classes)]
        if out.shape != (1, len(classes) + 1) or not np.isfinite(probs).all():
            self.load_error = f"Warm-up prediction returned {probs.shape}, not [1, C]."
            log.error(self.load_error)
            return
        self.warmed = True
        manifest = self.model.manifest
        log.info(
            "Model %s %s (%s) ready (%d x %d inference threads, batch up to %d, wait %.1f ms)",
            manifest.name, manifest.version, manifest.precision, s.inference_workers,
            s.inference_threads,
            s.batch_max_size, s.batch_max_wait_ms,
            extra={"fields": {"event": "ready", "model_version": manifest.version}},
        )  # fmt: skip

    def refuse(self, why: str) -> None:
        """Stay up and not ready, saying why (a start-up check after warm-up failed)."""
        self.load_error, self.warmed = why, False
        log.error("Not ready: %s", why, extra={"fields": {"event": "load"}})

    async def stop(self) -> None:
        self.draining = True
        if self.batcher:
            await self.batcher.stop()
        if self.decoder:
            self.decoder.shutdown()

    def begin_drain(self) -> None:
        """Turn not-ready (SIGTERM): probes fail, in-flight requests still finish."""
        if not self.draining:
            self.draining = True
            log.info("Draining: not ready any more", extra={"fields": {"event": "drain"}})

    @property
    def serving(self) -> bool:
        """Able to answer predictions (draining still answers the requests that arrive)."""
        return (
            self.model is not None
            and self.warmed
            and self.batcher is not None
            and (self.batcher.alive)
        )

    @property
    def ready(self) -> bool:
        return self.serving and not self.draining

    @property
    def live(self) -> bool:
        return not (self.batcher is not None and self.batcher.gave_up)

    def why_not_ready(self) -> str:
        if self.draining:
            return "draining"
        if self.load_error:
            return LOAD_FAILED
        if self.batcher is not None and not self.batcher.alive:
            return "the inference loop is down"
        return "loading"

    def require_model(self) -> Model:
        """The model, if predictions can be served now; else a `not_ready` refusal."""
        if not self.serving or self.model is None:
            raise Refused("not_ready", f"Not ready: {self.why_not_ready()}.",
                          self.settings.retry_after_s)  # fmt: skip
        return self.model

    def require_decoder(self) -> DecodePool:
        """The decode pool, if predictions can be served now; else `not_ready`."""
        self.require_model()
        if self.decoder is None:  # set before the model loads: only a fault gets here
            raise Refused("not_ready", "Not ready: no decode pool.", self.settings.retry_after_s)
        return self.decoder

    def require_batcher(self) -> MicroBatcher:
        """The micro-batcher, if predictions can be served now; else `not_ready`."""
        self.require_model()
        if self.batcher is None:  # `serving` implies it: only a fault gets here
            raise Refused("not_ready", "Not ready: no inference loop.", self.settings.retry_after_s)
        return self.batcher
