"""Accuracy and F1 estimated from probabilities alone, against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contracts import estimate
from contracts.classification import classification_metrics

CLASSES = ["cat", "dog"]
# Four predictions; the predicted label is the argmax, its probability the confidence.
PROBS = [
    {"cat": 0.9, "dog": 0.1},
    {"cat": 0.6, "dog": 0.4},
    {"cat": 0.2, "dog": 0.8},
    {"cat": 0.3, "dog": 0.7},
]
PREDICTED = ["cat", "cat", "dog", "dog"]


def test_estimate_matches_a_hand_computation() -> None:
    result = estimate.estimate(PROBS, PREDICTED, CLASSES)
    # Expected accuracy: (0.9 + 0.6 + 0.8 + 0.7) / 4.
    assert result.accuracy.estimate == pytest.approx(0.75)
    # Poisson-binomial variance of the count: .09 + .24 + .16 + .21 = 0.70.
    half = 1.959963984540054 * math.sqrt(0.70) / 4
    assert result.accuracy.lower == pytest.approx(0.75 - half)
    assert result.accuracy.upper == pytest.approx(min(1.0, 0.75 + half))
    # Expected confusion (rows true): the cat column holds 0.9+0.6 cat, 0.1+0.4 dog.
    assert np.allclose(result.confusion_matrix, [[1.5, 0.5], [0.5, 1.5]])
    # F1(cat) = 2 * 1.5 / (2 predicted + 2 true) = 0.75, and the same for dog.
    assert result.f1 == pytest.approx({"cat": 0.75, "dog": 0.75})
    assert result.f1_macro.estimate == pytest.approx(0.75)
    assert result.f1_macro.lower <= 0.75 <= result.f1_macro.upper
    assert result.n == 4


def test_calibrated_probabilities_estimate_the_realised_accuracy() -> None:
    """Labels drawn from the probabilities themselves (perfect calibration): the realised
    accuracy and F1 fall inside the estimate's 95 % intervals."""
    rng = np.random.default_rng(7)
    cat = rng.beta(0.6, 0.6, size=2000)
    probs = [{"cat": float(p), "dog": float(1 - p)} for p in cat]
    predicted = ["cat" if p >= 0.5 else "dog" for p in cat]
    truths = ["cat" if rng.random() < p else "dog" for p in cat]
    result = estimate.estimate(probs, predicted, CLASSES)
    realised = classification_metrics(truths, predicted, CLASSES)
    assert result.accuracy.lower <= realised["accuracy"] <= result.accuracy.upper
    assert result.f1_macro.lower <= realised["f1_macro"] <= result.f1_macro.upper
    assert result.accuracy.upper - result.accuracy.lower < 0.05  # n = 2000 is informative


def test_confident_wrong_model_is_estimated_high_so_calibration_matters() -> None:
    """The estimate reads confidence, not truth: it says what calibration makes it mean."""
    sure = [{"cat": 0.99, "dog": 0.01}] * 10
    assert estimate.estimate(sure, ["cat"] * 10, CLASSES).accuracy.estimate == pytest.approx(0.99)


def test_bad_probabilities_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="positive sum"):
        estimate.estimate([{"cat": 0.0, "dog": 0.0}], ["cat"], CLASSES)
    with pytest.raises(ValueError, match="no predictions"):
        estimate.accuracy_interval(np.array([]))


def test_flagged_share_counts_only_scored_predictions() -> None:
    share, n = estimate.flagged_share([True, False, None, False, True, None])
    assert (share, n) == (0.5, 4)
    share, n = estimate.flagged_share([None, None])
    assert math.isnan(share) and n == 0
