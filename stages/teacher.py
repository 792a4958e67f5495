"""Stage: a distillation teacher's answers for every training photo, computed once.

With `distill.teacher: null` (the default, conf/distill/none.yaml) it writes only a note
that no teacher is set, and train learns from the labels alone. With a teacher recipe
(`dvc exp run -S distill=lite2`) it trains that network on the training split, scores it
on validation and test, and writes its logits for each training photo (unaugmented, at
the prepared size). The stage depends only on the teacher's own recipe, so every student
experiment after the first reuses its output from DVC's cache.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
from tqdm import tqdm

from stages.allocator import reuse_freed_memory
from stages.datamodule import PreparedData
from stages.lightning_module import Classifier
from stages.models import fold_batch_norms
from stages.params import Paths, load_params, to_dict


@torch.inference_mode()
def logits_of(net: torch.nn.Module, images: np.ndarray, batch_size: int, desc: str) -> np.ndarray:
    """Raw logits for uint8 [N, H, W, 3] photos, as float32 [N, classes]."""
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch"):
        batch = torch.from_numpy(np.array(images[start : start + batch_size])).permute(0, 3, 1, 2)
        chunks.append(net(batch.float().div_(255.0)).float().numpy())
    return np.concatenate(chunks).astype(np.float32)


def train_teacher(recipe: dict[str, Any], paths: Paths, seed: int) -> tuple[Classifier, float]:
    """Fit the teacher on the training split; (its network in eval mode, seconds)."""
    L.seed_everything(seed, workers=True)
    data = PreparedData(
        paths.prepared,
        batch_size=recipe["batch_size"],
        num_workers=0,
        augment=recipe["augment"],
        train_size=recipe["train_size"],
    )
    model = Classifier(
        model=recipe["model"],
        optimizer=recipe["optimizer"],
        scheduler=recipe["scheduler"],
        classes=data.classes,
        image_size=data.image_size,
        **recipe["module"],
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=recipe["max_epochs"],
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
    )
    torch.utils.deterministic.fill_uninitialized_memory = False
    started = time.perf_counter()
    trainer.fit(model, datamodule=data)
    return model.eval(), time.perf_counter() - started


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return round(float((logits.argmax(1) == labels).mean()), 6)


def main() -> None:
    reuse_freed_memory()
    params = load_params()
    cfg = to_dict(params)
    paths = Paths.from_params(params)
    recipe = cfg["distill"]["teacher"]
    shutil.rmtree(paths.teacher, ignore_errors=True)
    paths.teacher.mkdir(parents=True)
    paths.teacher_recipe.write_text(json.dumps(recipe, indent=2) + "\n")
    paths.teacher_report.parent.mkdir(parents=True, exist_ok=True)
    if recipe is None:
        report: dict[str, Any] = {"teacher": None}
        paths.teacher_report.write_text(json.dumps(report, indent=2) + "\n")
        print("teacher: none set (distill.teacher is null); train learns from labels alone")
        return
    torch.set_num_threads(int(recipe["threads"]))
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    model, seconds = train_teacher(recipe, paths, cfg["seed"])
    net = fold_batch_norms(model.inference_net.eval())
    started = time.perf_counter()
    logits = {
        split: logits_of(net, np.load(paths.split_images(split), mmap_mode="r"), 32, split)
        for split in ("train", "val", "test")
    }
    np.save(paths.teacher_logits, logits["train"])
    report = {
        "teacher": recipe["model"]["_target_"].rsplit(".", 1)[-1],
        **{
            f"{split}_acc": accuracy(logits[split], np.load(paths.split_labels(split)))
            for split in logits
        },
        "train_seconds": round(seconds, 1),
        "predict_seconds": round(time.perf_counter() - started, 1),
    }
    paths.teacher_report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"teacher: {report}")


if __name__ == "__main__":
    main()
