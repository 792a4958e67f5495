"""Train builds its callbacks and logger from params, and reports the epoch they kept."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

from stages.train import EpochHistory, build_callbacks, summarize
from tests.helpers.config import composed


def test_callbacks_come_from_config_and_an_override_changes_them(tmp_path: Path) -> None:
    history = EpochHistory(tmp_path / "history.csv")
    built = build_callbacks(composed([]), history)
    kinds = {type(c) for c in built}
    assert {ModelCheckpoint, EarlyStopping, LearningRateMonitor, EpochHistory} == kinds
    checkpoint = next(c for c in built if isinstance(c, ModelCheckpoint))
    stopping = next(c for c in built if isinstance(c, EarlyStopping))
    assert (checkpoint.monitor, checkpoint.mode, stopping.patience) == ("val_loss", "min", 2)
    assert Path(checkpoint.dirpath) == Path("models/checkpoints").resolve()

    cfg = composed(
        ["~callbacks.lr_monitor", "callbacks.early_stopping.patience=5",
         "callbacks.model_checkpoint.monitor=val_acc", "callbacks.model_checkpoint.mode=max"]
    )  # fmt: skip
    built = build_callbacks(cfg, history)
    assert LearningRateMonitor not in {type(c) for c in built}
    assert next(c for c in built if isinstance(c, EarlyStopping)).patience == 5
    assert next(c for c in built if isinstance(c, ModelCheckpoint)).monitor == "val_acc"


def test_summary_reports_the_epoch_the_checkpoint_kept() -> None:
    rows = [
        {"epoch": 0, "val_loss": 0.30, "val_acc": 0.95, "train_loss": 1.0, "train_acc": 0.8},
        {"epoch": 1, "val_loss": 0.20, "val_acc": 0.94, "train_loss": 0.5, "train_acc": 0.9},
    ]
    by_loss = composed([])["callbacks"]
    assert summarize(rows, 1.0, by_loss)["best_epoch"] == 1
    by_acc = composed(
        ["callbacks.model_checkpoint.monitor=val_acc", "callbacks.model_checkpoint.mode=max"]
    )
    assert summarize(rows, 1.0, by_acc["callbacks"])["best_epoch"] == 0
