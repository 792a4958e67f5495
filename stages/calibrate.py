"""Export's two additions to the served graph: a temperature and an OOD reference.

- The temperature is fitted on the validation split's logits (never the test split) and
  goes into the graph (`Served`), so the service's probabilities are calibrated as is.
- The OOD reference (contracts/ood.py) is fitted on the served graph's `features` for the
  TRAIN split, its threshold on the validation split's, so the int8 graph is described by
  its own features. The reference file is hashed in model.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from contracts.bundle import Calibration, OodSpec, file_sha256
from contracts.calibration import (
    BINS,
    expected_calibration_error,
    fit_temperature,
    log_loss,
)
from contracts.imaging import to_batch
from contracts.ood import (
    FEATURES_OUTPUT,
    REFERENCE_FILE,
    OodScorer,
    fit_mahalanobis,
    save_reference,
    threshold_for,
)
from stages.models import FeaturesAndLogits
from stages.quantize import session


@torch.inference_mode()
def logits_of(net: torch.nn.Module, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """The network's logits for uint8 [N, H, W, 3] photos (what temperature scaling fits)."""
    model = FeaturesAndLogits(net).eval()
    chunks = [
        model(torch.from_numpy(to_batch(np.asarray(images[start : start + batch]))))[1].numpy()
        for start in tqdm(range(0, len(images), batch), desc="export: logits on val split")
    ]
    return np.concatenate(chunks)


def graph_outputs(path: Path, images: np.ndarray, label: str, batch: int = 32):
    """The served graph's (probabilities, features) for uint8 photos, on every core."""
    graph = session(path)
    probs, features = [], []
    for start in tqdm(range(0, len(images), batch), desc=f"export: features of {label}"):
        p, f = graph.run(
            ["probabilities", FEATURES_OUTPUT],
            {"image": to_batch(np.asarray(images[start : start + batch]))},
        )
        probs.append(p)
        features.append(f)
    return np.concatenate(probs), np.concatenate(features)


def calibration_record(
    temperature: float, fitted_photos: int, test_probs: np.ndarray, labels: np.ndarray
) -> Calibration:
    """ECE and log loss on the test split before (T = 1) and after, from the served graph.

    The graph returns softmax(z / T); log of it is z / T up to a per-row constant, so
    T * log(p) gives back the uncalibrated logits exactly (softmax ignores the constant).
    """
    scaled = np.log(np.clip(test_probs.astype(np.float64), 1e-300, None))
    raw = scaled * temperature
    raw_probs = np.exp(raw - raw.max(1, keepdims=True))
    raw_probs /= raw_probs.sum(1, keepdims=True)
    return Calibration(
        temperature=round(temperature, 6),
        fitted_photos=fitted_photos,
        bins=BINS,
        ece_before=round(expected_calibration_error(raw_probs, labels), 6),
        ece_after=round(expected_calibration_error(test_probs, labels), 6),
        nll_before=round(log_loss(raw, labels), 6),
        nll_after=round(log_loss(scaled, labels), 6),
    )


def fitted_temperature(net: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    return fit_temperature(logits_of(net, images), labels)


@dataclass(frozen=True)
class OodFit:
    """The written reference and the figures it was fitted from."""

    spec: OodSpec
    val_scores: np.ndarray


def reference_arrays(cfg: DictConfig, features: np.ndarray, labels: np.ndarray) -> dict:
    """The arrays `cfg.method` needs: the sampled train features (k-NN, float16 to keep
    the bundle small) or class means and a whitening matrix (Mahalanobis)."""
    if cfg.method == "knn":
        return {"bank": features.astype(np.float16)}
    if cfg.method == "mahalanobis":
        return fit_mahalanobis(features, labels, int(labels.max()) + 1, int(cfg.components) or None)
    raise SystemExit(f"export.ood.method must be knn or mahalanobis, not {cfg.method!r}")


def write_ood_reference(
    cfg: DictConfig, onnx_path: Path, train: tuple[np.ndarray, np.ndarray], val_images: np.ndarray
) -> OodFit:
    """Fit the reference on the train split's features, the threshold on the val split's."""
    images, labels = train
    if cfg.method == "knn":  # only the sampled photos need the graph
        count = min(int(cfg.reference_photos), len(labels))
        pick = np.sort(np.random.default_rng(int(cfg.seed)).permutation(len(labels))[:count])
        images, labels = images[pick], labels[pick]
    _, features = graph_outputs(onnx_path, images, "train split")
    arrays = reference_arrays(cfg, features, labels)
    path = save_reference(onnx_path.parent / REFERENCE_FILE, arrays)
    scorer = OodScorer(str(cfg.method), arrays, threshold=0.0, k=int(cfg.k))
    val_scores = scorer.score(graph_outputs(onnx_path, val_images, "val split")[1])
    spec = OodSpec(
        method=str(cfg.method),
        file=path.name,
        sha256=file_sha256(path),
        feature_dim=int(features.shape[1]),
        k=int(cfg.k),
        threshold=round(threshold_for(val_scores, float(cfg.pass_rate)), 6),
        pass_rate=float(cfg.pass_rate),
        reference_photos=len(features),
        threshold_photos=len(val_scores),
    )
    return OodFit(spec, val_scores)
