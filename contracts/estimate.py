"""Accuracy and F1 estimated from the model's own probabilities, before any true label.

Confidence-based performance estimation (NannyML's CBPE): if the probabilities are
calibrated, prediction i is right with probability max_k p_ik, independently of the
others. So the number of right answers in a window is Poisson-binomial:

    expected accuracy = mean_i max_k p_ik
    variance of the accuracy = sum_i c_i (1 - c_i) / n^2          (c_i = max_k p_ik)

and the expected confusion matrix (rows: true class, columns: predicted) adds, for each
prediction, its probability vector to the column of its predicted class. F1 is read off
that matrix; its interval comes from drawing true labels from the probabilities.

The estimate is only as good as the calibration: label-smoothed (underconfident)
probabilities underestimate accuracy. Pure NumPy: the service computes the gauge with it
at scrape time, the report the per-window figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# The alert thresholds (deployment/prometheus/alerts.yml repeats them; a test compares).
ESTIMATED_ACCURACY_ALERT = 0.9
# 95 % of in-distribution photos pass the OOD threshold, so about 5 % are flagged normally.
OOD_SHARE_ALERT = 0.15
Z_95 = 1.959963984540054
# Draws of true labels for the F1 interval; fixed seed, so a window gives one answer.
F1_DRAWS = 400
SEED = 0


@dataclass(frozen=True)
class Interval:
    estimate: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Estimate:
    """What the probabilities say the window's performance is (no labels used)."""

    n: int
    accuracy: Interval
    f1_macro: Interval
    f1: dict[str, float | None]
    confusion_matrix: list[list[float]]  # expected counts, rows true, columns predicted
    method: str = "confidence-based (CBPE): mean top-class probability, Poisson-binomial"


def probability_matrix(
    probabilities: Sequence[Mapping[str, float]], classes: Sequence[str]
) -> np.ndarray:
    """[N, C] float64 from per-prediction {class: probability}; rows renormalised to 1."""
    rows = np.array([[float(p.get(c, 0.0)) for c in classes] for p in probabilities])
    rows = rows.reshape(len(probabilities), len(classes))
    sums = rows.sum(axis=1, keepdims=True)
    if (sums <= 0).any() or not np.isfinite(rows).all():
        raise ValueError("every prediction needs finite probabilities with a positive sum")
    return rows / sums


def accuracy_interval(confidences: np.ndarray, z: float = Z_95) -> Interval:
    """Expected accuracy and its normal interval under the Poisson-binomial variance."""
    c = np.asarray(confidences, dtype=np.float64)
    if c.size == 0:
        raise ValueError("no predictions to estimate from")
    mean = float(c.mean())
    half = z * float(np.sqrt(np.sum(c * (1.0 - c)))) / c.size
    return Interval(mean, max(0.0, mean - half), min(1.0, mean + half))


def expected_confusion(probs: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """[C, C] expected counts: each prediction adds its probabilities to its column."""
    c = probs.shape[1]
    matrix = np.zeros((c, c))
    for k in range(c):
        matrix[:, k] = probs[predicted == k].sum(axis=0)
    return matrix


def f1_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """Per-class F1 (NaN where a class is neither true nor predicted) from counts."""
    tp = np.diag(matrix)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)  # predicted + true = 2tp+fp+fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, np.nan)


def _f1_draws(probs: np.ndarray, predicted: np.ndarray, draws: int) -> np.ndarray:
    """Macro F1 for `draws` label sets drawn from the probabilities (seeded)."""
    rng = np.random.default_rng(SEED)
    cumulative = probs.cumsum(axis=1)
    out = np.empty(draws)
    for d in range(draws):
        u = rng.random((probs.shape[0], 1))
        truths = np.minimum((u > cumulative).sum(axis=1), probs.shape[1] - 1)
        matrix = np.zeros((probs.shape[1], probs.shape[1]))
        np.add.at(matrix, (truths, predicted), 1.0)
        out[d] = np.nanmean(f1_from_confusion(matrix))
    return out


def estimate(
    probabilities: Sequence[Mapping[str, float]],
    predicted: Sequence[str],
    classes: Sequence[str],
    draws: int = F1_DRAWS,
) -> Estimate:
    """Estimated accuracy and F1 of predictions from their probabilities alone.

    The predicted label is the service's (the argmax); its probability is the confidence.
    """
    probs = probability_matrix(probabilities, classes)
    index = {c: i for i, c in enumerate(classes)}
    pred = np.array([index[label] for label in predicted], dtype=np.int64)
    matrix = expected_confusion(probs, pred)
    f1 = f1_from_confusion(matrix)
    macro = float(np.nanmean(f1))
    sampled = _f1_draws(probs, pred, draws)
    return Estimate(
        n=len(pred),
        accuracy=accuracy_interval(probs[np.arange(len(pred)), pred]),
        f1_macro=Interval(macro, *map(float, np.percentile(sampled, [2.5, 97.5]))),
        f1={c: (None if np.isnan(v) else float(v)) for c, v in zip(classes, f1, strict=True)},
        confusion_matrix=matrix.round(6).tolist(),
    )


def flagged_share(flags: Sequence[bool | None]) -> tuple[float, int]:
    """Share of OOD-flagged predictions among those that carry a flag, and that count."""
    scored = [bool(f) for f in flags if f is not None]
    return (sum(scored) / len(scored) if scored else float("nan")), len(scored)
