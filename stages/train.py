"""Stage 2: prepared arrays -> best checkpoint, per-epoch curves, an MLflow run."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import lightning as L
import mlflow
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger

from stages.params import flatten, load_params, to_dict
from stages.tracking import EXPERIMENT, start_new_run, tracking_uri
from stages.training import Classifier, EpochHistory, PreparedData

CHECKPOINT_DIR = Path("models/checkpoints")
HISTORY = Path("plots/train/history.csv")
METRICS = Path("metrics/train.json")
PARAM_SECTIONS = ("seed", "data", "model", "optimizer", "scheduler", "trainer")


def main() -> None:
    params = load_params()
    cfg = to_dict(params)
    trainer_cfg = cfg["trainer"]
    L.seed_everything(cfg["seed"], workers=True)
    if trainer_cfg["accelerator"] == "cpu":
        torch.set_num_threads(int(trainer_cfg["threads"]))
    for noise in (".*does not have many workers.*", ".*exists and is not empty.*", ".*LeafSpec.*"):
        warnings.filterwarnings("ignore", noise)

    prepared_dir = Path("data/prepared")
    data = PreparedData(prepared_dir, **cfg["data"])
    model = Classifier(
        model=cfg["model"],
        optimizer=cfg["optimizer"],
        scheduler=cfg["scheduler"],
        classes=data.classes,
        image_size=data.image_size,
    )

    CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)
    for stale in CHECKPOINT_DIR.glob("*.ckpt"):
        stale.unlink()
    run_id = start_new_run()
    logger = MLFlowLogger(experiment_name=EXPERIMENT, tracking_uri=tracking_uri(), run_id=run_id)
    logger.log_hyperparams(
        {k: v for k, v in flatten(cfg).items() if k.split(".")[0] in PARAM_SECTIONS}
    )
    history = EpochHistory(HISTORY)
    checkpoint = ModelCheckpoint(
        dirpath=CHECKPOINT_DIR, filename="best", monitor="val_acc", mode="max", save_top_k=1
    )
    trainer = L.Trainer(
        accelerator=trainer_cfg["accelerator"],
        devices=trainer_cfg["devices"],
        strategy=trainer_cfg["strategy"],
        precision=trainer_cfg["precision"],
        max_epochs=trainer_cfg["max_epochs"],
        limit_train_batches=trainer_cfg["limit_train_batches"],
        deterministic=trainer_cfg["deterministic"],
        logger=logger,
        callbacks=[
            checkpoint,
            EarlyStopping(monitor="val_acc", mode="max", patience=trainer_cfg["patience"]),
            LearningRateMonitor(logging_interval="epoch"),
            history,
        ],
        log_every_n_steps=10,
    )
    started = time.perf_counter()
    trainer.fit(model, datamodule=data)
    summary = summarize(history.rows, time.perf_counter() - started)
    METRICS.parent.mkdir(exist_ok=True)
    METRICS.write_text(json.dumps(summary, indent=2) + "\n")
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"final_{k}": v for k, v in summary.items()})
        mlflow.log_artifact(str(HISTORY), "plots")
    print(f"train: best val_acc {summary['val_acc']:.4f} at epoch {summary['best_epoch']}")


def summarize(rows: list[dict[str, float]], seconds: float) -> dict[str, float]:
    """The best epoch's figures (the checkpoint that later stages use)."""
    best = max(rows, key=lambda row: row.get("val_acc", 0.0))
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
