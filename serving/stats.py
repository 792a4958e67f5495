"""Counters behind GET /stats and the prediction metrics, updated once per prediction."""

from __future__ import annotations

import time
from typing import Any

from serving.inference.prediction import Prediction
from serving.prometheus_metrics import ServiceMetrics


class Stats:
    """Predictions since the process started."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics
        self.started = time.time()
        self.count = 0
        self.per_class: dict[str, int] = {}
        self.confidence_sum = 0.0
        self.inference_ms_sum = 0.0

    def reset(self, classes: list[str]) -> None:
        self.per_class = dict.fromkeys(classes, 0)

    def add(self, prediction: Prediction) -> None:
        self.count += 1
        self.per_class[prediction.label] = self.per_class.get(prediction.label, 0) + 1
        self.confidence_sum += prediction.confidence
        self.inference_ms_sum += prediction.inference_ms
        self.metrics.predictions.labels(label=prediction.label).inc()
        self.metrics.confidence.observe(prediction.confidence)

    def as_dict(self) -> dict[str, Any]:
        n = self.count
        return {
            "predictions": n,
            "per_class": dict(self.per_class),
            "average_confidence": round(self.confidence_sum / n, 6) if n else None,
            "average_inference_ms": round(self.inference_ms_sum / n, 3) if n else None,
            "uptime_s": round(time.time() - self.started, 1),
        }
