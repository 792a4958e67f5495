"""The report's figures: performance on labelled predictions, traffic, drift and alerts.

Drift uses contracts.drift, the same code the service's gauge uses, so the two agree on
the same window.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from contracts import drift
from contracts.classification import classification_metrics
from monitoring.drift_stats import noise_level
from monitoring.estimated import estimate_alerts, estimated_figures
from monitoring.schema import (
    AccuracyAlert,
    Counts,
    Drift,
    DriftAlert,
    Figures,
    Histogram,
    Latency,
    ModelSummary,
    Performance,
    ReferenceSummary,
    ShadowSummary,
    Thresholds,
    Traffic,
)
from serving.store import LabelledPrediction, ShadowPair

DRIFT_METHOD = "population stability index, half-count smoothing per bin"


@dataclass(frozen=True)
class Columns:
    """The window's predictions as columns, in arrival order."""

    labels: list[str]
    confidence: list[float | None]
    brightness: list[float | None]
    widths: np.ndarray
    heights: np.ndarray
    class_counts: np.ndarray

    @classmethod
    def of(cls, predictions: Sequence[LabelledPrediction], classes: list[str]) -> Columns:
        records = [p.record for p in predictions]
        labels = [r.label for r in records]
        return cls(
            labels=labels,
            confidence=[r.confidence for r in records],
            brightness=[r.brightness for r in records],
            widths=drift.finite(r.width for r in records),
            heights=drift.finite(r.height for r in records),
            class_counts=drift.class_counts(labels, classes),
        )


def latency_summary(latencies: Iterable[float | None]) -> Latency:
    """p50/p95/p99 (linear interpolation between order statistics), mean and max, in ms."""
    values = drift.finite(latencies)
    if values.size == 0:
        return Latency()
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return Latency(
        n=int(values.size),
        p50=float(p50),
        p95=float(p95),
        p99=float(p99),
        mean=float(values.mean()),
        max=float(values.max()),
    )


def _edges(reference: dict, key: str, low: float) -> list[float]:
    hist = reference.get(key) or {}
    if hist.get("edges"):
        return [float(e) for e in hist["edges"]]
    return np.linspace(low, 1.0, 11).tolist()


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def _hist(values: Iterable[float | None], edges: list[float]) -> Histogram:
    return Histogram(edges=edges, counts=drift.histogram(values, edges).tolist())


def _noise_levels(
    reference: dict, classes: list[str], psi: dict[str, float], columns: Columns
) -> dict[str, float | None]:
    """Per computed feature, the PSI sampling alone exceeds 5 % of the time."""
    out: dict[str, float | None] = {}
    if "class_share" in psi:
        shares = reference.get("class_shares") or {}
        n_ref = float(reference.get("n") or drift.REFERENCE_N_DEFAULT)
        ref = [float(shares.get(c, 0.0)) * n_ref for c in classes]
        out["class_share"] = noise_level(ref, int(columns.class_counts.sum()))
    for feature, values in (("confidence", columns.confidence), ("brightness", columns.brightness)):
        if feature in psi:
            ref = reference[f"{feature}_histogram"]["counts"]
            out[feature] = noise_level(ref, int(drift.finite(values).size))
    return out


def _traffic(columns: Columns, classes: list[str], reference: dict) -> Traffic:
    """What the window's predictions look like: class shares, confidence, brightness, sizes."""
    counts, n = columns.class_counts, len(columns.labels)
    low = 1.0 / max(len(classes), 2)  # the lowest top-class confidence there can be
    return Traffic(
        class_shares={c: (int(k) / n if n else None) for c, k in zip(classes, counts, strict=True)},
        class_counts={c: int(k) for c, k in zip(classes, counts, strict=True)},
        confidence_mean=_mean(drift.finite(columns.confidence)),
        confidence_histogram=_hist(
            columns.confidence, _edges(reference, "confidence_histogram", low)
        ),
        brightness_mean=_mean(drift.finite(columns.brightness)),
        brightness_histogram=_hist(
            columns.brightness, _edges(reference, "brightness_histogram", 0.0)
        ),
        image_width_median=_median(columns.widths),
        image_height_median=_median(columns.heights),
    )


def _alerts(
    psi: dict[str, float], noise: dict, performance: Performance, t: Thresholds
) -> list[DriftAlert | AccuracyAlert]:
    """The alerts that fire: the same rules as Prometheus (deployment/prometheus)."""
    alerts: list[DriftAlert | AccuracyAlert] = [
        DriftAlert(
            feature=feature,
            value=value,
            threshold=t.psi_alert,
            within_noise=bool(noise.get(feature) and value <= noise[feature]),
        )
        for feature, value in psi.items()
        if value > t.psi_alert
    ]
    accuracy = performance.accuracy
    if accuracy is not None and performance.n >= t.min_labelled and accuracy < t.accuracy_alert:
        alerts.append(
            AccuracyAlert(value=accuracy, threshold=t.accuracy_alert, labelled=performance.n)
        )
    return alerts


