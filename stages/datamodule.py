"""The prepared photos as a Lightning data module: memory-mapped arrays, training augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2


class PreparedSplit(Dataset):
    """One split written by prepare: uint8 [N, S, S, 3] memory-mapped, plus labels.

    With `teacher_logits` (one row per photo, from the teacher stage) each item also
    carries the teacher's answer for distillation.
    """

    def __init__(
        self,
        prepared_dir: Path,
        split: str,
        transform: nn.Module | None = None,
        teacher_logits: Path | None = None,
    ):
        self.images = np.load(prepared_dir / f"{split}_images.npy", mmap_mode="r")
        self.labels = np.load(prepared_dir / f"{split}_labels.npy")
        self.transform = transform
        self.teacher = None if teacher_logits is None else np.load(teacher_logits)
        if self.teacher is not None and len(self.teacher) != len(self.labels):
            raise SystemExit(
                f"{teacher_logits} has {len(self.teacher)} rows for {len(self.labels)} {split} "
                "photos: the teacher stage ran on other prepared photos; run dvc repro."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        image = torch.from_numpy(np.array(self.images[index])).permute(2, 0, 1)  # uint8 CHW
        if self.transform is not None:
            image = self.transform(image)
        if self.teacher is None:
            return image, int(self.labels[index])
        return image, int(self.labels[index]), torch.from_numpy(self.teacher[index].copy())


def augmentation(
    size: int, crop_scale: list[float], hflip: float, color_jitter: float
) -> nn.Module:
    """Training-only augmentation, applied on top of the image contract's pixels.

    `size` may be below the prepared size: training on smaller random crops and
    predicting on the full-size photo is cheaper and, because random crops enlarge
    objects, matches their apparent size at test time better (FixRes).
    """
    steps: list[nn.Module] = []
    if tuple(crop_scale) != (1.0, 1.0):
        steps.append(v2.RandomResizedCrop(size, scale=tuple(crop_scale), antialias=True))
    else:
        steps.append(v2.Resize(size, antialias=True))
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if color_jitter > 0:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    return v2.Compose(steps)


class PreparedData(L.LightningDataModule):
    """Train (augmented, shuffled) and validation loaders over the prepared arrays.

    `train_size` is the training crop: one size, or one per epoch (progressive
    resizing, the last repeating): small cheap crops first, the served size last, so
    that the final weights and batch-norm statistics see photos at the served scale.
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        batch_size: int,
        num_workers: int,
        augment: dict,
        train_size: int | list[int] | None = None,
        teacher_logits: Path | None = None,
    ):
        super().__init__()
        self.prepared_dir = Path(prepared_dir)
        meta_file = self.prepared_dir / "meta.json"
        if not meta_file.exists():
            raise SystemExit(f"{meta_file} is missing: run the prepare stage first.")
        meta = json.loads(meta_file.read_text())
        self.classes: list[str] = meta["classes"]
        self.image_size: int = meta["image_size"]
        sizes = train_size if isinstance(train_size, list | tuple) else [train_size]
        if not sizes or any(size is not None and int(size) < 1 for size in sizes):
            raise SystemExit(f"data.train_size must be a size or a list of sizes, not {train_size}")
        self.train_sizes = [int(size or self.image_size) for size in sizes]
        self.batch_size, self.num_workers, self.augment = batch_size, num_workers, augment
        self.teacher_logits = teacher_logits

    @property
    def progressive(self) -> bool:
        """Whether the crop size changes between epochs (the trainer then reloads loaders)."""
        return len(set(self.train_sizes)) > 1

    def train_size(self, epoch: int) -> int:
        return self.train_sizes[min(epoch, len(self.train_sizes) - 1)]

    def _loader(
        self, split: str, transform: nn.Module | None, shuffle: bool, teacher: Path | None = None
    ) -> DataLoader:
        return DataLoader(
            PreparedSplit(self.prepared_dir, split, transform, teacher),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        size = self.train_size(epoch)
        transform = augmentation(size, **self.augment)
        return self._loader("train", transform, shuffle=True, teacher=self.teacher_logits)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", None, shuffle=False)
