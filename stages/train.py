"""Stage 2: prepared arrays -> best checkpoint, per-epoch curves, an MLflow run."""

from __future__ import annotations

import csv
import json
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import torch
from hydra.utils import instantiate

from stages.allocator import reuse_freed_memory
from stages.datamodule import PreparedData
from stages.fingerprint import environment_fingerprint
from stages.lightning_module import Classifier
from stages.params import Paths, flatten, load_params, to_dict
from stages.tracking import start_new_run, tracking_uri

PARAM_SECTIONS = (
    "seed",
    "data",
    "model",
    "module",
    "optimizer",
    "scheduler",
    "trainer",
    "callbacks",
)


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


def build_callbacks(cfg: dict[str, Any], history: EpochHistory) -> list[L.Callback]:
    """Every callback under `callbacks:` (conf/callbacks/), built from its `_target_`."""
    built = [instantiate(spec) for spec in cfg.get("callbacks", {}).values() if spec]
    return [*built, history]


def build_trainer(
    cfg: dict[str, Any], run_id: str, history: EpochHistory, progressive: bool
) -> L.Trainer:
    """The Lightning trainer, its callbacks and its MLflow logger, all from params.yaml."""
    trainer_cfg = cfg["trainer"]
    logger = instantiate(cfg["logger"]["mlflow"], run_id=run_id, tracking_uri=tracking_uri())
    logger.log_hyperparams(
        {k: v for k, v in flatten(cfg).items() if k.split(".")[0] in PARAM_SECTIONS}
    )
    return L.Trainer(
        accelerator=trainer_cfg["accelerator"],
        devices=trainer_cfg["devices"],
        strategy=trainer_cfg["strategy"],
        precision=trainer_cfg["precision"],
        max_epochs=trainer_cfg["max_epochs"],
        limit_train_batches=trainer_cfg["limit_train_batches"],
        reload_dataloaders_every_n_epochs=1 if progressive else 0,  # a new crop size
        deterministic=trainer_cfg["deterministic"],
        logger=logger,
        callbacks=build_callbacks(cfg, history),
        log_every_n_steps=trainer_cfg["log_every_n_steps"],
    )


def main() -> None:
    reuse_freed_memory()
    params = load_params()
    cfg = to_dict(params)
    paths = Paths.from_params(params)
    trainer_cfg = cfg["trainer"]
    L.seed_everything(cfg["seed"], workers=True)
    if trainer_cfg["accelerator"] == "cpu":
        torch.set_num_threads(int(trainer_cfg["threads"]))
    for noise in (".*does not have many workers.*", ".*exists and is not empty.*", ".*LeafSpec.*"):
        warnings.filterwarnings("ignore", noise)

    teacher = paths.teacher_logits if paths.teacher_logits.exists() else None
    data = PreparedData(paths.prepared, **cfg["data"], teacher_logits=teacher)
    if teacher is not None:
        print(f"train: distilling the teacher's logits in {teacher}")
    model = Classifier(
        model=cfg["model"],
        optimizer=cfg["optimizer"],
        scheduler=cfg["scheduler"],
        classes=data.classes,
        image_size=data.image_size,
        **cfg["module"],
    )
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    for stale in paths.checkpoints.glob("*.ckpt"):
        stale.unlink()
    run_id = start_new_run(paths.run_file, cfg["tracking"]["experiment"])
    history = EpochHistory(paths.train_history)
    trainer = build_trainer(cfg, run_id, history, data.progressive)
    # Deterministic mode also fills every new tensor with NaN to expose reads of
    # uninitialised memory; no kernel here does that, and the filling cost 10 % of a step.
    torch.utils.deterministic.fill_uninitialized_memory = False
    started = time.perf_counter()
    trainer.fit(model, datamodule=data)
    summary = summarize(history.rows, time.perf_counter() - started, cfg["callbacks"])
    environment = environment_fingerprint(trainer_cfg["precision"])
    paths.train_metrics.parent.mkdir(parents=True, exist_ok=True)
    report = {**summary, "environment": environment.model_dump()}
    paths.train_metrics.write_text(json.dumps(report, indent=2) + "\n")
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"final_{k}": v for k, v in summary.items()})
        mlflow.set_tags({f"env.{k}": str(v) for k, v in environment.model_dump().items()})
        mlflow.log_artifact(str(paths.train_history), "plots")
    print(
        f"train: best epoch {summary['best_epoch']} (val_loss {summary['val_loss']:.4f}, "
        f"val_acc {summary['val_acc']:.4f})"
    )


def summarize(
    rows: list[dict[str, float]], seconds: float, callbacks: dict[str, Any]
) -> dict[str, float]:
    """The best epoch's figures: the one the checkpoint callback kept, which later stages use."""
    checkpoint = callbacks["model_checkpoint"]
    monitor, sign = checkpoint["monitor"], 1.0 if checkpoint.get("mode", "min") == "min" else -1.0
    best = min(rows, key=lambda row: sign * row.get(monitor, sign * float("inf")))
    return {
        "best_epoch": int(best["epoch"]),
        "epochs": len(rows),
        "val_acc": best.get("val_acc", float("nan")),
        "val_loss": best.get("val_loss", float("nan")),
        "train_acc": best.get("train_acc", float("nan")),
        "train_loss": best.get("train_loss", float("nan")),
        "train_seconds": round(seconds, 1),
    }


if __name__ == "__main__":
    main()
