"""Drift of live traffic against the bundle's reference, as population stability indices.

Pure NumPy on purpose: the service imports this module at /metrics scrape time and its
image carries no pandas or SciPy. The offline report (`monitoring`) uses the same
functions, so the gauge and the report compute a figure the same way.

PSI = sum over bins of (live share - reference share) * ln(live share / reference share).
Shares are smoothed with half a count per bin (`SMOOTHING`): an empty bin in a small live
sample would otherwise give ln(0) or, with a tiny floor, a huge term that is pure noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# Thresholds shared with the Prometheus alert rules and the report (docs/monitoring.md).
PSI_WARN = 0.1
PSI_ALERT = 0.2
ACCURACY_ALERT = 0.9
# Fewest labelled predictions before an accuracy alert (the Prometheus rule asks for 20).
MIN_LABELLED = 20
# Fewest live values for a PSI figure. Sampling noise alone gives a PSI near
# (bins used - 1) / n: about 0.24 at n = 30 for a histogram spread over 9 bins, 0.08 at
# n = 100, 0.01 at n = 1000 (docs/monitoring.md). The core reads no environment: the
# service (setting DRIFT_MIN_SAMPLES) and the report (--min-samples) pass their own.
MIN_SAMPLES = 100
# Pseudo-count added to every bin of both distributions before taking shares.
SMOOTHING = 0.5
# Sample size assumed for reference class shares when model.json gives no `n`.
REFERENCE_N_DEFAULT = 1000

FEATURES = ("class_share", "confidence", "brightness")


def psi(reference_counts: Sequence[float], live_counts: Sequence[float]) -> float:
    """Population stability index between two binnings of the same bins.

    Both are counts (not shares: smoothing is half a count per bin, so a small sample is
    smoothed more than a large one, as its empty bins deserve).
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    live = np.asarray(live_counts, dtype=np.float64)
    if ref.shape != live.shape or ref.ndim != 1 or ref.size == 0:
        raise ValueError(f"PSI needs two equal, non-empty 1-D binnings: {ref.shape} {live.shape}")
    if (ref < 0).any() or (live < 0).any():
        raise ValueError("PSI needs non-negative counts")
    ref = _shares(ref)
    live = _shares(live)
    return float(np.sum((live - ref) * np.log(live / ref)))


def _shares(counts: np.ndarray) -> np.ndarray:
    """Counts to shares, with `SMOOTHING` added to every bin."""
    smoothed = counts + SMOOTHING
    return smoothed / smoothed.sum()


def histogram(values: Iterable[float], edges: Sequence[float]) -> np.ndarray:
    """Counts of `values` in the bins given by `edges`; values outside go to the end bins.

    Clipping keeps every live value counted (a confidence of exactly 1.0 or a brightness
    a hair outside [0, 1] is still traffic), as the reference histogram counted them.
    """
    edges_arr = np.asarray(edges, dtype=np.float64)
    if edges_arr.ndim != 1 or edges_arr.size < 2 or np.any(np.diff(edges_arr) <= 0):
        raise ValueError("histogram edges must be at least two increasing numbers")
    vals = finite(values)
    vals = np.clip(vals, edges_arr[0], edges_arr[-1])
    counts, _ = np.histogram(vals, bins=edges_arr)
    return counts.astype(np.int64)


def class_counts(labels: Iterable[str], classes: Sequence[str]) -> np.ndarray:
    """How many of `labels` fall in each of `classes` (in that order); others are ignored."""
    index = {name: i for i, name in enumerate(classes)}
    counts = np.zeros(len(classes), dtype=np.int64)
    for label in labels:
        i = index.get(label)
        if i is not None:
            counts[i] += 1
    return counts


def finite(values: Iterable[float | None]) -> np.ndarray:
    """The finite numbers among `values` (None and NaN are missing measurements)."""
    out = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return np.asarray(out, dtype=np.float64)


def level(value: float, warn: float = PSI_WARN, alert: float = PSI_ALERT) -> str:
    """'ok', 'warn' or 'alert' for a PSI figure."""
    if value > alert:
        return "alert"
    if value > warn:
        return "warn"
    return "ok"


def _reference_section(reference: Mapping) -> Mapping:
    """Accept either model.json's `reference` or the whole manifest."""
    inner = reference.get("reference")
    return inner if isinstance(inner, Mapping) else reference


def _histogram_psi(ref_hist: object, values: Iterable[float], min_samples: int) -> float | None:
    if not isinstance(ref_hist, Mapping) or "edges" not in ref_hist or "counts" not in ref_hist:
        return None
    edges, ref_counts = ref_hist["edges"], ref_hist["counts"]
    if len(ref_counts) != len(edges) - 1 or sum(ref_counts) <= 0:
        return None
    live = histogram(values, edges)
    if live.sum() < min_samples:
        return None
    return psi(ref_counts, live)


def drift_report(
    reference: dict,
    labels: list[str],
    confidences: list[float],
    brightness: list[float],
    classes: list[str],
    *,
    min_samples: int = MIN_SAMPLES,
) -> dict[str, float]:
    """PSI of live predictions against the bundle's reference, per feature.

    Keys: `class_share` (predicted labels), `confidence` (top-class probability),
    `brightness` (mean model-input pixel). A key is left out when the reference lacks it or
    fewer than `min_samples` usable live values exist, so a gauge is never fed noise.
    """
    ref = _reference_section(reference or {})
    out: dict[str, float] = {}

    shares = ref.get("class_shares")
    if isinstance(shares, Mapping) and classes:
        # The reference stores shares; as counts of its `n` test photos they are smoothed
        # like the live counts.
        n_ref = float(ref.get("n") or 0) or REFERENCE_N_DEFAULT
        ref_counts = [max(float(shares.get(name, 0.0)), 0.0) * n_ref for name in classes]
        live = class_counts(labels, classes)
        if sum(ref_counts) > 0 and live.sum() >= min_samples:
            out["class_share"] = psi(ref_counts, live)

    value = _histogram_psi(ref.get("confidence_histogram"), confidences, min_samples)
    if value is not None:
        out["confidence"] = value
    value = _histogram_psi(ref.get("brightness_histogram"), brightness, min_samples)
    if value is not None:
        out["brightness"] = value
    return out
