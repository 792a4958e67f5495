"""The one implementation of accuracy, precision, recall and F1, against scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contracts.classification import classification_metrics
from tests.helpers.photos import FULLRES_DIR, SAMPLE_DIR

ROOT = Path(__file__).resolve().parents[2]
FULLRES = FULLRES_DIR
CATS_DOGS = SAMPLE_DIR


def test_metrics_agree_with_scikit_learn() -> None:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(1)
    classes = ["cat", "dog", "fox"]
    y_true = rng.choice(classes, 200).tolist()
    y_pred = [t if rng.random() < 0.7 else rng.choice(classes) for t in y_true]
    ours = classification_metrics(y_true, y_pred, classes)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    assert [ours["precision"][c] for c in classes] == pytest.approx(p.tolist())
    assert [ours["recall"][c] for c in classes] == pytest.approx(r.tolist())
    assert [ours["f1"][c] for c in classes] == pytest.approx(f.tolist())
    cm = confusion_matrix(y_true, y_pred, labels=classes)
    assert ours["confusion_matrix"]["matrix"] == cm.tolist()

    # A window where no fox is true or predicted: fox is null and out of the macro averages,
    # as in scikit-learn over the labels present.
    pairs = [(t, p) for t, p in zip(y_true, y_pred, strict=True) if "fox" not in (t, p)]
    y_true, y_pred = [t for t, _ in pairs], [p for _, p in pairs]
    ours = classification_metrics(y_true, y_pred, classes)
    assert ours["f1"]["fox"] is None and ours["precision"]["fox"] is None
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="macro")
    assert (ours["precision_macro"], ours["recall_macro"], ours["f1_macro"]) == pytest.approx(
        (p, r, f)
    )
