"""Mixup and CutMix: each training photo blended with another photo of the same batch.

The loss of a mixed photo is the same blend of the two photos' losses, so labels and a
teacher's soft labels mix alike (`MixedBatch.blend`) without building soft targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MixedBatch:
    """Photos after mixing: `weight` of each photo itself, the rest from `partner[i]`."""

    images: torch.Tensor
    partner: torch.Tensor
    weight: float

    def blend(self, loss_per_photo: torch.Tensor, loss_of_partner: torch.Tensor) -> torch.Tensor:
        """The mixed photos' mean loss from each photo's loss against its own and its
        partner's targets."""
        return (self.weight * loss_per_photo + (1 - self.weight) * loss_of_partner).mean()


def mix_batch(images: torch.Tensor, mixup_alpha: float, cutmix_alpha: float) -> MixedBatch | None:
    """Mixup or CutMix (one of the enabled, at random) on float NCHW photos; None when off.

    The blend weight comes from Beta(alpha, alpha), drawn from torch's seeded generator so
    a run repeats. CutMix pastes a box of the partner photo, and its weight is the share
    of the photo left uncovered.
    """
    enabled = [(name, a) for name, a in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if a > 0]
    if not enabled or images.shape[0] < 2:
        return None
    name, alpha = enabled[int(torch.randint(len(enabled), ()))]
    weight = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = torch.randperm(images.shape[0])
    if name == "mixup":
        mixed = images.mul(weight).add_(images[partner], alpha=1 - weight)
        return MixedBatch(mixed, partner, weight)
    return _cutmix(images, partner, weight)


def _cutmix(images: torch.Tensor, partner: torch.Tensor, weight: float) -> MixedBatch:
    """Paste one box of the partner photo, sized so it covers about 1 - weight of the photo."""
    height, width = images.shape[-2:]
    box_h, box_w = int(height * (1 - weight) ** 0.5), int(width * (1 - weight) ** 0.5)
    top = int(torch.randint(height - box_h + 1, ()))
    left = int(torch.randint(width - box_w + 1, ()))
    mixed = images.clone()
    mixed[..., top : top + box_h, left : left + box_w] = images[partner][
        ..., top : top + box_h, left : left + box_w
    ]
    uncovered = 1 - (box_h * box_w) / (height * width)
    return MixedBatch(mixed, partner, uncovered)
