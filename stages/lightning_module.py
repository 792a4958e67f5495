"""The Lightning module: loss, EMA of the weights, optimizer and schedule from the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from stages.mixing import mix_batch


def build_model(model_cfg: dict[str, Any], num_classes: int) -> nn.Module:
    """Instantiate the configured architecture (conf/model/*.yaml)."""
    cfg = {k: v for k, v in model_cfg.items() if k != "name"}
    return instantiate(cfg, num_classes=num_classes, _convert_="all")


class Classifier(L.LightningModule):
    """Cross-entropy classification of uint8 images; the network itself sees [0, 1] floats.

    With `ema_decay` > 0 an exponential moving average of the weights is kept beside
    them; validation, the checkpoint's `inference_net` and so every later stage use the
    average, which is smoother than the last step's weights. Training may mix photos
    (`mixup_alpha`, `cutmix_alpha`) and, when batches carry a teacher's logits, distil
    them (`distill_weight` of the loss, at `distill_temperature`). Validation loss is
    always plain cross-entropy, so recipes compare on one scale.
    """

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        classes: list[str],
        image_size: int,
        label_smoothing: float = 0.0,
        ema_decay: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        distill_weight: float = 0.5,
        distill_temperature: float = 2.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_model(model, len(classes))
        self.ema = (
            AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            if ema_decay > 0
            else None
        )

    @property
    def inference_net(self) -> nn.Module:
        """The weights to evaluate and export: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        net = self.net if self.training else self.inference_net
        return net(images.contiguous(memory_format=torch.channels_last))

    def _step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        images, labels = batch[0], batch[1]
        teacher = batch[2] if len(batch) > 2 and stage == "train" else None
        images = images.float().div_(255.0) if images.dtype == torch.uint8 else images
        mixed = None
        if stage == "train":
            mixed = mix_batch(images, self.hparams.mixup_alpha, self.hparams.cutmix_alpha)
        logits = self(mixed.images if mixed is not None else images)
        if stage != "train":
            loss = F.cross_entropy(logits, labels)
        elif mixed is None and teacher is None:  # the default: exactly the plain loss
            loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        elif mixed is None:
            loss = self._train_loss(logits, labels, teacher).mean()
        else:
            partner = mixed.partner
            other = None if teacher is None else teacher[partner]
            loss = mixed.blend(
                self._train_loss(logits, labels, teacher),
                self._train_loss(logits, labels[partner], other),
            )
        acc = (logits.argmax(1) == labels).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(f"{stage}_acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _train_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None
    ) -> torch.Tensor:
        """Per photo: smoothed cross-entropy, blended with the teacher's softened answer."""
        hp = self.hparams
        loss = F.cross_entropy(logits, labels, label_smoothing=hp.label_smoothing, reduction="none")
        if teacher is None:
            return loss
        t = hp.distill_temperature
        kd = F.kl_div(
            F.log_softmax(logits / t, 1),
            F.log_softmax(teacher / t, 1),
            reduction="none",
            log_target=True,
        ).sum(1)
        return (1 - hp.distill_weight) * loss + hp.distill_weight * kd * t * t

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = instantiate(self.hparams.optimizer)(params)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate(self.hparams.scheduler)(optimizer, total_steps=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def load_classifier(checkpoint: Path) -> Classifier:
    """The trained classifier in eval mode, or a clear error when training has not run."""
    if not Path(checkpoint).exists():
        raise SystemExit(f"{checkpoint} is missing: run the train stage first (dvc repro).")
    model = Classifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
    return model.eval()
