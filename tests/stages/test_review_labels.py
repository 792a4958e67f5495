"""The label review: out-of-fold probabilities and the table of disputed photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.review_labels import disputed_table, draw_gallery, out_of_fold_probabilities


def test_out_of_fold_probabilities_find_a_flipped_label() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    features = rng.normal(size=(100, 8)) + labels[:, None] * 3.0  # two well-separated classes
    labels[7] = 1  # a cat filed as a dog
    probs = out_of_fold_probabilities(features, labels, folds=5, seed=0, logistic_c=0.1)
    assert probs.shape == (100, 2) and np.allclose(probs.sum(1), 1)
    assert probs[7].argmax() == 0  # judged by models that never saw its wrong label


def test_disputed_table_keeps_confident_contradictions_surest_first(tmp_path: Path) -> None:
    manifest = pd.DataFrame(
        {"file": ["cat/1.jpg", "cat/2.jpg", "dog/3.jpg"], "label": ["cat", "cat", "dog"],
         "split": ["train", "val", "test"]}
    )  # fmt: skip
    probs = np.array([[0.2, 0.8], [0.45, 0.55], [0.1, 0.9]])
    table = disputed_table(manifest, probs, ["cat", "dog"], tmp_path, threshold=0.5)
    assert table["file"].tolist() == [str(tmp_path / "cat/1.jpg"), str(tmp_path / "cat/2.jpg")]
    assert table["predicted_label"].tolist() == ["dog", "dog"]
    strict = disputed_table(manifest, probs, ["cat", "dog"], tmp_path, threshold=0.7)
    assert strict["row"].tolist() == [0]
    images = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    draw_gallery(table, images, tmp_path / "disputed.png", limit=16)
    assert (tmp_path / "disputed.png").stat().st_size > 0