def _drift(
    reference: dict, columns: Columns, classes: list[str], min_samples: int, t: Thresholds
) -> Drift:
    """PSI per feature against model.json's reference, its level and its noise level."""
    psi = drift.drift_report(
        reference, columns.labels, columns.confidence, columns.brightness, classes,
        min_samples=min_samples,
    )  # fmt: skip
    return Drift(
        method=DRIFT_METHOD,
        psi=psi,
        levels={k: drift.level(v, t.psi_warn, t.psi_alert) for k, v in psi.items()},
        noise_p95=_noise_levels(reference, classes, psi, columns),
        min_samples=min_samples,
        not_computed=[f for f in drift.FEATURES if f not in psi],
    )


def _model(
    manifest: dict, classes: list[str], predictions: Sequence[LabelledPrediction]
) -> ModelSummary:
    versions: dict[str, int] = {}
    for p in predictions:
        version = str(p.record.model_version)
        versions[version] = versions.get(version, 0) + 1
    return ModelSummary(
        name=manifest.get("name"),
        version=manifest.get("version"),
        classes=classes,
        test_metrics=manifest.get("metrics"),
        versions_in_window=versions,
    )


def _counts(n: int, truths: list[str], classes: list[str]) -> Counts:
    return Counts(
        predictions=n,
        labelled=len(truths),
        unlabelled=n - len(truths),
        labelled_share=len(truths) / n if n else None,
        feedback_with_unknown_label=sum(1 for x in truths if x not in classes),
    )


def _status(alerts: list, levels: dict[str, str]) -> str:
    return "alert" if alerts else ("warn" if "warn" in levels.values() else "ok")


def _share(hits: int, n: int) -> float | None:
    return hits / n if n else None


def shadow_summaries(pairs: Sequence[ShadowPair]) -> list[ShadowSummary]:
    """Per challenger version: agreement with the served answers, and both models'
    accuracy on the photos whose true label arrived (the same photos, so paired)."""
    out = []
    for version in sorted({p.challenger_version for p in pairs}):
        mine = [p for p in pairs if p.challenger_version == version]
        labelled = [p for p in mine if p.true_label is not None]
        served_right = [p.served_label == p.true_label for p in labelled]
        challenger_right = [p.challenger_label == p.true_label for p in labelled]
        both = list(zip(served_right, challenger_right, strict=True))
        out.append(
            ShadowSummary(
                challenger_version=version,
                served_versions=sorted({p.served_version for p in mine}),
                n=len(mine),
                agreement=_share(
                    sum(p.served_label == p.challenger_label for p in mine), len(mine)
                ),
                labelled=len(labelled),
                served_accuracy=_share(sum(served_right), len(labelled)),
                challenger_accuracy=_share(sum(challenger_right), len(labelled)),
                only_served_right=sum(a and not b for a, b in both),
                only_challenger_right=sum(b and not a for a, b in both),
            )
        )
    return out


def build_report(
    predictions: Sequence[LabelledPrediction],
    manifest: dict,
    *,
    min_samples: int = drift.MIN_SAMPLES,
    limits: Thresholds | None = None,
    shadow: Sequence[ShadowPair] = (),
) -> Figures:
    """The report's figures from the window's predictions (with their true labels),
    model.json (an empty dict when there is none) and the photos a challenger scored."""
    t = limits or Thresholds()
    classes = list(manifest.get("classes") or sorted({p.record.label for p in predictions}))
    reference = manifest.get("reference") or {}
    labelled = [p for p in predictions if p.true_label is not None]
    truths = [str(p.true_label) for p in labelled]
    performance = Performance.from_metrics(
        classification_metrics(truths, [p.record.label for p in labelled], classes)
    )
    columns = Columns.of(predictions, classes)
    drift_figures = _drift(reference, columns, classes, min_samples, t)
    alerts: list = _alerts(drift_figures.psi, drift_figures.noise_p95, performance, t)
    estimated = estimated_figures(predictions, classes)
    alerts += estimate_alerts(estimated, min_samples, t)
    return Figures(
        status=_status(alerts, drift_figures.levels),
        alerts=alerts,
        model=_model(manifest, classes, predictions),
        counts=_counts(len(predictions), truths, classes),
        performance=performance,
        estimated=estimated,
        latency_ms=latency_summary(p.record.latency_ms for p in predictions),
        predictions=_traffic(columns, classes, reference),
        reference=ReferenceSummary(
            **{k: reference.get(k) for k in ReferenceSummary.__dataclass_fields__}
        ),
        drift=drift_figures,
        thresholds=t,
        shadow=shadow_summaries(shadow),
    )
