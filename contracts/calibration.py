"""Does a confidence of 0.9 mean right 9 times in 10? Calibration error and temperature.

Label smoothing compresses every confidence (a real cat photo gets about 0.87), so the
raw softmax under-states what the model knows. Temperature scaling divides the logits by
one number T fitted on the validation split, which changes no label, only confidences.
The expected calibration error (ECE) uses 15 equal-width confidence bins over [0, 1]:
the photo-weighted mean gap between each bin's accuracy and its mean confidence.
NumPy only: evaluate, export and monitoring compute it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 15


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin: its range, photos, mean confidence and accuracy (NaN if empty)."""

    low: float
    high: float
    count: int
    confidence: float
    accuracy: float


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[ReliabilityBin]:
    """The reliability diagram's bins: top-class confidence against accuracy."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 joins the first bin
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out = []
    for i in range(bins):
        member = index == i
        count = int(member.sum())
        out.append(
            ReliabilityBin(
                low=float(edges[i]),
                high=float(edges[i + 1]),
                count=count,
                confidence=float(confidence[member].mean()) if count else float("nan"),
                accuracy=float(correct[member].mean()) if count else float("nan"),
            )
        )
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Sum over bins of (photos in bin / all photos) * |accuracy - mean confidence|."""
    table = reliability(probs, labels, bins)
    total = sum(b.count for b in table)
    return float(sum(b.count / total * abs(b.accuracy - b.confidence) for b in table if b.count))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_loss(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true class at temperature T."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(z)), np.asarray(labels)].mean())


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0
) -> float:
    """The T in [low, high] that minimises the log loss (golden-section search on log T;
    the NLL is convex in 1/T, so the minimum is unique)."""
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(80):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if log_loss(logits, labels, np.exp(c)) < log_loss(logits, labels, np.exp(d)):
            b = d
        else:
            a = c
    return float(np.exp((a + b) / 2.0))
