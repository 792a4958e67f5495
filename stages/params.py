"""Reading the pipeline's parameters and locating the repository."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

PARAMS_FILE = Path("params.yaml")


def load_params(path: Path = PARAMS_FILE) -> DictConfig:
    """params.yaml as DVC sees it (composed from conf/ by `dvc exp run`)."""
    if not path.exists():
        raise SystemExit(f"{path} not found: run the stages from the repository root.")
    return OmegaConf.load(path)


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


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
