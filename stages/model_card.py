"""MODEL_CARD.md: what a person should know before using the bundle, written by export.

Everything on it comes from the pipeline's own outputs (the served graph's test
predictions, metrics/prepare.json, metrics/review_labels.json, the manifest), and
nothing on it changes between identical runs (no timestamps), so the bundle's bytes stay
a function of its inputs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from contracts.bundle import BundleManifest
from stages import paired_stats

CARD_FILE = "MODEL_CARD.md"


def test_names(manifest_csv: Path, count: int, split: str = "test") -> list[str]:
    """Each photo's file (prepare's manifest), by its index in the split (test by default)."""
    names = [f"{split} #{i}" for i in range(count)]
    if manifest_csv.is_file():
        with manifest_csv.open() as rows:
            for r in csv.DictReader(rows):
                if r["split"] == split and int(r["index"]) < count:
                    names[int(r["index"])] = r["file"]
    return names


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def per_class_lines(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> list[str]:
    """Recall and precision per class with Wilson 95 % intervals."""
    predicted = probs.argmax(1)
    lines = [
        "| class | photos | recall (95 % Wilson) | precision (95 % Wilson) |",
        "|---|---|---|---|",
    ]
    for i, name in enumerate(classes):
        truth, said = labels == i, predicted == i
        hit = int((truth & said).sum())
        rec = paired_stats.wilson(hit, int(truth.sum()))
        pre = paired_stats.wilson(hit, int(said.sum()))
        recall = hit / max(1, int(truth.sum()))
        precision = hit / max(1, int(said.sum()))
        lines.append(
            f"| {name} | {int(truth.sum())} | {recall:.4f} [{rec.low:.4f}, {rec.high:.4f}] "
            f"| {precision:.4f} [{pre.low:.4f}, {pre.high:.4f}] |"
        )
    return lines


def failure_lines(
    probs: np.ndarray, labels: np.ndarray, classes: list[str], names: list[str], limit: int
) -> list[str]:
    """The most confidently wrong test photos (the evaluate gallery's, through this graph)."""
    wrong = np.flatnonzero(probs.argmax(1) != labels)
    worst = wrong[np.argsort(-probs[wrong].max(1), kind="stable")][:limit]
    if not len(worst):
        return ["- no test photo is misclassified."]
    return [
        f"- `{names[i]}`: labelled {classes[labels[i]]}, answered "
        f"{classes[probs[i].argmax()]} at {probs[i].max():.0%}"
        for i in worst
    ]


def environment_lines(manifest: BundleManifest) -> list[str]:
    env = manifest.environment.train or manifest.environment.export
    if env is None:
        return ["- not recorded"]
    return [
        f"- Python {env.python}, torch {env.torch}, ONNX Runtime {env.onnxruntime}, "
        f"NumPy {env.numpy}; requirements sha256 {env.requirements_sha256[:12]}",
        f"- CPU {env.cpu_model} ({', '.join(env.cpu_flags) or 'no listed instruction sets'}),"
        f" {env.threads} threads, training precision {env.precision}",
    ]


def intended_use(classes: list[str]) -> list[str]:
    return [
        "## Intended use",
        f"Says whether a photograph shows a {' or a '.join(classes)}. One animal of these "
        "classes per photo, as in the training data (pet photos). Not for other animals, "
        "people, or decisions about an animal's welfare or ownership.",
        "",
    ]


def calibration_lines(probs: np.ndarray, labels: np.ndarray) -> list[str]:
    ece = paired_stats.expected_calibration_error(probs, labels)
    return [
        "## Calibration",
        f"Expected calibration error {ece:.4f} (15 equal-width confidence bins); "
        f"log loss {paired_stats.log_loss(probs, labels):.4f}.",
        "",
    ]


def render(
    manifest: BundleManifest,
    probs: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    metrics_dir: Path,
) -> str:
    """The card's markdown."""
    split = read_json(metrics_dir / "prepare.json").get("split", {})
    review = read_json(metrics_dir / "review_labels.json")
    sizes = ", ".join(f"{k} {v.get('total', v)}" for k, v in split.items()) or "not recorded"
    classes = manifest.classes
    return "\n".join(
        [
            f"# Model card: {manifest.name} {manifest.version}",
            "",
            *intended_use(classes),
            "## Model",
            f"- architecture {manifest.architecture}, {manifest.precision} ONNX graph, input "
            f"{manifest.size}x{manifest.size} RGB in [0, 1], test-time flip averaging {manifest.tta}",
            f"- data version (data/raw.dvc md5) {manifest.data_version}; git revision "
            f"{manifest.git_revision}; MLflow run {manifest.mlflow_run_id or 'none'}",
            f"- split sizes: {sizes}",
            "",
            "## Figures on the test split (the served graph)",
            f"Accuracy {float((probs.argmax(1) == labels).mean()):.4f} on {len(labels)} photos.",
            "",
            *per_class_lines(probs, labels, classes),
            "",
            *calibration_lines(probs, labels),
            "## Trained in",
            *environment_lines(manifest),
            "",
            "## Known failure modes",
            "The most confidently wrong test photos:",
            *failure_lines(probs, labels, classes, names, 8),
            "",
            f"The label review disputes {review.get('disputed', 'an unknown number of')} of "
            f"{review.get('photos', 'the')} photos (metrics/review_labels.json): some test "
            "labels may be wrong, so a few points of error may be the labels'.",
            "",
            "## What the model does not know",
            f"It always answers one of {classes}: a photo with neither animal, or with both, "
            "still gets a label, often with high confidence. The service's out-of-distribution "
            "score and flag say when not to trust the label; nothing in training taught the "
            "model to refuse.",
            "",
        ]
    )


def write_card(out: Path, text: str) -> Path:
    path = out / CARD_FILE
    path.write_text(text)
    return path
