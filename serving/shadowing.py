"""The app's handle on shadow scoring: load the challenger, feed it, keep its answers.

serving/inference/shadow.py scores; this module wires it to the rest of the app: the
photos the predictor serves go in (`offer`), the challenger's answers go to the store
(`shadow_predictions`, beside the served answer in `predictions`) and to the Prometheus
series (`shadow_predictions_total`, `shadow_agreement`, `shadow_dropped_total`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from serving.inference.decoding import DecodedPhoto
from serving.inference.onnx_model import Model
from serving.inference.prediction import Prediction
from serving.inference.shadow import ShadowError, ShadowResult, ShadowScorer, check_compatible
from serving.prometheus_metrics import ServiceMetrics
from serving.settings import Settings
from serving.store import ShadowRecord, Store, StoreError

__all__ = ["Shadow", "ShadowError"]

log = logging.getLogger("serving.shadow")


def as_record(result: ShadowResult) -> ShadowRecord:
    """What the store keeps of a challenger's answer."""
    return ShadowRecord(
        request_id=result.request_id, model_version=result.model_version, label=result.label,
        confidence=result.confidence, probabilities=result.probabilities, ts=result.ts,
    )  # fmt: skip


class Shadow:
    """The challenger of one app, when CHALLENGER_MODEL_DIR is set (else inert)."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics, store: Store) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.scorer: ShadowScorer | None = None
        self._recent: deque[bool] = deque(maxlen=settings.recent_window)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.challenger_model_dir is not None

    def start(self, champion: Model) -> None:
        """Load, check and start the challenger (blocking); raises ShadowError."""
        s = self.settings
        if s.challenger_model_dir is None:
            return
        try:
            challenger = Model(s.challenger_model_dir, s.shadow_threads)
        except Exception as exc:
            raise ShadowError(f"Challenger bundle {s.challenger_model_dir}: {exc}") from exc
        check_compatible(champion, challenger)
        self.scorer = ShadowScorer(
            challenger, share=s.shadow_share, queue_max=s.shadow_queue_max, nice=s.shadow_nice,
            sink=self._keep, on_drop=self._count_drop,
        )  # fmt: skip
        self.metrics.shadow_queue.set_function(lambda: float(self.scorer.queued))
        self.scorer.start()
        m = challenger.manifest
        log.info(
            "Shadow scoring %s %s on %.0f %% of photos (queue %d)", m.name, m.version,
            s.shadow_share * 100, s.shadow_queue_max,
            extra={"fields": {"event": "shadow", "challenger_version": m.version}},
        )  # fmt: skip

    def offer(self, prediction: Prediction, photo: DecodedPhoto) -> None:
        """A served photo, for the challenger (never blocks the request)."""
        if self.scorer is not None:
            self.scorer.offer(prediction, photo.pixels)

    def _count_drop(self, reason: str, n: int) -> None:
        self.metrics.shadow_dropped.labels(reason=reason).inc(n)

    def _keep(self, results: list[ShadowResult]) -> None:
        """Count agreement, then store the answers (the shadow thread calls this)."""
        for r in results:
            self.metrics.shadow_predictions.labels(
                outcome="agree" if r.agrees else "disagree"
            ).inc()
        with self._lock:
            self._recent.extend(r.agrees for r in results)
            agreement = sum(self._recent) / len(self._recent)
        self.metrics.shadow_agreement.set(agreement)
        records = [as_record(r) for r in results]
        try:
            self.store.record_shadow(records)
        except StoreError as exc:
            self._count_drop("store", len(records))
            log.warning("%d shadow answers not stored: %s", len(records), exc)

    def stop(self) -> None:
        if self.scorer is not None:
            self.scorer.stop()
