"""Classification metrics, computed the same way for PyTorch (evaluate) and ONNX (export)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, per-class and macro precision/recall/F1, ROC AUC and log loss.

    For two classes, ROC AUC scores the second class (`classes[1]`) as positive; with
    more, it is the one-vs-rest macro average.
    """
    predicted = probs.argmax(1)
    indices = list(range(len(classes)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=0
    )
    if len(classes) == 2:
        auc = skm.roc_auc_score(labels, probs[:, 1]) if len(set(labels)) == 2 else float("nan")
    else:
        auc = skm.roc_auc_score(labels, probs, multi_class="ovr", labels=indices)
    return {
        "accuracy": round(float(skm.accuracy_score(labels, predicted)), 6),
        "precision_macro": round(float(precision.mean()), 6),
        "recall_macro": round(float(recall.mean()), 6),
        "f1_macro": round(float(f1.mean()), 6),
        "roc_auc": round(float(auc), 6),
        "log_loss": round(float(skm.log_loss(labels, np.clip(probs, 1e-7, 1), labels=indices)), 6),
        "n": len(labels),
        "per_class": {
            name: {
                "precision": round(float(precision[i]), 6),
                "recall": round(float(recall[i]), 6),
                "f1": round(float(f1[i]), 6),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
    }
