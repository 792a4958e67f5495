"""Test-split metrics for evaluate (PyTorch) and export (ONNX): the live report's label
metrics (contracts/classification.py, the one implementation of precision, recall and
F1) plus the two that need probabilities, ROC AUC and log loss."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from contracts.classification import classification_metrics as label_metrics


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, per-class and macro precision/recall/F1, ROC AUC and log loss.

    For two classes, ROC AUC scores the second class (`classes[1]`) as positive; with
    more, it is the one-vs-rest macro average.
    """
    names = np.asarray(classes)
    counts = label_metrics(names[labels], names[probs.argmax(1)], classes)
    indices = list(range(len(classes)))
    if len(classes) == 2:
        auc = skm.roc_auc_score(labels, probs[:, 1]) if len(set(labels)) == 2 else float("nan")
    else:
        auc = skm.roc_auc_score(labels, probs, multi_class="ovr", labels=indices)

    def rounded(value: float | None) -> float:
        return round(float(value or 0.0), 6)

    return {
        "accuracy": rounded(counts["accuracy"]),
        "precision_macro": rounded(counts["precision_macro"]),
        "recall_macro": rounded(counts["recall_macro"]),
        "f1_macro": rounded(counts["f1_macro"]),
        "roc_auc": round(float(auc), 6),
        "log_loss": round(float(skm.log_loss(labels, np.clip(probs, 1e-7, 1), labels=indices)), 6),
        "n": len(labels),
        "per_class": {
            name: {
                "precision": rounded(counts["precision"][name]),
                "recall": rounded(counts["recall"][name]),
                "f1": rounded(counts["f1"][name]),
                "support": counts["support"][name],
            }
            for name in classes
        },
    }
