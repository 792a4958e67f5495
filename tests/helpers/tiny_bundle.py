"""A real model bundle in seconds, for the fast tier of service tests.

The pipeline fixture (tests/conftest.py) runs every stage and takes minutes; the service
does not care how good the model is, only that the bundle follows the contract. This
trains the project's own small CNN for a few seconds on the committed photographs and
writes the bundle with the export stage's own code (`Served`, `export_onnx`,
`reference_statistics`, the model card) and the typed manifest, so what the service loads
is what export writes, only smaller and less accurate. It is trained and scored on the
same committed photos, and its card says so (split sizes train = test).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from contracts.bundle import BundleManifest, Environments, InputSpec, OutputSpec
from contracts.imaging import load, to_batch
from stages.calibrate import calibration_record, fitted_temperature, write_ood_reference
from stages.export import Served, bundle_version, export_onnx, reference_statistics
from stages.fingerprint import environment_fingerprint
from stages.model_card import render, write_card
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


def photo_names() -> list[str]:
    """Each committed sample photo as <class>/<file>, in labelled_photos' order."""
    return [f"{label}/{path.name}" for label in LABELS for path in sample_photos(label)]


def data_version() -> str:
    """An md5 of the committed photos' bytes, as data/raw.dvc's md5 names the real data."""
    digest = hashlib.md5()
    for label in LABELS:
        for path in sample_photos(label):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def split_metrics(labels: np.ndarray) -> dict:
    """prepare.json's `split` for the tiny bundle: trained and tested on the same photos."""
    counts = {name: int((labels == i).sum()) for i, name in enumerate(LABELS)}
    return {"split": {s: {**counts, "total": len(labels)} for s in ("train", "test")}}


def build_tiny_bundle(out: Path, seed: int = 0) -> Path:
    """Train, export and describe a tiny model in `out`; returns `out`.

    Another `seed` gives another model of the same contract (a challenger for the shadow).
    """
    images, labels = labelled_photos(SIZE)
    held_out = held_out_photos(labels)
    return export_tiny(trained_net(images[~held_out], labels[~held_out], seed), out)


def held_out_photos(labels: np.ndarray) -> np.ndarray:
    """Every third photo: what the temperature and the OOD threshold are fitted on."""
    return np.arange(len(labels)) % 3 == 0


def export_tiny(net: torch.nn.Module, out: Path) -> Path:
    """model.onnx, model.json and MODEL_CARD.md for a trained net, by export's own code.

    Like export: a temperature fitted on held-out photos, the OOD reference from the rest
    (the "train" photos), its threshold from the held-out.
    """
    out.mkdir(parents=True, exist_ok=True)
    images, labels = labelled_photos(SIZE)
    held_out = held_out_photos(labels)
    temperature = fitted_temperature(net, images[held_out], labels[held_out])
    served = Served(net, tta=False, temperature=temperature).eval()
    onnx_path = out / "model.onnx"
    export_onnx(served, SIZE, onnx_path, OPSET)
    with torch.inference_mode():
        probs = served(torch.from_numpy(to_batch(images)))[0].numpy()
    accuracy = round(float((probs.argmax(1) == labels).mean()), 6)
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    ood = write_ood_reference(
        OmegaConf.create(
            {"method": "knn", "k": 3, "reference_photos": 1000, "seed": 0, "pass_rate": 0.95}
        ),
        onnx_path,
        (images[~held_out], labels[~held_out]),
        images[held_out],
    ).spec
    manifest = BundleManifest(
        name="cats-dogs-tiny",
        version=bundle_version(digest, ood),
        sha256=digest,
        architecture="small_cnn",
        classes=list(LABELS),
        input=InputSpec(
            shape=["N", 3, SIZE, SIZE], size=SIZE, preprocessing="contracts.imaging.load"
        ),
        output=OutputSpec(shape=["N", len(LABELS)]),
        accuracy={"fp32": accuracy},
        metrics={"accuracy": accuracy},
        data_version=data_version(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        reference=reference_statistics(probs, images, list(LABELS)),
        calibration=calibration_record(temperature, int(held_out.sum()), probs, labels),
        ood=ood,
        environment=Environments(train=environment_fingerprint("32-true")),
    )
    manifest.write(out)
    with tempfile.TemporaryDirectory() as metrics:
        (Path(metrics) / "prepare.json").write_text(json.dumps(split_metrics(labels)))
        write_card(out, render(manifest, probs, labels, photo_names(), Path(metrics)))
    return out
