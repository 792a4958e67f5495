"""Evaluate's pieces on real photos: the most confidently wrong first, and their gallery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from contracts.imaging import load
from stages.evaluate import confidently_wrong, curve_tables, draw_gallery
from tests.helpers.photos import sample_photos


def test_confidently_wrong_lists_only_mistakes_surest_first() -> None:
    labels = np.array([0, 0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.05, 0.95], [0.6, 0.4], [0.2, 0.8]])
    assert confidently_wrong(labels, probs, limit=10).tolist() == [4, 1, 3]
    assert confidently_wrong(labels, probs, limit=1).tolist() == [4]
    assert confidently_wrong(labels[:1], probs[:1], limit=5).tolist() == []


def test_gallery_draws_the_wrong_photos_or_says_there_are_none(tmp_path: Path) -> None:
    photos = np.stack([load(p.read_bytes(), 64) for p in sample_photos("cat", 6)])
    labels = np.zeros(6, dtype=int)
    probs = np.tile([0.2, 0.8], (6, 1))
    drawn = draw_gallery(photos, labels, probs, ["cat", "dog"], tmp_path / "wrong.png", 4)
    assert drawn == 4 and Image.open(tmp_path / "wrong.png").size[0] > 400
    none = draw_gallery(photos, labels, 1 - probs, ["cat", "dog"], tmp_path / "none.png", 4)
    assert none == 0 and (tmp_path / "none.png").stat().st_size > 0


def test_curves_span_the_unit_square() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.clip(labels * 0.6 + rng.random(200) * 0.5, 0, 1)
    roc, pr = curve_tables(labels, np.stack([1 - scores, scores], axis=1))
    assert roc["fpr"].min() == 0 and roc["tpr"].max() == 1
    assert pr["recall"].between(0, 1).all() and pr["precision"].between(0, 1).all()
