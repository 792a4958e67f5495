"""Score a chunk of inputs with the bundle: the image contract, then ONNX Runtime.

Each worker process loads the verified bundle once (`init_worker`) and scores whole chunks,
so decoding and inference of one chunk run in one process and the pool spreads chunks
over the cores. A file that cannot be read or decoded becomes a row with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from batch import sources
from contracts import imaging
from contracts.bundle import BundleManifest
from contracts.ood import OodScorer


@dataclass(frozen=True)
class Row:
    """One scored (or refused) file: what the output writes."""

    file: str
    label: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    ood_score: float | None = None
    ood_flag: bool | None = None
    model_version: str = ""
    error: str | None = None  # the image contract's reason (or read_failed)
    detail: str | None = None


class Scorer:
    """The bundle in ONNX Runtime, plus its OOD scorer when the bundle carries one."""

    def __init__(self, model_dir: Path, threads: int = 1, endpoint_url: str | None = None):
        self.manifest = BundleManifest.read(model_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        model_file = self.manifest.verified_model_file(model_dir)
        self.session = ort.InferenceSession(str(model_file), options, ["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.ood = _ood_scorer(model_dir, self.manifest)
        self.endpoint_url = endpoint_url
        self._s3: Any = None

    def _read(self, name: str) -> bytes:
        if name.startswith("s3://") and self._s3 is None:
            self._s3 = sources.s3_client(self.endpoint_url)
        return sources.read_bytes(name, imaging.DEFAULT_LIMITS.max_bytes, client=self._s3)

    def _decode(self, name: str) -> np.ndarray | Row:
        try:
            return imaging.load(self._read(name), self.manifest.size)
        except imaging.ImageError as exc:
            return Row(name, model_version=self.manifest.version, error=exc.reason,
                       detail=exc.message)  # fmt: skip
        except Exception as exc:  # unreadable file or object: a row, never a crash
            return Row(name, model_version=self.manifest.version, error="read_failed",
                       detail=f"{type(exc).__name__}: {exc}")  # fmt: skip

    def score(self, names: list[str]) -> list[Row]:
        """Rows for `names`, in order: decoded ones scored in one batch, others refused."""
        decoded = [self._decode(name) for name in names]
        good = [i for i, d in enumerate(decoded) if isinstance(d, np.ndarray)]
        rows: list[Row] = [
            d if isinstance(d, Row) else Row(n) for n, d in zip(names, decoded, strict=True)
        ]
        if not good:
            return rows
        batch = imaging.to_batch([decoded[i] for i in good])
        feed = {self.session.get_inputs()[0].name: batch}
        out = dict(zip(self.outputs, self.session.run(None, feed), strict=True))
        probs = np.asarray(out[self.outputs[0]], dtype=np.float64)
        ood = self._ood(out)
        classes = self.manifest.classes
        for j, i in enumerate(good):
            k = int(np.argmax(probs[j]))
            rows[i] = Row(
                names[i], classes[k], float(probs[j, k]),
                {c: float(p) for c, p in zip(classes, probs[j], strict=True)},
                None if ood is None else float(ood[0][j]),
                None if ood is None else bool(ood[1][j]),
                self.manifest.version,
            )  # fmt: skip
        return rows

    def _ood(self, out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
        if self.ood is None or "features" not in out:
            return None
        scores = np.asarray(self.ood.score(out["features"]))
        return scores, np.asarray(self.ood.flag(scores))


def _ood_scorer(model_dir: Path, manifest: BundleManifest) -> OodScorer | None:
    """The bundle's OOD scorer, the service's own; None when the bundle carries no OOD
    reference (the OOD columns stay empty)."""
    return OodScorer.from_bundle(model_dir, manifest)


_SCORER: Scorer | None = None


def init_worker(model_dir: str, threads: int, endpoint_url: str | None) -> None:
    """Pool initializer: one Scorer per process."""
    global _SCORER
    _SCORER = Scorer(Path(model_dir), threads, endpoint_url)


def score_chunk(names: list[str]) -> list[Row]:
    assert _SCORER is not None, "init_worker was not run"
    return _SCORER.score(names)
