"""Live gauges from the shared store: drift of all replicas' recent traffic, live accuracy.

Called at scrape time (in a worker thread: it may read the database); the window is
cached for STORE_WINDOW_TTL_S so frequent scrapes do not load the database.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import Gauge

from contracts import drift
from serving.store.records import RecentWindow
from serving.store.store import Store

log = logging.getLogger("serving.store")


def publish_live(
    store: Store,
    reference: dict,
    classes: Sequence[str],
    drift_psi: Gauge,
    live_accuracy: Gauge,
    min_samples: int,
    by_client: tuple[Gauge, Sequence[str]] | None = None,
) -> None:
    """Set `model_drift_psi{feature}` and `model_live_accuracy` from the store's window,
    and `model_live_accuracy_by_client{client}` for the configured client names.

    A feature with fewer than `min_samples` live values (DRIFT_MIN_SAMPLES) gets no figure.
    """
    window = store.window()
    live_accuracy.set(window.accuracy)
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
    drift_psi.clear()
    for feature, value in report.items():
        drift_psi.labels(feature=feature).set(float(value))


def publish_by_client(window: RecentWindow, gauge: Gauge, names: Sequence[str]) -> None:
    """One series per configured client name (bounded labels: stored names no longer
    configured are left out); NaN for a client without labels in the window."""
    gauge.clear()
    for name in names:
        labelled, correct = window.by_client.get(name, (0, 0))
        gauge.labels(client=name).set(correct / labelled if labelled else float("nan"))
