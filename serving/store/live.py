"""Live gauges from the shared store: drift, live accuracy, estimated accuracy, OOD share.

Called at scrape time (in a worker thread: it may read the database); the window is
cached for STORE_WINDOW_TTL_S so frequent scrapes do not load the database.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Gauge

from contracts import drift, estimate
from serving.store.records import RecentWindow
from serving.store.store import Store

log = logging.getLogger("serving.store")


@dataclass(frozen=True)
class LiveGauges:
    """The gauges set from the store's window (created in serving/prometheus_metrics.py)."""

    drift_psi: Gauge
    live_accuracy: Gauge
    estimated_accuracy: Gauge
    estimated_accuracy_lower: Gauge
    ood_flagged_share: Gauge


def publish_live(
    store: Store,
    reference: dict,
    classes: Sequence[str],
    gauges: LiveGauges,
    min_samples: int,
    by_client: tuple[Gauge, Sequence[str]] | None = None,
) -> None:
    """Set the live gauges from the store's window of all replicas' recent traffic, and
    `model_live_accuracy_by_client{client}` for the configured client names.

    A figure from fewer than `min_samples` values (DRIFT_MIN_SAMPLES) is left out (PSI) or
    NaN (estimate, OOD share): too few predictions say nothing reliable.
    """
    window = store.window()
    gauges.live_accuracy.set(window.accuracy)
    publish_estimate(window, gauges, min_samples)
    if by_client is not None:
        publish_by_client(window, *by_client)
    try:
        report = drift.drift_report(
            reference=reference,
            labels=window.labels,
            confidences=window.confidences,
            brightness=window.brightness,
            classes=list(classes),
            min_samples=min_samples,
        )
    except Exception:  # monitoring must never break a scrape
        log.warning("Drift report failed", exc_info=True)
        return
    # Only this report's features: one left out (too few samples) must not go stale.
    gauges.drift_psi.clear()
    for feature, value in report.items():
        gauges.drift_psi.labels(feature=feature).set(float(value))


def publish_estimate(window: RecentWindow, gauges: LiveGauges, min_samples: int) -> None:
    """Estimated accuracy (mean confidence, Poisson-binomial lower bound) and OOD share."""
    nan = float("nan")
    confidences = drift.finite(window.confidences)
    if confidences.size >= min_samples:
        interval = estimate.accuracy_interval(confidences)
        gauges.estimated_accuracy.set(interval.estimate)
        gauges.estimated_accuracy_lower.set(interval.lower)
    else:
        gauges.estimated_accuracy.set(nan)
        gauges.estimated_accuracy_lower.set(nan)
    share, scored = estimate.flagged_share(window.ood_flags)
    gauges.ood_flagged_share.set(share if scored >= min_samples else nan)


def publish_by_client(window: RecentWindow, gauge: Gauge, names: Sequence[str]) -> None:
    """One series per configured client name (bounded labels: stored names no longer
    configured are left out); NaN for a client without labels in the window."""
    gauge.clear()
    for name in names:
        labelled, correct = window.by_client.get(name, (0, 0))
        gauge.labels(client=name).set(correct / labelled if labelled else float("nan"))
