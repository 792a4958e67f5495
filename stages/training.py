"""Training building blocks: data module, Lightning module, schedules, history callback."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

# ---------------------------------------------------------------- data


class PreparedSplit(Dataset):
    """One split written by prepare: uint8 [N, S, S, 3] memory-mapped, plus labels."""

    def __init__(self, prepared_dir: Path, split: str, transform: nn.Module | None = None):
        self.images = np.load(prepared_dir / f"{split}_images.npy", mmap_mode="r")
        self.labels = np.load(prepared_dir / f"{split}_labels.npy")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(np.array(self.images[index])).permute(2, 0, 1)  # uint8 CHW
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


def augmentation(
    size: int, crop_scale: list[float], hflip: float, color_jitter: float
) -> nn.Module:
    """Training-only augmentation, applied on top of the image contract's pixels."""
    steps: list[nn.Module] = []
    if tuple(crop_scale) != (1.0, 1.0):
        steps.append(v2.RandomResizedCrop(size, scale=tuple(crop_scale), antialias=True))
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if color_jitter > 0:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    return v2.Compose(steps)


class PreparedData(L.LightningDataModule):
    def __init__(self, prepared_dir: str | Path, batch_size: int, num_workers: int, augment: dict):
        super().__init__()
        self.prepared_dir = Path(prepared_dir)
        meta = json.loads((self.prepared_dir / "meta.json").read_text())
        self.classes: list[str] = meta["classes"]
        self.image_size: int = meta["image_size"]
        self.batch_size, self.num_workers, self.augment = batch_size, num_workers, augment

    def _loader(self, split: str, train: bool) -> DataLoader:
        transform = augmentation(self.image_size, **self.augment) if train else None
        return DataLoader(
            PreparedSplit(self.prepared_dir, split, transform),
            batch_size=self.batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)


# ---------------------------------------------------------------- model


def build_model(model_cfg: dict[str, Any], num_classes: int) -> nn.Module:
    """Instantiate the configured architecture (conf/model/*.yaml)."""
    cfg = {k: v for k, v in model_cfg.items() if k != "name"}
    return instantiate(cfg, num_classes=num_classes, _convert_="all")


class Classifier(L.LightningModule):
    """Cross-entropy classification of uint8 images; the network itself sees [0, 1] floats."""

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        classes: list[str],
        image_size: int,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_model(model, len(classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        return self.net(images.contiguous(memory_format=torch.channels_last))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(f"{stage}_acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = instantiate(self.hparams.optimizer)(params)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate(self.hparams.scheduler)(optimizer, total_steps=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def load_classifier(checkpoint: Path) -> Classifier:
    model = Classifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
    return model.eval()


# ---------------------------------------------------------------- schedules


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from ~0, then cosine decay to 0, over the whole run."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def constant(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


# ---------------------------------------------------------------- history


class EpochHistory(L.Callback):
    """Writes one row per epoch (train/val loss and accuracy, lr) for `dvc plots`."""

    COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row: dict[str, float] = {"epoch": trainer.current_epoch}
        for name in ("train_loss", "train_acc", "val_loss", "val_acc"):
            key = f"{name}_epoch" if f"{name}_epoch" in metrics else name
            if key in metrics:
                row[name] = round(float(metrics[key]), 6)
        row["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        self.rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
