"""The gate's statistics against scipy and scikit-learn on known tables."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import log_loss as sk_log_loss

from stages import paired_stats


def paired_table(both: int, gained: int, lost: int, neither: int) -> tuple[np.ndarray, ...]:
    """Champion and challenger right/wrong vectors with the given 2x2 counts."""
    champion = [True] * both + [False] * gained + [True] * lost + [False] * neither
    challenger = [True] * both + [True] * gained + [False] * lost + [False] * neither
    return np.array(champion), np.array(challenger)


@pytest.mark.parametrize(
    "table", [(950, 7, 2, 21), (960, 1, 1, 18), (900, 0, 6, 74), (970, 12, 0, 0), (10, 0, 0, 5)]
)
def test_mcnemar_exact_equals_scipys_binomial_test_on_the_discordant_photos(table) -> None:
    champion, challenger = paired_table(*table)
    result = paired_stats.mcnemar_exact(champion, challenger)
    assert (result.gained, result.lost) == (table[1], table[2])
    n = table[1] + table[2]
    expected = stats.binomtest(table[1], n, 0.5).pvalue if n else 1.0
    assert result.p_value == pytest.approx(expected, rel=1e-12)


def test_a_known_mcnemar_table_gives_the_textbook_p_value() -> None:
    # 7 gained, 2 lost: P = 2 * (1 + 9 + 36) / 512 = 0.1796875 (not significant at 0.05).
    result = paired_stats.mcnemar_exact(*paired_table(950, 7, 2, 21))
    assert result.p_value == pytest.approx(92 / 512)


def test_the_bootstrap_interval_matches_scipys_percentile_bootstrap() -> None:
    champion, challenger = paired_table(900, 30, 10, 40)
    ours = paired_stats.bootstrap_difference(champion, challenger, samples=4000, seed=1)
    diff = challenger.astype(float) - champion.astype(float)
    theirs = stats.bootstrap(
        (diff,), np.mean, n_resamples=4000, method="percentile", random_state=2
    ).confidence_interval
    assert ours.low == pytest.approx(theirs.low, abs=0.004)
    assert ours.high == pytest.approx(theirs.high, abs=0.004)
    assert ours.low < diff.mean() < ours.high
    again = paired_stats.bootstrap_difference(champion, challenger, samples=4000, seed=1)
    assert again == ours  # seeded: the report does not move between runs


@pytest.mark.parametrize("successes,total", [(471, 480), (0, 20), (20, 20), (7, 13)])
def test_the_wilson_interval_equals_scipys(successes: int, total: int) -> None:
    ours = paired_stats.wilson(successes, total)
    theirs = stats.binomtest(successes, total).proportion_ci(0.95, method="wilson")
    assert ours.low == pytest.approx(theirs.low, abs=1e-9)
    assert ours.high == pytest.approx(theirs.high, abs=1e-9)


def test_ece_on_a_table_worked_by_hand() -> None:
    # Two bins used: confidence 0.9 (3 photos, 2 right: gap 0.9 - 2/3) and 0.6 (1 photo,
    # right: gap 0.4). ECE = 3/4 * 0.2333... + 1/4 * 0.4 = 0.275.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.4, 0.6]])
    labels = np.array([0, 0, 0, 1])
    assert paired_stats.expected_calibration_error(probs, labels, bins=10) == pytest.approx(
        0.75 * (0.9 - 2 / 3) + 0.25 * 0.4
    )


def test_log_loss_and_recall_equal_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1], size=200)
    labels = rng.integers(0, 2, size=200)
    assert paired_stats.log_loss(probs, labels) == pytest.approx(sk_log_loss(labels, probs))
    recall = paired_stats.recall_per_class(probs.argmax(1), labels, ["cat", "dog"])
    cats = labels == 0
    assert recall["cat"] == pytest.approx((probs.argmax(1)[cats] == 0).mean())
