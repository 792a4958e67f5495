"""Statistics for comparing two classifiers on the same photos, and for the model card.

Two models scored on one test split differ on a few photos; whether that is a gain or
noise is what McNemar's exact test on the discordant photos and a paired bootstrap of
the accuracy difference say. NumPy and the standard library only: tests check each
figure against scipy on known tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class McNemar:
    """Photos only the challenger gets right (`gained`), only the champion (`lost`)."""

    gained: int
    lost: int
    p_value: float


def mcnemar_exact(champion_right: np.ndarray, challenger_right: np.ndarray) -> McNemar:
    """Two-sided exact McNemar test: a binomial(n_discordant, 1/2) test on the discordant
    photos (twice the smaller tail, capped at 1), as statsmodels' `mcnemar(exact=True)`."""
    champion_right = np.asarray(champion_right, dtype=bool)
    challenger_right = np.asarray(challenger_right, dtype=bool)
    gained = int((challenger_right & ~champion_right).sum())
    lost = int((champion_right & ~challenger_right).sum())
    return McNemar(gained, lost, binomial_two_sided(min(gained, lost), gained + lost))


def binomial_two_sided(smaller: int, n: int) -> float:
    """P(X <= smaller) * 2 for X ~ Binomial(n, 1/2), capped at 1 (1 when n is 0)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(smaller + 1)) / 2**n
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def bootstrap_difference(
    champion_right: np.ndarray,
    challenger_right: np.ndarray,
    samples: int,
    seed: int,
    level: float = 0.95,
) -> Interval:
    """Percentile bootstrap interval of accuracy(challenger) - accuracy(champion), resampling
    photos (pairs stay together), seeded so the same inputs give the same interval."""
    diff = np.asarray(challenger_right, dtype=np.float64) - np.asarray(
        champion_right, dtype=np.float64
    )
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, 256):  # chunks: bounded memory on big splits
        count = min(256, samples - start)
        picks = rng.integers(0, len(diff), size=(count, len(diff)))
        means[start : start + count] = diff[picks].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(low), float(high))


def wilson(successes: int, total: int, z: float = 1.959963984540054) -> Interval:
    """Wilson score interval of a proportion (95 % by default); (0, 1) when total is 0."""
    if total == 0:
        return Interval(0.0, 1.0)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: the share-weighted gap between confidence and accuracy over equal-width
    confidence bins (top-label, bins (lo, hi], the usual definition)."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        member = which == b
        if member.any():
            total += member.mean() * abs(confidence[member].mean() - right[member].mean())
    return float(total)


def log_loss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    """Mean negative log probability of the true class (clipped as export's figure)."""
    picked = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(picked, eps, 1.0)).mean())


def recall_per_class(predicted: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Share of each class's photos labelled as that class (None for an absent class)."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    out: dict[str, float | None] = {}
    for index, name in enumerate(classes):
        member = labels == index
        out[name] = float((predicted[member] == index).mean()) if member.any() else None
    return out
