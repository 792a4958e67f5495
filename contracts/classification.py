"""Classification metrics from true and predicted labels, in NumPy only.

The one implementation of them: the offline report uses it (it runs where scikit-learn
may be absent), and so do the pipeline's evaluate and export through
stages/classification_metrics.py; tests check it against scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def _per_class(
    classes: Sequence[str], present: np.ndarray
) -> Callable[[np.ndarray], dict[str, float | None]]:
    """A figure per class; null for a class neither true nor predicted in the window."""

    def figures(values: np.ndarray) -> dict[str, float | None]:
        return {
            c: float(v) if seen else None
            for c, v, seen in zip(classes, values, present, strict=True)
        }

    return figures


def _macro(present: np.ndarray, total: int) -> Callable[[np.ndarray], float | None]:
    """The mean over the classes present (scikit-learn's macro over the labels present)."""

    def mean(values: np.ndarray) -> float | None:
        return float(values[present].mean()) if total else None

    return mean


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]
) -> dict:
    """Accuracy, per-class and macro precision/recall/F1, and the confusion matrix.

    Rows of the matrix are true classes, columns predicted ones, both in `classes` order.
    A precision or recall with a zero denominator is 0 (scikit-learn's default); a class
    neither true nor predicted in the window gets null and stays out of the macro averages
    (as scikit-learn's, over the labels present), so a one-class window is not halved.
    """
    index = {name: i for i, name in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for truth, pred in zip(y_true, y_pred, strict=True):
        if truth in index and pred in index:
            matrix[index[truth], index[pred]] += 1
    total = int(matrix.sum())
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    actual = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = (predicted + actual) > 0

    per_class = _per_class(classes, present)
    macro = _macro(present, total)
    return {
        "n": total,
        "accuracy": float(tp.sum() / total) if total else None,
        "precision": per_class(precision),
        "recall": per_class(recall),
        "f1": per_class(f1),
        "support": {c: int(v) for c, v in zip(classes, actual, strict=True)},
        "precision_macro": macro(precision),
        "recall_macro": macro(recall),
        "f1_macro": macro(f1),
        "confusion_matrix": {
            "classes": list(classes),
            "rows": "true",
            "columns": "predicted",
            "matrix": matrix.tolist(),
        },
    }
