"""A real model bundle in seconds, for the fast tier of service tests.

The pipeline fixture (tests/conftest.py) runs every stage and takes minutes; the service
does not care how good the model is, only that the bundle follows the contract. This
trains the project's own small CNN for a few seconds on the committed photographs and
writes the bundle with the export stage's own code (`Served`, `export_onnx`,
`reference_statistics`) and the typed manifest, so what the service loads is what export
writes, only smaller and less accurate.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from contracts.bundle import BundleManifest, InputSpec, OutputSpec
from contracts.imaging import load, to_batch
from stages.export import Served, export_onnx, reference_statistics
from stages.models import small_cnn
from tests.helpers.photos import LABELS, sample_photos

SIZE = 64  # pixels: a few milliseconds a photo, still learns something in seconds
EPOCHS = 8
OPSET = 18


def labelled_photos(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every committed sample photo through the image contract, with its class index."""
    images, labels = [], []
    for index, label in enumerate(LABELS):
        for path in sample_photos(label):
            images.append(load(path.read_bytes(), size))
            labels.append(index)
    return np.stack(images), np.asarray(labels)


def trained_net(images: np.ndarray, labels: np.ndarray, seed: int = 0) -> torch.nn.Module:
    """The small CNN, narrowed, after a few seconds of Adam: better than chance."""
    torch.manual_seed(seed)
    net = small_cnn(len(LABELS), channels=(8, 16, 32), convs_per_stage=(1, 1, 1), dropout=0.0)
    batch = torch.from_numpy(to_batch(images))
    target = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(batch), generator=order).split(32):
            optimizer.zero_grad()
            F.cross_entropy(net(batch[idx]), target[idx]).backward()
            optimizer.step()
    return net.eval()


def build_tiny_bundle(out: Path, seed: int = 0) -> Path:
    """Train, export and describe a tiny model in `out`; returns `out`.

    Another `seed` gives another model of the same contract (a challenger for the shadow).
    """
    out.mkdir(parents=True, exist_ok=True)
    images, labels = labelled_photos(SIZE)
    served = Served(trained_net(images, labels, seed), tta=False).eval()
    onnx_path = out / "model.onnx"
    export_onnx(served, SIZE, onnx_path, OPSET)
    with torch.inference_mode():
        probs = served(torch.from_numpy(to_batch(images))).numpy()
    accuracy = round(float((probs.argmax(1) == labels).mean()), 6)
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    BundleManifest(
        name="cats-dogs-tiny",
        version=digest[:12],
        sha256=digest,
        architecture="small_cnn",
        classes=list(LABELS),
        input=InputSpec(
            shape=["N", 3, SIZE, SIZE], size=SIZE, preprocessing="contracts.imaging.load"
        ),
        output=OutputSpec(shape=["N", len(LABELS)]),
        accuracy={"fp32": accuracy},
        metrics={"accuracy": accuracy},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        reference=reference_statistics(probs, images, list(LABELS)),
    ).write(out)
    return out
