"""Every model choice builds, pretrained weights load, folded batch norms predict the same."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from contracts.imaging import load, to_batch
from stages.lightning_module import build_model
from stages.models import (
    efficientnet_lite0,
    fold_batch_norms,
    pretrained_lite_state_dict,
    rename_lite0_key,
)
from tests.helpers.config import composed
from tests.helpers.photos import LABELS, sample_photos

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))


@pytest.mark.parametrize("model_name", MODELS)
def test_every_model_choice_builds_and_runs_forward(model_name: str) -> None:
    assert {"cnn", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= set(MODELS)
    cfg = composed([f"model={model_name}"])
    net = build_model(cfg["model"], num_classes=2).eval()
    with torch.inference_mode():
        out = net(torch.rand(3, 3, 96, 96))
    assert out.shape == (3, 2) and torch.isfinite(out).all()
    optimizer = instantiate(cfg["optimizer"])(net.parameters())
    scheduler = instantiate(cfg["scheduler"])(optimizer, total_steps=10)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] > 0


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_pretrained_weights_of_every_lite_variant_load_strictly(name: str) -> None:
    import timm

    net = timm.create_model(name, pretrained=False)
    state = pretrained_lite_state_dict(name, net)
    assert set(state) == set(net.state_dict())
    net.load_state_dict(state, strict=True)
    with pytest.raises(ValueError, match="no offline ImageNet weights"):
        pretrained_lite_state_dict("efficientnet_lite4", net)


def test_frozen_blocks_freeze_the_first_stages_only() -> None:
    model = efficientnet_lite0(num_classes=2, pretrained=True, frozen_blocks=4)
    frozen = [p.requires_grad for p in model.net.blocks[3].parameters()]
    assert not any(frozen) and all(p.requires_grad for p in model.net.blocks[4].parameters())


@pytest.mark.parametrize("model_name", MODELS)
def test_folded_batch_norms_predict_what_the_network_predicted(model_name: str) -> None:
    """Folding (evaluate, review_labels) changes the speed, not the probabilities."""
    cfg = composed([f"model={model_name}"])
    net = build_model(cfg["model"], num_classes=2).eval()
    photos = [load(p.read_bytes(), 96) for label in LABELS for p in sample_photos(label, 4)]
    batch = torch.from_numpy(to_batch(photos))
    with torch.inference_mode():
        before = net(batch).softmax(1)
        folded = fold_batch_norms(net)
        after = folded(batch).softmax(1)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(before, after, atol=1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(build_model(cfg["model"], num_classes=2).train())


def test_key_renaming_follows_timm_stages() -> None:
    depths = [1, 2, 2, 3, 3, 4, 1]
    assert rename_lite0_key("_conv_stem.weight", depths) == "conv_stem.weight"
    assert rename_lite0_key("_blocks.0._project_conv.weight", depths) == "blocks.0.0.conv_pw.weight"
    assert rename_lite0_key("_blocks.3._expand_conv.weight", depths) == "blocks.2.0.conv_pw.weight"
    assert rename_lite0_key("_blocks.15._bn2.bias", depths) == "blocks.6.0.bn3.bias"
    assert rename_lite0_key("_fc.weight", depths) == "classifier.weight"
    with pytest.raises(KeyError):
        rename_lite0_key("_mystery.weight", depths)
