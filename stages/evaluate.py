"""Stage 3: the best checkpoint on the held-out test split -> metrics, plot data, figures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm
from tqdm import tqdm

from contracts.calibration import BINS, expected_calibration_error, reliability
from stages import gallery
from stages.allocator import reuse_freed_memory
from stages.classification_metrics import classification_metrics
from stages.lightning_module import Classifier, load_classifier
from stages.models import fold_batch_norms
from stages.params import Paths, load_params
from stages.tracking import resume_run


@torch.inference_mode()
def predict(model: Classifier, images: np.ndarray, batch_size: int, mirror: bool) -> np.ndarray:
    """Class probabilities for uint8 [N, H, W, 3] images, or for their mirror images."""
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc="evaluate: predicting", unit="batch"):
        batch = torch.from_numpy(np.array(images[start : start + batch_size])).permute(0, 3, 1, 2)
        if mirror:
            batch = batch.flip(3)
        chunks.append(model(batch).softmax(1).numpy())
    return np.concatenate(chunks) if chunks else np.empty((0, len(model.hparams.classes)))


def score(
    model: Classifier, images: np.ndarray, batch_size: int, tta: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(plain probabilities, the reported ones): with TTA, averaged with the mirror image."""
    plain = predict(model, images, batch_size, mirror=False)
    if not tta:
        return plain, plain
    return plain, (plain + predict(model, images, batch_size, mirror=True)) / 2


@dataclass(frozen=True)
class FiledTestSplit:
    """The test split as it was filed, before the reviewed label fixes (stages.label_fixes).

    `accuracy` in metrics/evaluate.json scores the corrected labels of the kept photos;
    this scores the same model against the labels as filed, over the kept photos plus
    the photos the review dropped, so a cleaned metric is never mistaken for a better model.
    """

    labels: np.ndarray  # corrected labels of the kept photos
    original: np.ndarray  # their labels as filed
    dropped_images: np.ndarray  # photos the review dropped from the test split
    dropped_labels: np.ndarray  # their labels as filed

    @classmethod
    def load(cls, paths: Paths, labels: np.ndarray, shape: tuple[int, ...]) -> FiledTestSplit:
        """From prepare's outputs; data prepared before the review counts as unreviewed."""
        if not paths.split_original_labels("test").exists():
            return cls(labels, labels, np.empty((0, *shape), np.uint8), np.empty(0, np.int64))
        return cls(
            labels,
            np.load(paths.split_original_labels("test")),
            np.load(paths.dropped_images("test"), mmap_mode="r"),
            np.load(paths.dropped_labels("test")),
        )

    def accuracy(self, probs: np.ndarray, dropped_probs: np.ndarray) -> dict[str, float | int]:
        """Accuracy on the filed labels, beside how many test labels the review touched."""
        correct = (probs.argmax(1) == self.original).sum()
        if len(self.dropped_labels):
            correct += (dropped_probs.argmax(1) == self.dropped_labels).sum()
        n = len(self.original) + len(self.dropped_labels)
        return {
            "accuracy_original_labels": round(float(correct) / n, 6),
            "n_original_labels": n,
            "test_labels_corrected": int((self.original != self.labels).sum()),
            "test_photos_dropped": len(self.dropped_labels),
        }


def curve_tables(labels: np.ndarray, probs: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROC and precision-recall points for the positive (second) class."""
    fpr, tpr, roc_thr = skm.roc_curve(labels, probs[:, 1])
    precision, recall, pr_thr = skm.precision_recall_curve(labels, probs[:, 1])
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.clip(roc_thr, 0, 1)})
    pr = pd.DataFrame({"recall": recall[:-1], "precision": precision[:-1], "threshold": pr_thr})
    return roc.round(6), pr.round(6)


def confidently_wrong(labels: np.ndarray, probs: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the misclassified photos, most confident first."""
    wrong = np.flatnonzero(probs.argmax(1) != labels)
    return wrong[np.argsort(-probs[wrong].max(1))][:limit]


def draw_gallery(
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    path: Path,
    limit: int,
) -> int:
    """The most confidently wrong test photos, captioned with truth and answer."""
    picks = confidently_wrong(labels, probs, limit)
    captions = [
        f"true {classes[labels[i]]}\nsaid {classes[probs[i].argmax()]} ({probs[i].max():.0%})"
        for i in picks
    ]
    gallery.draw_gallery(
        [images[i] for i in picks],
        captions,
        "Most confidently wrong test photos",
        "no misclassified test photos",
        path,
    )
    return len(picks)


def draw_figures(labels: np.ndarray, probs: np.ndarray, classes: list[str], out: Path) -> None:
    """Confusion matrix, ROC and PR figures, for the MLflow run."""
    fig, ax = plt.subplots(figsize=(4, 4))
    skm.ConfusionMatrixDisplay.from_predictions(
        labels, probs.argmax(1), display_labels=classes, ax=ax, colorbar=False
    )
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=90)
    plt.close(fig)
    for name, display in (("roc", skm.RocCurveDisplay), ("pr", skm.PrecisionRecallDisplay)):
        fig, ax = plt.subplots(figsize=(4, 4))
        display.from_predictions(labels, probs[:, 1], ax=ax, name=f"{classes[1]} vs {classes[0]}")
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=90)
        plt.close(fig)


