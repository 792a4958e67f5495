"""The model bundle: `model.json` plus `model.onnx`, run with ONNX Runtime only.

The service trusts nothing but the bundle's manifest (contracts/bundle.py, the contract):
classes, input size and version come from `model.json`, and the ONNX file must hash to
the manifest's `sha256`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from contracts.bundle import BundleError, BundleManifest

__all__ = ["BundleError", "Model"]


class Model:
    """An ONNX Runtime session over a verified bundle; `predict` returns probabilities."""

    def __init__(self, model_dir: Path, threads: int) -> None:
        self.manifest = BundleManifest.read(model_dir)
        model_file = self.manifest.verified_model_file(model_dir)
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
        return np.asarray(out, dtype=np.float32)
