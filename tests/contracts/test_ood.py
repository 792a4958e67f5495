"""contracts/ood.py: the out-of-distribution score on synthetic features with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contracts.bundle import OodSpec, file_sha256
from contracts.ood import (
    OodError,
    OodScorer,
    fit_mahalanobis,
    knn_distance,
    mahalanobis,
    save_reference,
    threshold_for,
)


def _two_classes(n: int = 400, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    centres = np.zeros((2, dim))
    centres[1, 0] = 6.0
    return centres[labels] + rng.normal(size=(n, dim)), labels


def test_mahalanobis_is_the_squared_distance_to_the_nearest_mean_after_whitening() -> None:
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    whiten = np.diag([1.0, 0.5])  # covariance diag(1, 4)
    x = np.array([[1.0, 2.0], [9.0, -4.0]])
    # nearest means: 0 -> 1 + (2 * 0.5)² = 2; 1 -> 1 + (-4 * 0.5)² = 5
    assert mahalanobis(x, means, whiten) == pytest.approx([2.0, 5.0])


def test_fitted_reference_scores_far_points_above_the_95_percent_threshold() -> None:
    features, labels = _two_classes()
    arrays = fit_mahalanobis(features, labels, 2)
    held_out, _ = _two_classes(seed=1)
    scorer = OodScorer("mahalanobis", arrays, threshold_for(mahalanobis(held_out, **arrays)))
    passed = ~scorer.flag(scorer.score(_two_classes(seed=2)[0]))
    assert 0.9 < passed.mean() < 0.99  # about 95 % of new in-distribution points pass
    far = np.full((3, 8), 3.0)  # between the classes and off their axis
    assert scorer.flag(scorer.score(far)).all()


def test_knn_distance_is_zero_on_a_reference_vector_and_grows_with_the_angle() -> None:
    bank = np.eye(3)
    x = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    assert knn_distance(x, bank, 1) == pytest.approx([0.0, 1 - 2**-0.5, 1.0], abs=1e-6)


def test_knn_scorer_normalises_its_bank_once_and_scores_as_knn_distance() -> None:
    rng = np.random.default_rng(3)
    bank = rng.normal(size=(50, 6)).astype(np.float16)  # as bundles store it
    scorer = OodScorer("knn", {"bank": bank}, threshold=0.5, k=3)
    x = rng.normal(size=(7, 6))
    assert scorer.score(x) == pytest.approx(knn_distance(x, bank, 3), abs=1e-6)
    assert scorer.score(x[:2]) == pytest.approx(knn_distance(x[:2], bank, 3), abs=1e-6)
    assert scorer.reference is scorer.reference  # computed once, not per call
    assert np.linalg.norm(scorer.reference, axis=1) == pytest.approx(np.ones(50), abs=1e-6)


def test_scorer_refuses_features_of_the_wrong_width() -> None:
    scorer = OodScorer("mahalanobis", fit_mahalanobis(*_two_classes(), 2), threshold=1.0)
    with pytest.raises(OodError, match=r"\[N, 8\]"):
        scorer.score(np.zeros((2, 5)))


def _spec(path: Path, **changes: object) -> OodSpec:
    values = {
        "method": "mahalanobis", "file": path.name, "sha256": file_sha256(path),
        "feature_dim": 8, "threshold": 7.0, "reference_photos": 400, "threshold_photos": 400,
    }  # fmt: skip
    return OodSpec(**{**values, **changes})


def test_reference_file_is_byte_identical_when_saved_twice_and_loads_back(tmp_path: Path) -> None:
    arrays = fit_mahalanobis(*_two_classes(), 2)
    first = save_reference(tmp_path / "a.npz", arrays).read_bytes()
    second = save_reference(tmp_path / "ood.npz", arrays).read_bytes()
    assert first == second
    scorer = OodScorer.from_spec(tmp_path, _spec(tmp_path / "ood.npz"))
    assert scorer.threshold == 7.0 and scorer.dim == 8
    np.testing.assert_array_equal(scorer.arrays["whiten"], arrays["whiten"])


def test_an_altered_reference_file_is_refused(tmp_path: Path) -> None:
    path = save_reference(tmp_path / "ood.npz", fit_mahalanobis(*_two_classes(), 2))
    spec = _spec(path)
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(OodError, match="SHA-256"):
        OodScorer.from_spec(tmp_path, spec)
