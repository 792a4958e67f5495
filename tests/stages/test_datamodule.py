"""The training data module on real photos: crops per epoch (progressive resizing)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from contracts.imaging import load
from stages.datamodule import PreparedData
from tests.helpers.photos import LABELS, sample_photos

SIZE = 64


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared folder as the prepare stage writes it, from eight committed photos."""
    folder = tmp_path_factory.mktemp("prepared")
    photos = [
        (load(p.read_bytes(), SIZE), i) for i, c in enumerate(LABELS) for p in sample_photos(c, 4)
    ]
    images = np.stack([image for image, _ in photos])
    labels = np.array([label for _, label in photos], dtype=np.int64)
    for split in ("train", "val"):
        np.save(folder / f"{split}_images.npy", images)
        np.save(folder / f"{split}_labels.npy", labels)
    (folder / "meta.json").write_text(json.dumps({"classes": list(LABELS), "image_size": SIZE}))
    return folder


class SizeRecorder(L.LightningModule):
    """A linear model that notes the crop size of every training batch, per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 2)
        self.sizes: dict[int, set[int]] = {}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        self.sizes.setdefault(self.current_epoch, set()).add(images.shape[-1])
        pooled = images.float().mean(dim=(2, 3))
        return torch.nn.functional.cross_entropy(self.head(pooled), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def data(prepared: Path, train_size) -> PreparedData:
    augment = {"crop_scale": [0.7, 1.0], "hflip": 0.5, "color_jitter": 0.0}
    return PreparedData(
        prepared, batch_size=4, num_workers=0, augment=augment, train_size=train_size
    )


@pytest.mark.parametrize(
    ("train_size", "expected"),
    [(None, [SIZE] * 3), (48, [48] * 3), ([32, 48], [32, 48, 48]), ([40, 40, 56], [40, 40, 56])],
)
def test_each_epoch_trains_on_its_crop_size(
    prepared: Path, train_size, expected: list[int]
) -> None:
    module, datamodule = SizeRecorder(), data(prepared, train_size)
    trainer = L.Trainer(
        max_epochs=3,
        reload_dataloaders_every_n_epochs=1 if datamodule.progressive else 0,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    assert [module.sizes[epoch] for epoch in range(3)] == [{size} for size in expected]
    assert datamodule.progressive == (len(set(expected)) > 1)


@pytest.mark.parametrize("train_size", [[], [64, 0], -8])
def test_a_wrong_crop_size_is_refused_clearly(prepared: Path, train_size) -> None:
    with pytest.raises(SystemExit, match=r"data\.train_size"):
        data(prepared, train_size)
