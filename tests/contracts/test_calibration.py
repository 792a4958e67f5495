"""contracts/calibration.py: ECE by hand on a known case, and a temperature that helps."""

from __future__ import annotations

import numpy as np
import pytest

from contracts.calibration import (
    expected_calibration_error,
    fit_temperature,
    log_loss,
    reliability,
    softmax,
)


def test_ece_matches_a_hand_computation_with_15_equal_width_bins() -> None:
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 0])
    # confidences 0.9, 0.9 (bin 13: (0.8667, 0.9333]), 0.8 (bin 11), 0.6 (bin 8)
    # bin 13: accuracy 1/2, confidence 0.9 -> gap 0.4, weight 2/4
    # bin 11: accuracy 1, confidence 0.8 -> gap 0.2; bin 8: accuracy 0, confidence 0.6
    expected = 2 / 4 * 0.4 + 1 / 4 * 0.2 + 1 / 4 * 0.6
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)
    table = reliability(probs, labels)
    assert len(table) == 15 and [b.count for b in table if b.count] == [1, 1, 2]


def test_temperature_lowers_the_log_loss_on_the_photos_it_was_fitted_on() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    truth = np.where(labels == 1, 1.0, -1.0) * rng.gamma(2.0, 1.0, 2000)
    logits = np.stack([-truth, truth], 1) / 4.0  # under-confident, as label smoothing makes
    t = fit_temperature(logits, labels)
    assert t < 1.0  # sharpen
    assert log_loss(logits, labels, t) < log_loss(logits, labels)
    # no T on a fine grid does better than the fitted one
    grid = np.geomspace(0.05, 20, 400)
    assert log_loss(logits, labels, t) <= min(log_loss(logits, labels, g) for g in grid) + 1e-6
    # and the calibration error drops with it; the labels never change
    assert expected_calibration_error(softmax(logits, t), labels) < expected_calibration_error(
        softmax(logits), labels
    )
    assert (softmax(logits, t).argmax(1) == softmax(logits).argmax(1)).all()
