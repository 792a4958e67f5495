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
from contracts.ood import FEATURES_OUTPUT, OodScorer
from serving.cpu_stages import native_threads

__all__ = ["BundleError", "Model"]


class Model:
    """An ONNX Runtime session over a verified bundle; `predict` returns probabilities.

    `scored` also returns each photo's out-of-distribution score (contracts/ood.py) as
    one more column, so the micro-batcher slices one array per job; NaN when the bundle
    carries no OOD reference.
    """

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
        before = native_threads()
        self.session = ort.InferenceSession(
            str(model_file), options, providers=["CPUExecutionProvider"]
        )
        # ONNX Runtime's intra-op pool: its CPU time is inference (serving/cpu_stages.py).
        self.pool_threads = native_threads() - before
        self.input_name = self.session.get_inputs()[0].name
        self.classes = self.manifest.classes
        self.size = self.manifest.size
        self.ood = OodScorer.from_bundle(model_dir, self.manifest)
        self.output_name = self.session.get_outputs()[0].name  # probabilities come first
        if self.ood is not None and FEATURES_OUTPUT not in self._output_names():
            raise BundleError(
                f"model.json has an OOD reference; the graph has no {FEATURES_OUTPUT!r}."
            )

    def _output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 3, H, W] in [0, 1] -> probabilities [N, C] (float32)."""
        (out,) = self.session.run([self.output_name], {self.input_name: batch})
        return np.asarray(out, dtype=np.float32)

    def scored(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 3, H, W] -> [N, C + 1]: probabilities, then the OOD score (or NaN)."""
        if self.ood is None:
            probs = self.predict(batch)
            return np.concatenate([probs, np.full((len(probs), 1), np.nan, np.float32)], 1)
        probs, features = self.session.run(
            [self.output_name, FEATURES_OUTPUT], {self.input_name: batch}
        )
        scores = self.ood.score(features).astype(np.float32)[:, None]
        return np.concatenate([np.asarray(probs, dtype=np.float32), scores], 1)

    def ood_flags(self, scores: np.ndarray) -> list[bool | None]:
        """The flag per score (None without an OOD reference)."""
        if self.ood is None:
            return [None] * len(scores)
        return [bool(f) for f in self.ood.flag(scores)]
