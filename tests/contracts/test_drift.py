"""PSI drift: the binning and comparison the service gauge and the report share."""

from __future__ import annotations

import numpy as np
import pytest

from contracts import drift
from monitoring.drift_stats import noise_level
from tests.helpers.photos import FULLRES_DIR, SAMPLE_DIR

FULLRES = FULLRES_DIR
CATS_DOGS = SAMPLE_DIR


# ---------------------------------------------------------------- PSI


def test_psi_is_zero_for_equal_distributions_and_matches_hand_computation() -> None:
    assert drift.psi([10, 30, 60], [10, 30, 60]) == pytest.approx(0.0, abs=1e-12)
    # Same shape, different sample sizes: smoothing makes it nearly, not exactly, zero.
    assert drift.psi([100, 300, 600], [10, 30, 60]) < 0.01
    # reference [2, 8] -> +0.5 -> [2.5, 8.5] / 11 = [0.227273, 0.772727]
    # live      [2, 4] -> +0.5 -> [2.5, 4.5] / 7  = [0.357143, 0.642857]
    # PSI = 0.129870 * ln(0.357143 / 0.227273) + (-0.129870) * ln(0.642857 / 0.772727)
    #     = 0.129870 * 0.451985 + 0.129870 * 0.184004 = 0.082596
    assert drift.psi([2, 8], [2, 4]) == pytest.approx(0.082596, abs=1e-6)
    with pytest.raises(ValueError):
        drift.psi([1, 2], [1, 2, 3])


def test_histogram_counts_out_of_range_values_in_the_end_bins() -> None:
    # 1.0 sits on the last edge; 1.2 and -0.1 are clipped into the end bins; NaN/None dropped.
    counts = drift.histogram([0.1, 0.5, 1.0, 1.2, -0.1, float("nan"), None], [0.0, 0.5, 1.0])
    assert counts.tolist() == [2, 3]


REFERENCE = {
    "n": 1000,
    "class_shares": {"cat": 0.5, "dog": 0.5},
    "confidence_histogram": {
        "edges": np.linspace(0.5, 1.0, 11).round(2).tolist(),
        "counts": [5, 5, 5, 5, 10, 10, 20, 40, 100, 800],
    },
    "brightness_histogram": {
        "edges": np.linspace(0.0, 1.0, 11).round(1).tolist(),
        "counts": [10, 40, 120, 250, 280, 180, 80, 30, 10, 0],
    },
}


def _sample_like_reference(n: int, seed: int = 0) -> tuple[list[str], list[float], list[float]]:
    """Live values drawn from the reference's own histograms (uniform within a bin)."""
    rng = np.random.default_rng(seed)

    def draw(hist: dict) -> list[float]:
        edges, counts = np.asarray(hist["edges"]), np.asarray(hist["counts"], dtype=float)
        bins = rng.choice(len(counts), size=n, p=counts / counts.sum())
        return (edges[bins] + rng.random(n) * np.diff(edges)[bins]).tolist()

    labels = rng.choice(["cat", "dog"], size=n).tolist()
    return labels, draw(REFERENCE["confidence_histogram"]), draw(REFERENCE["brightness_histogram"])


def test_drift_report_is_small_for_traffic_like_the_reference_and_large_for_a_shift() -> None:
    labels, conf, bright = _sample_like_reference(400)
    same = drift.drift_report(REFERENCE, labels, conf, bright, ["cat", "dog"])
    assert set(same) == {"class_share", "confidence", "brightness"}
    assert all(v < drift.PSI_WARN for v in same.values()), same

    # Only cats, darkened to a third, less confident: every figure passes the alert line.
    shifted = drift.drift_report(
        REFERENCE,
        ["cat"] * 400,
        [0.5 + (c - 0.5) * 0.5 for c in conf],
        [b / 3 for b in bright],
        ["cat", "dog"],
    )
    assert all(v > drift.PSI_ALERT for v in shifted.values()), shifted


def test_drift_report_leaves_out_what_it_cannot_compute() -> None:
    labels, conf, bright = _sample_like_reference(40)
    # The whole manifest is accepted as well as its `reference` section.
    full = drift.drift_report(
        {"reference": REFERENCE}, labels, conf, bright, ["cat", "dog"], min_samples=40
    )
    assert set(full) == {"class_share", "confidence", "brightness"}
    # Too few live samples: nothing rather than noise.
    assert drift.drift_report(REFERENCE, labels, conf, bright, ["cat", "dog"], min_samples=41) == {}
    # A reference without brightness, and live brightness missing (None) for most requests.
    no_bright = {k: v for k, v in REFERENCE.items() if k != "brightness_histogram"}
    found = drift.drift_report(no_bright, labels, conf, bright, ["cat", "dog"], min_samples=40)
    assert set(found) == {"class_share", "confidence"}
    sparse = bright[:5] + [None] * 35
    found = drift.drift_report(REFERENCE, labels, conf, sparse, ["cat", "dog"], min_samples=40)
    assert set(found) == {"class_share", "confidence"}
    assert drift.drift_report({}, labels, conf, bright, ["cat", "dog"], min_samples=1) == {}


def test_noise_level_is_what_pure_sampling_noise_rarely_exceeds() -> None:
    ref = REFERENCE["brightness_histogram"]["counts"]
    shares = np.asarray(ref) / sum(ref)
    rng = np.random.default_rng(7)  # fresh draws, not the function's own
    levels = []
    for n in (30, 100, 300):
        level = noise_level(ref, n)
        levels.append(level)
        noise = [
            drift.psi(rng.multinomial(sum(ref), shares), rng.multinomial(n, shares))
            for _ in range(300)
        ]
        assert 0.01 <= np.mean(np.asarray(noise) > level) <= 0.12, n
    assert levels[0] > levels[1] > levels[2]
    assert noise_level(ref, 0) is None


def test_min_samples_is_100_unless_the_caller_passes_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The core reads no environment: DRIFT_MIN_SAMPLES is the service's setting and the
    report's option, passed down as `min_samples`."""
    labels, conf, bright = _sample_like_reference(99)
    monkeypatch.setenv("DRIFT_MIN_SAMPLES", "30")
    assert drift.MIN_SAMPLES == 100
    assert drift.drift_report(REFERENCE, labels, conf, bright, ["cat", "dog"]) == {}
    given = drift.drift_report(REFERENCE, labels, conf, bright, ["cat", "dog"], min_samples=99)
    assert set(given) == {"class_share", "confidence", "brightness"}
