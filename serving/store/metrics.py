"""Prometheus series of the store, registered in the service's own registry."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge


class StoreMetrics:
    """Written and lost predictions, the queue's depth and whether the store answers."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry or CollectorRegistry()
        self.written = Counter(
            "prediction_store_written", "Predictions committed to the store.", registry=r
        )
        self.lost = Counter(
            "prediction_store_lost",
            "Predictions answered but not stored, by reason (queue_full, unavailable, full).",
            ["reason"],
            registry=r,
        )
        for reason in ("queue_full", "unavailable", "full"):
            self.lost.labels(reason=reason)
        self.queued = Gauge(
            "prediction_store_queue", "Predictions waiting to be written.", registry=r
        )
        self.up = Gauge(
            "prediction_store_up", "1 when the last write reached the store, else 0.", registry=r
        )

    def watch(self, queued: Callable[[], float], up: Callable[[], float]) -> None:
        """Read the gauges from the writer at scrape time."""
        self.queued.set_function(queued)
        self.up.set_function(up)
