"""End to end: `dvc exp run` of every stage on a small sample, and what it leaves."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
import yaml

from contracts.bundle import OodSpec
from contracts.imaging import load, to_batch
from stages.lightning_module import load_classifier
from tests.conftest import EXPERIMENT_NAME
from tests.helpers.commands import run
from tests.helpers.photos import fullres_photos

DECLARED_FILES = [
    "data/prepared/manifest.csv",
    "data/prepared/train_images.npy",
    "models/checkpoints/best.ckpt",
    "models/checkpoints/mlflow_run.json",
    "metrics/prepare.json",
    "metrics/train.json",
    "metrics/evaluate.json",
    "metrics/export.json",
    "metrics/review_labels.json",
    "plots/review/disputed_labels.csv",
    "plots/review/disputed_labels.png",
    "plots/train/history.csv",
    "plots/evaluate/confusion.csv",
    "plots/evaluate/roc.csv",
    "plots/evaluate/pr.csv",
    "plots/evaluate/reliability.csv",
    "plots/evaluate/figures/reliability.png",
    "plots/evaluate/figures/misclassified.png",
    "plots/evaluate/figures/confusion_matrix.png",
    "models/export/model.onnx",
    "models/export/model.json",
    "dvc.lock",
]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_declared_output_exists(pipeline_repo: Path) -> None:
    missing = [p for p in DECLARED_FILES if not (pipeline_repo / p).is_file()]
    assert not missing
    assert not (pipeline_repo / "models/export/model.onnx.unproven").exists()


def test_params_yaml_holds_the_experiment_overrides(pipeline_repo: Path) -> None:
    params = yaml.safe_load((pipeline_repo / "params.yaml").read_text())
    assert params["prepare"]["image_size"] == 128 and params["trainer"]["max_epochs"] == 3
    shown = run(["dvc", "exp", "show", "--csv"], pipeline_repo).stdout
    assert EXPERIMENT_NAME in shown and "accuracy" in shown


def test_a_second_repro_has_nothing_to_do(pipeline_repo: Path) -> None:
    out = run(["dvc", "repro"], pipeline_repo).stdout
    assert "Running stage" not in out
    assert "up to date" in out


def test_metrics_are_sane(pipeline_repo: Path) -> None:
    prepare = read_json(pipeline_repo / "metrics/prepare.json")
    assert prepare["kept"] == 400 and prepare["skipped"] == 0
    train = read_json(pipeline_repo / "metrics/train.json")
    assert 1 <= train["epochs"] <= 3 and 0.5 < train["val_acc"] <= 1
    history = pd.read_csv(pipeline_repo / "plots/train/history.csv")
    assert list(history["epoch"]) == list(range(train["epochs"]))
    assert history[["train_loss", "val_loss", "train_acc", "val_acc"]].notna().all().all()
    evaluate = read_json(pipeline_repo / "metrics/evaluate.json")
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc"):
        assert 0.7 < evaluate[key] <= 1, key  # a pretrained model beats chance easily
    assert 0 < evaluate["log_loss"] < 1
    assert set(evaluate["per_class"]) == {"cat", "dog"}
    # The reviewed fixes name sample photos outside these 400: the labels as filed are the
    # labels scored, and evaluate says so beside the headline accuracy.
    assert evaluate["accuracy_original_labels"] == evaluate["accuracy"]
    assert evaluate["test_photos_dropped"] == evaluate["test_labels_corrected"] == 0
    assert evaluate["n_original_labels"] == evaluate["n"]
    assert prepare["label_fixes"]["rows_not_found"] == len(prepare["label_fix_rows_not_found"]) > 0
    confusion = pd.read_csv(pipeline_repo / "plots/evaluate/confusion.csv")
    assert len(confusion) == evaluate["n"]
    exported = read_json(pipeline_repo / "metrics/export.json")
    assert exported["onnx_max_abs_diff"] < 1e-4 and exported["precision"] == "int8"
    assert exported["served_test_accuracy"] == exported["int8_test_accuracy"]
    assert exported["int8_ms_per_photo_1_thread"] > 0
    review = read_json(pipeline_repo / "metrics/review_labels.json")
    assert review["photos"] == prepare["kept"] and 0.7 < review["out_of_fold_accuracy"] <= 1
    disputed = pd.read_csv(pipeline_repo / "plots/review/disputed_labels.csv")
    assert len(disputed) == review["disputed"]
    assert (disputed["given_label"] != disputed["predicted_label"]).all()
    assert disputed["confidence"].is_monotonic_decreasing
    assert all((pipeline_repo / f).is_file() for f in disputed["file"])  # paths into data/raw


def test_bundle_manifest_follows_the_contract(bundle_dir: Path, pipeline_repo: Path) -> None:
    manifest = read_json(bundle_dir / "model.json")
    digest = hashlib.sha256((bundle_dir / "model.onnx").read_bytes()).hexdigest()
    ood = hashlib.sha256((bundle_dir / "ood.npz").read_bytes()).hexdigest()
    assert manifest["sha256"] == digest and manifest["ood"]["sha256"] == ood
    # the version covers the graph and the whole OOD description (file hash, k, threshold)
    described = OodSpec.model_validate(manifest["ood"]).model_dump_json()
    assert manifest["version"] == hashlib.sha256(f"{digest}:{described}".encode()).hexdigest()[:12]
    assert manifest["calibration"]["temperature"] > 0 and manifest["calibration"]["bins"] == 15
    assert manifest["classes"] == ["cat", "dog"]
    assert manifest["input"]["size"] == 128 and manifest["output"]["kind"] == "probabilities"
    assert manifest["data_version"] == "untracked"  # the test copy has no data/raw.dvc
    head = run(["git", "rev-parse", "HEAD"], pipeline_repo).stdout.strip()
    assert manifest["git_revision"] == head
    reference = manifest["reference"]
    assert sum(reference["class_shares"].values()) == pytest.approx(1, abs=1e-5)
    assert sum(reference["confidence_histogram"]["counts"]) == reference["n"]
    assert sum(reference["brightness_histogram"]["counts"]) == reference["n"]
    assert 0.7 < manifest["metrics"]["accuracy"] <= 1
    assert manifest["precision"] == "int8" and set(manifest["accuracy"]) == {"fp32", "int8"}
    assert manifest["metrics"]["accuracy"] == pytest.approx(manifest["accuracy"]["int8"])


def test_int8_bundle_follows_pytorch_on_real_photos(
    pipeline_repo: Path, bundle_dir: Path, fullres_photos: list[tuple[Path, str]]
) -> None:
    # The float graph is proven equal to PyTorch (1e-4) inside export; the served int8
    # graph approximates it: same float32 input and output, close probabilities.
    classifier = load_classifier(pipeline_repo / "models/checkpoints/best.ckpt")
    batch = to_batch([load(path.read_bytes(), 128) for path, _ in fullres_photos])
    # The served graph divides the logits by the temperature export fitted on validation.
    temperature = read_json(bundle_dir / "model.json")["calibration"]["temperature"]
    with torch.inference_mode():
        logits = classifier.inference_net(torch.from_numpy(batch))
        expected = (logits / temperature).softmax(1).numpy()
    session = ort.InferenceSession(str(bundle_dir / "model.onnx"))
    actual = session.run(None, {"image": batch})[0]
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    assert np.abs(actual - expected).mean() < 0.1
    assert (actual.argmax(1) == expected.argmax(1)).mean() >= 0.8
    labels = [["cat", "dog"].index(label) for _, label in fullres_photos]
    assert (actual.argmax(1) == labels).mean() >= 0.7  # real uploads, mostly right


def test_mlflow_has_the_run_its_metrics_and_bundle_but_registers_nothing(
    pipeline_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Export logs the bundle and its card to the run; only the promotion gate registers."""
    run_id = read_json(pipeline_repo / "models/checkpoints/mlflow_run.json")["run_id"]
    assert read_json(pipeline_repo / "models/export/model.json")["mlflow_run_id"] == run_id
    with sqlite3.connect(pipeline_repo / "mlflow.db") as db:
        metrics = {
            row[0] for row in db.execute("SELECT key FROM metrics WHERE run_uuid=?", (run_id,))
        }
        params = {
            row[0] for row in db.execute("SELECT key FROM params WHERE run_uuid=?", (run_id,))
        }
        (run_name,) = db.execute("SELECT name FROM runs WHERE run_uuid=?", (run_id,)).fetchone()
        versions = db.execute(
            "SELECT version, run_id FROM model_versions WHERE name='cats-dogs-classifier'"
        ).fetchall()
        tags = dict(
            db.execute(
                "SELECT key, value FROM model_version_tags WHERE name='cats-dogs-classifier'"
            )
        )
    assert {
        "train_loss_epoch",
        "val_acc",
        "test_accuracy",
        "served_test_accuracy",
        "fp32_test_accuracy",
        "lr-AdamW",
    } <= metrics
    assert {"model.name", "optimizer.lr", "trainer.max_epochs"} <= params
    assert run_name == EXPERIMENT_NAME  # runs are named after the DVC experiment
    assert versions == [] and tags == {}  # a candidate is not registered
    monkeypatch.chdir(pipeline_repo)  # the run's artifact location is relative to it
    client = mlflow.MlflowClient(f"sqlite:///{pipeline_repo / 'mlflow.db'}")
    logged = {a.path.rsplit("/", 1)[-1] for a in _all_artifacts(client, run_id)}
    assert {"model.json", "MODEL_CARD.md", "model.onnx"} <= logged


