"""The report's figures: performance on labelled predictions, traffic, drift and alerts.

Drift uses contracts.drift, the same code the service's gauge uses, so the two agree on
the same window.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from contracts import drift
from contracts.classification import classification_metrics
from monitoring.drift_stats import noise_level


def latency_summary(latencies: Iterable[float | None]) -> dict[str, float | None]:
    """p50/p95/p99 (linear interpolation between order statistics), mean and max, in ms."""
    values = drift.finite(latencies)
    if values.size == 0:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "n": int(values.size),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(values.mean()),
        "max": float(values.max()),
    }


def _edges(reference: dict, key: str, low: float) -> list[float]:
    hist = reference.get(key) or {}
    if hist.get("edges"):
        return [float(e) for e in hist["edges"]]
    return np.linspace(low, 1.0, 11).tolist()


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def _hist(values: Iterable[float | None], edges: list[float]) -> dict:
    return {"edges": edges, "counts": drift.histogram(values, edges).tolist()}


def _noise_levels(
    reference: dict, classes: list[str], psi: dict[str, float], columns: dict
) -> dict[str, float | None]:
    """Per computed feature, the PSI sampling alone exceeds 5 % of the time."""
    out: dict[str, float | None] = {}
    if "class_share" in psi:
        shares = reference.get("class_shares") or {}
        n_ref = float(reference.get("n") or drift.REFERENCE_N_DEFAULT)
        ref = [float(shares.get(c, 0.0)) * n_ref for c in classes]
        out["class_share"] = noise_level(ref, int(columns["class_counts"].sum()))
    for feature in ("confidence", "brightness"):
        if feature in psi:
            ref = reference[f"{feature}_histogram"]["counts"]
            out[feature] = noise_level(ref, int(drift.finite(columns[feature]).size))
    return out


def _columns(predictions: list[dict], classes: list[str]) -> dict:
    images = [p.get("image") or {} for p in predictions]
    labels = [p["label"] for p in predictions]
    return {
        "labels": labels,
        "confidence": [p.get("confidence") for p in predictions],
        "brightness": [img.get("brightness") for img in images],
        "widths": drift.finite(i.get("width") for i in images),
        "heights": drift.finite(i.get("height") for i in images),
        "class_counts": drift.class_counts(labels, classes),
    }


def _traffic(columns: dict, classes: list[str], reference: dict) -> dict:
    """What the window's predictions look like: class shares, confidence, brightness, sizes."""
    counts, n = columns["class_counts"], len(columns["labels"])
    return {
        "class_shares": {
            c: (int(k) / n if n else None) for c, k in zip(classes, counts, strict=True)
        },
        "class_counts": {c: int(k) for c, k in zip(classes, counts, strict=True)},
        "confidence_mean": _mean(drift.finite(columns["confidence"])),
        "confidence_histogram": _hist(
            columns["confidence"],
            _edges(reference, "confidence_histogram", 1.0 / max(len(classes), 2)),
        ),
        "brightness_mean": _mean(drift.finite(columns["brightness"])),
        "brightness_histogram": _hist(
            columns["brightness"], _edges(reference, "brightness_histogram", 0.0)
        ),
        "image_width_median": _median(columns["widths"]),
        "image_height_median": _median(columns["heights"]),
    }


def _alerts(psi: dict, noise: dict, performance: dict, t: dict) -> list[dict]:
    """The alerts that fire: the same rules as Prometheus (deployment/prometheus)."""
    alerts = [
        {
            "alert": "CatsDogsModelDrift",
            "feature": feature,
            "value": value,
            "threshold": t["psi_alert"],
            # Tells a reader the window is too small to tell this from sampling noise.
            "within_noise": bool(noise.get(feature) and value <= noise[feature]),
        }
        for feature, value in psi.items()
        if value > t["psi_alert"]
    ]
    accuracy = performance["accuracy"]
    if (
        accuracy is not None
        and performance["n"] >= t["min_labelled"]
        and accuracy < t["accuracy_alert"]
    ):
        alerts.append(
            {
                "alert": "CatsDogsLiveAccuracyLow",
                "value": accuracy,
                "threshold": t["accuracy_alert"],
                "labelled": performance["n"],
            }
        )
    return alerts


def thresholds(
    psi_warn: float = drift.PSI_WARN,
    psi_alert: float = drift.PSI_ALERT,
    accuracy_alert: float = drift.ACCURACY_ALERT,
    min_labelled: int = drift.MIN_LABELLED,
) -> dict:
    return {
        "psi_warn": psi_warn,
        "psi_alert": psi_alert,
        "accuracy_alert": accuracy_alert,
        "min_labelled": min_labelled,
    }


def build_report(
    predictions: list[dict],
    truths: dict[str, str],
    manifest: dict,
    *,
    min_samples: int = drift.MIN_SAMPLES,
    limits: dict | None = None,
) -> dict:
    """The report's figures from the window's predictions, true labels and model.json."""
    t = limits or thresholds()
    classes = list(manifest.get("classes") or sorted({p["label"] for p in predictions}))
    reference = manifest.get("reference") or {}
    labelled = [p for p in predictions if p.get("request_id") in truths]
    y_true = [truths[p["request_id"]] for p in labelled]
    performance = classification_metrics(y_true, [p["label"] for p in labelled], classes)
    columns = _columns(predictions, classes)
    psi = drift.drift_report(
        reference, columns["labels"], columns["confidence"], columns["brightness"], classes,
        min_samples=min_samples,
    )  # fmt: skip
    noise = _noise_levels(reference, classes, psi, columns)
    alerts = _alerts(psi, noise, performance, t)
    levels = {k: drift.level(v, t["psi_warn"], t["psi_alert"]) for k, v in psi.items()}
    versions: dict[str, int] = {}
    for p in predictions:
        versions[str(p.get("model_version"))] = versions.get(str(p.get("model_version")), 0) + 1
    n = len(predictions)
    return {
        "status": "alert" if alerts else ("warn" if "warn" in levels.values() else "ok"),
        "alerts": alerts,
        "model": {
            "name": manifest.get("name"),
            "version": manifest.get("version"),
            "classes": classes,
            "test_metrics": manifest.get("metrics"),
            "versions_in_window": versions,
        },
        "counts": {
            "predictions": n,
            "labelled": len(labelled),
            "unlabelled": n - len(labelled),
            "labelled_share": len(labelled) / n if n else None,
            "feedback_with_unknown_label": sum(1 for x in y_true if x not in classes),
        },
        "performance": performance,
        "latency_ms": latency_summary(p.get("latency_ms") for p in predictions),
        "predictions": _traffic(columns, classes, reference),
        "reference": {
            key: reference.get(key)
            for key in ("n", "class_shares", "confidence_histogram", "brightness_histogram")
        },
        "drift": {
            "method": "population stability index, half-count smoothing per bin",
            "psi": psi,
            "levels": levels,
            "noise_p95": noise,
            "min_samples": min_samples,
            "not_computed": [f for f in drift.FEATURES if f not in psi],
        },
        "thresholds": t,
    }