def write_calibration(labels: np.ndarray, probs: np.ndarray, plots: Path, figures: Path) -> dict:
    """The reliability diagram (DVC plot data and a figure) and the ECE, 15 equal-width bins."""
    table = pd.DataFrame([b.__dict__ for b in reliability(probs, labels, BINS)])
    table["bin"] = ((table.low + table.high) / 2).round(4)
    table.round(6).to_csv(plots / "reliability.csv", index=False)
    filled = table[table["count"] > 0]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    ax.bar(filled.bin, filled.accuracy, width=1 / BINS, alpha=0.6, edgecolor="k", label="accuracy")
    ax.plot(filled.confidence, filled.accuracy, "o-", color="C3", label="mean confidence")
    ax.set(xlabel="confidence (top class)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ece = expected_calibration_error(probs, labels, BINS)
    ax.set_title(f"Reliability (test), ECE {ece:.4f}, {BINS} bins")
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(figures / "reliability.png", dpi=90)
    plt.close(fig)
    return {"ece": round(ece, 6), "ece_bins": BINS}


def main() -> None:
    reuse_freed_memory()
    params = load_params()
    cfg, paths = params.evaluate, Paths.from_params(params)
    PLOTS = paths.plots / "evaluate"
    model = load_classifier(paths.checkpoint)
    fold_batch_norms(model.inference_net)  # the same function, a fifth faster on the CPU
    classes: list[str] = list(model.hparams.classes)
    images = np.load(paths.split_images("test"), mmap_mode="r")
    labels = np.load(paths.split_labels("test"))
    if len(labels) == 0:
        raise SystemExit("The test split is empty: add photos or raise prepare.split.test.")

    plain, probs = score(model, images, cfg.batch_size, bool(cfg.tta))
    metrics = classification_metrics(labels, probs, classes)
    metrics["tta"] = bool(cfg.tta)
    metrics["accuracy_without_tta"] = classification_metrics(labels, plain, classes)["accuracy"]
    filed = FiledTestSplit.load(paths, labels, images.shape[1:])
    dropped_probs = score(model, filed.dropped_images, cfg.batch_size, bool(cfg.tta))[1]
    metrics.update(filed.accuracy(probs, dropped_probs))

    PLOTS.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"actual": [classes[i] for i in labels], "predicted": [classes[i] for i in probs.argmax(1)]}
    ).to_csv(PLOTS / "confusion.csv", index=False)
    roc, pr = curve_tables(labels, probs)
    roc.to_csv(PLOTS / "roc.csv", index=False)
    pr.to_csv(PLOTS / "pr.csv", index=False)
    figures = PLOTS / "figures"
    figures.mkdir(exist_ok=True)
    draw_gallery(images, labels, probs, classes, figures / "misclassified.png", cfg.gallery_size)
    draw_figures(labels, probs, classes, figures)
    metrics.update(write_calibration(labels, probs, PLOTS, figures))
    report = skm.classification_report(labels, probs.argmax(1), target_names=classes, digits=4)
    (paths.metrics / "evaluate.json").write_text(json.dumps(metrics, indent=2) + "\n")

    with resume_run(paths.run_file):
        mlflow.log_metrics(
            {f"test_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        )
        mlflow.log_artifacts(str(figures), "evaluate")
        mlflow.log_text(report, "evaluate/classification_report.txt")
    print(
        f"evaluate: test accuracy {metrics['accuracy']:.4f} on the reviewed labels, "
        f"{metrics['accuracy_original_labels']:.4f} on the labels as filed "
        f"(without TTA {metrics['accuracy_without_tta']:.4f}), ROC AUC {metrics['roc_auc']:.4f}"
    )
    print(report)


if __name__ == "__main__":
    main()