def _all_artifacts(client, run_id: str, path: str | None = None) -> list:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += _all_artifacts(client, run_id, item.path) if item.is_dir else [item]
    return found


def test_dvc_plots_show_renders_every_plot(pipeline_repo: Path, tmp_path: Path) -> None:
    result = run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], pipeline_repo)
    assert "failed to load" not in result.stdout + result.stderr
    page = (tmp_path / "plots" / "index.html").read_text()
    for title in (
        "Loss per epoch",
        "Accuracy per epoch",
        "Confusion matrix",
        "ROC",
        "misclassified",
        "disputed_labels",
    ):
        assert title in page, title


def test_the_bundle_labels_most_full_size_photos_correctly(bundle_dir: Path) -> None:
    """The pipeline's own bundle (three epochs on 240 photos) on the 50 full-size uploads."""
    manifest = json.loads((bundle_dir / "model.json").read_text())
    graph = ort.InferenceSession(str(bundle_dir / "model.onnx"))
    photos = fullres_photos()
    pixels = to_batch([load(path.read_bytes(), manifest["input"]["size"]) for path, _ in photos])
    said = graph.run(None, {"image": pixels})[0].argmax(1)
    correct = sum(
        manifest["classes"][i] == label for i, (_, label) in zip(said, photos, strict=True)
    )
    assert correct / len(photos) >= 0.8, f"only {correct}/{len(photos)} photos labelled right"
