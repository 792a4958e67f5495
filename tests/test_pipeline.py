"""End to end: `dvc repro` of all four stages on a small sample, and what it leaves."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime as ort
import pandas as pd
import torch

from serving.imaging import to_batch


def test_every_declared_output_exists(pipeline_repo: Path) -> None:
    for path in [
        "data/prepared/manifest.csv",
        "data/prepared/train_images.npy",
        "models/checkpoints/best.ckpt",
        "metrics/prepare.json",
        "metrics/train.json",
        "metrics/evaluate.json",
        "metrics/export.json",
        "plots/train/history.csv",
        "plots/evaluate/confusion.csv",
        "plots/evaluate/roc.csv",
        "plots/evaluate/pr.csv",
        "plots/evaluate/figures/misclassified.png",
        "models/export/model.onnx",
        "models/export/model.json",
        "dvc.lock",
    ]:
        assert (pipeline_repo / path).is_file(), path
