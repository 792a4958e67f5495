"""Reading the pipeline's parameters, the paths they name, and locating the repository."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

PARAMS_FILE = Path("params.yaml")
SPLITS = ("train", "val", "test")  # prepare writes them; every later stage reads them


def load_params(path: Path = PARAMS_FILE) -> DictConfig:
    """params.yaml as DVC sees it (composed from conf/ by `dvc exp run`)."""
    if not path.exists():
        raise SystemExit(f"{path} not found: run the stages from the repository root.")
    return OmegaConf.load(path)


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


@dataclass(frozen=True)
class Paths:
    """Every file and folder the stages share, from params.yaml's `paths` (conf/paths/).

    dvc.yaml names the same locations through `${paths.*}`, so a changed path moves
    the stages and their declared dependencies together.
    """

    raw: Path
    prepared: Path
    checkpoints: Path
    export: Path
    metrics: Path
    plots: Path
    label_fixes: Path | None = None  # reviewed corrections (stages.label_fixes); None: none
    drop_hashes: Path | None = None  # content hashes of known placeholders; None: none
    teacher: Path = Path("models/teacher")  # the distillation teacher's output (stages.teacher)

    @classmethod
    def from_params(cls, params: DictConfig) -> Paths:
        if "paths" not in params:
            raise SystemExit("params.yaml has no `paths` section: regenerate it from conf/.")
        return cls(**{name: Path(value) for name, value in params.paths.items()})

    def split_images(self, split: str) -> Path:
        """uint8 [N, S, S, 3] photos of one split, as the image contract decoded them."""
        return self.prepared / f"{split}_images.npy"

    def split_labels(self, split: str) -> Path:
        """Labels after the reviewed corrections: what train and evaluate score against."""
        return self.prepared / f"{split}_labels.npy"

    def split_original_labels(self, split: str) -> Path:
        """The labels as filed (folder names), before any reviewed correction."""
        return self.prepared / f"{split}_labels_original.npy"

    def dropped_images(self, split: str) -> Path:
        """Photos of a split that the reviewed corrections dropped (written for test)."""
        return self.prepared / f"{split}_dropped_images.npy"

    def dropped_labels(self, split: str) -> Path:
        """Their labels as filed."""
        return self.prepared / f"{split}_dropped_labels.npy"

    @property
    def manifest(self) -> Path:
        """One row per kept photo: file, label, md5, split, index in its split."""
        return self.prepared / "manifest.csv"

    @property
    def meta(self) -> Path:
        """Classes, image size and data version of the prepared arrays."""
        return self.prepared / "meta.json"

    @property
    def checkpoint(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def run_file(self) -> Path:
        """The MLflow run id that train creates and evaluate and export reopen."""
        return self.checkpoints / "mlflow_run.json"

    @property
    def train_metrics(self) -> Path:
        return self.metrics / "train.json"

    @property
    def train_history(self) -> Path:
        return self.plots / "train" / "history.csv"

    @property
    def teacher_logits(self) -> Path:
        """The teacher's logits, one row per training photo; absent when no teacher is set."""
        return self.teacher / "train_logits.npy"

    @property
    def teacher_recipe(self) -> Path:
        return self.teacher / "recipe.json"

    @property
    def teacher_report(self) -> Path:
        return self.metrics / "teacher.json"


def repo_root() -> Path:
    """The real repository, also when DVC runs a queued experiment in a temporary copy."""
    return Path(os.environ.get("DVC_ROOT", Path.cwd())).resolve()


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: the shape MLflow params and DVC use."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
