"""Mixup, CutMix and distillation: what the training loss sees, and the teacher stage's output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.nn import functional as F

from contracts.imaging import load, to_batch
from stages.lightning_module import Classifier
from stages.mixing import mix_batch
from tests.helpers.config import composed
from tests.helpers.photos import LABELS, sample_photos

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
TINY_CNN = {"_target_": "stages.models.small_cnn", "name": "cnn",
            "channels": [8, 16], "convs_per_stage": [1, 1]}  # fmt: skip


def photo_batch(count: int = 4, size: int = 64) -> torch.Tensor:
    photos = [load(p.read_bytes(), size) for label in LABELS for p in sample_photos(label, count)]
    return torch.from_numpy(to_batch(photos)).float().div(255.0)


def classifier(**module: float) -> Classifier:
    cfg = composed([])
    return Classifier(
        model=TINY_CNN, optimizer=cfg["optimizer"], scheduler=cfg["scheduler"],
        classes=list(LABELS), image_size=64, **module,
    )  # fmt: skip


def test_mixup_blends_each_photo_with_its_partner_by_the_weight() -> None:
    torch.manual_seed(0)
    images = photo_batch()
    mixed = mix_batch(images, mixup_alpha=0.4, cutmix_alpha=0.0)
    assert mixed is not None and 0.0 <= mixed.weight <= 1.0
    expected = mixed.weight * images + (1 - mixed.weight) * images[mixed.partner]
    assert torch.allclose(mixed.images, expected, atol=1e-6)
    assert sorted(mixed.partner.tolist()) == list(range(len(images)))
    assert mix_batch(images, 0.0, 0.0) is None  # off by default


def test_cutmix_pastes_one_box_and_weights_by_the_area_left() -> None:
    torch.manual_seed(1)
    images = photo_batch()
    mixed = mix_batch(images, mixup_alpha=0.0, cutmix_alpha=1.0)
    assert mixed is not None
    own = (mixed.images == images).all(dim=1)  # pixels still the photo's own
    from_partner = (mixed.images == images[mixed.partner]).all(dim=1)
    assert bool((own | from_partner).all())  # every pixel comes from one of the two
    changed = ~own[mixed.partner != torch.arange(len(images))]
    share = 1 - changed.float().mean(dim=(1, 2))  # where partners differ, the box is visible
    assert torch.allclose(share, torch.full_like(share, mixed.weight), atol=0.02)


def test_the_loss_of_a_mixed_batch_blends_both_photos_losses() -> None:
    torch.manual_seed(2)
    images, labels = photo_batch(), torch.tensor([0] * 4 + [1] * 4)
    model = classifier(mixup_alpha=0.4, label_smoothing=0.0).train()
    torch.manual_seed(3)
    loss = model._step((images, labels), "train")
    torch.manual_seed(3)
    mixed = mix_batch(images, 0.4, 0.0)
    logits = model(mixed.images)
    own = F.cross_entropy(logits, labels, reduction="none")
    other = F.cross_entropy(logits, labels[mixed.partner], reduction="none")
    expected = (mixed.weight * own + (1 - mixed.weight) * other).mean()
    assert torch.allclose(loss, expected, atol=1e-5)


def test_distillation_pulls_the_loss_toward_the_teachers_answer() -> None:
    torch.manual_seed(4)
    images, labels = photo_batch(), torch.tensor([0] * 4 + [1] * 4)
    model = classifier(label_smoothing=0.0, distill_weight=0.5).eval()
    with torch.no_grad():
        logits = model(images)
        plain = F.cross_entropy(logits, labels, reduction="none")
        agreeing = model._train_loss(logits, labels, logits.clone())
        opposed = model._train_loss(logits, labels, -10 * logits.sign())
    assert torch.allclose(agreeing, 0.5 * plain, atol=1e-6)  # the teacher term vanishes
    assert bool((opposed > agreeing).all())
    assert torch.allclose(model._train_loss(logits, labels, None), plain)


def test_validation_loss_stays_plain_cross_entropy_with_every_option() -> None:
    images, labels = photo_batch(), torch.tensor([0] * 4 + [1] * 4)
    model = classifier(mixup_alpha=0.4, cutmix_alpha=1.0, label_smoothing=0.1).eval()
    teacher = torch.zeros(len(labels), 2)
    with torch.no_grad():
        loss = model._step((images, labels, teacher), "val")
        assert torch.allclose(loss, F.cross_entropy(model(images), labels))


def run_stage(module: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/m.db"}
    done = subprocess.run(
        [sys.executable, "-m", module], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_teacher_stage_writes_logits_that_train_distils(
    pipeline_repo: Path, tmp_path: Path
) -> None:
    """On the pipeline's prepared photos: no teacher writes a note; a (tiny) teacher writes
    one logit row per training photo and its scores, and train then distils them."""
    shutil.copytree(pipeline_repo / "data" / "prepared", tmp_path / "data" / "prepared")
    params = yaml.safe_load((pipeline_repo / "params.yaml").read_text())
    assert json.loads((pipeline_repo / "metrics" / "teacher.json").read_text()) == {"teacher": None}
    recipe = composed(["distill=lite2"])["distill"]["teacher"]
    recipe.update(model=TINY_CNN, max_epochs=1, batch_size=32, train_size=64)
    params["distill"] = {"teacher": recipe}
    params["model"], params["trainer"]["max_epochs"] = TINY_CNN, 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run_stage("stages.teacher", tmp_path)
    logits = np.load(tmp_path / "models" / "teacher" / "train_logits.npy")
    train_labels = np.load(tmp_path / "data" / "prepared" / "train_labels.npy")
    assert logits.shape == (len(train_labels), 2) and np.isfinite(logits).all()
    report = json.loads((tmp_path / "metrics" / "teacher.json").read_text())
    assert report["teacher"] == "small_cnn"
    assert {"train_acc", "val_acc", "test_acc", "train_seconds"} <= set(report)
    trained = run_stage("stages.train", tmp_path)
    assert "distilling the teacher's logits" in trained.stdout
    assert (tmp_path / "models" / "checkpoints" / "best.ckpt").exists()


def test_train_refuses_teacher_logits_of_other_photos(pipeline_repo: Path, tmp_path: Path) -> None:
    from stages.datamodule import PreparedSplit

    np.save(tmp_path / "logits.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(SystemExit, match="teacher stage ran on other prepared photos"):
        PreparedSplit(pipeline_repo / "data" / "prepared", "train", None, tmp_path / "logits.npy")
