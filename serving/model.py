"""The model bundle: `model.json` plus `model.onnx`, run with ONNX Runtime only.

The service trusts nothing but the bundle's manifest: classes, input size and version
come from `model.json`, and the ONNX file must hash to the manifest's `sha256`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort


class BundleError(RuntimeError):
    """The bundle is missing, inconsistent, or its model file was altered."""


@dataclass(frozen=True)
class Manifest:
    """The parts of `model.json` the service relies on, plus the raw document."""

    name: str
    version: str
    classes: list[str]
    size: int
    input_name: str
    output_kind: str
    raw: dict[str, Any]

    @classmethod
    def read(cls, model_dir: Path) -> Manifest:
        path = model_dir / "model.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise BundleError(f"No model manifest at {path}.") from exc
        except json.JSONDecodeError as exc:
            raise BundleError(f"{path} is not valid JSON: {exc}") from exc
        try:
            return cls(
                name=str(raw["name"]),
                version=str(raw["version"]),
                classes=[str(c) for c in raw["classes"]],
                size=int(raw["input"]["size"]),
                input_name=str(raw["input"].get("name", "image")),
                output_kind=str(raw.get("output", {}).get("kind", "probabilities")),
                raw=raw,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{path} lacks a required field: {exc}") from exc


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class Model:
    """An ONNX Runtime session over a verified bundle; `predict` returns probabilities."""

    def __init__(self, model_dir: Path, threads: int) -> None:
        self.manifest = Manifest.read(model_dir)
        model_file = model_dir / self.manifest.raw.get("model_file", "model.onnx")
        if not model_file.is_file():
            raise BundleError(f"No model file at {model_file}.")
        expected = str(self.manifest.raw.get("sha256", ""))
        actual = file_sha256(model_file)
        if actual != expected:
            raise BundleError(
                f"{model_file} has SHA-256 {actual[:12]}…, the manifest says {expected[:12]}…;"
                " refusing a model file that is not the exported one."
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn the cores that decoding and HTTP need between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(model_file), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.classes = self.manifest.classes
        self.size = self.manifest.size

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 3, H, W] in [0, 1] -> probabilities [N, C] (float32)."""
        (out,) = self.session.run(None, {self.input_name: batch})
        if self.manifest.output_kind != "probabilities":
            out = softmax(out)
        return np.asarray(out, dtype=np.float32)
